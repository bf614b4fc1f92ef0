"""What hosting platforms tell the service through its environment: the port to listen on (Cloud Run's ``PORT``,
Vertex AI's ``AIP_HTTP_PORT``) and Vertex AI's custom-container routes (``AIP_PREDICT_ROUTE``,
``AIP_HEALTH_ROUTE``; :mod:`ser.serve.routes.vertex`).

Kept free of the service's heavy imports: the image's health check and the CLI read it before any model is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping

PORT_VARIABLES = ("SER_PORT", "AIP_HTTP_PORT", "PORT")
"""Where the listening port comes from, first set wins: the project's own setting, then Vertex AI's
(``AIP_HTTP_PORT``, 8080 there), then Cloud Run's (``PORT``). ``ser serve --port`` overrides them all."""
DEFAULT_PORT = 8000

VERTEX_PREDICT_ROUTE = "AIP_PREDICT_ROUTE"
"""Vertex AI: the path its prediction requests are sent to (``{"instances": [...]}``)."""
VERTEX_HEALTH_ROUTE = "AIP_HEALTH_ROUTE"
"""Vertex AI: the path it probes; 200 when the container can answer predictions."""


def listen_port(env: Mapping[str, str]) -> int:
    """The port named by the first of :data:`PORT_VARIABLES` set (non-empty) in ``env``, else 8000. A value that
    is not a port number raises :class:`ValueError` naming the variable."""
    for name in PORT_VARIABLES:
        value = env.get(name, "").strip()
        if not value:
            continue
        if not value.isdigit() or not 1 <= int(value) <= 65535:
            raise ValueError(f"{name}={value!r} is not a port number (1-65535)")
        return int(value)
    return DEFAULT_PORT


def check_route(route: str, name: str) -> str:
    """``route`` if it is an absolute URL path (``/...``, no query, no spaces), else :class:`ValueError`."""
    if not route.startswith("/") or any(c in route for c in "?# \t\n{}"):
        raise ValueError(f"{name}={route!r} is not an absolute URL path (/...)")
    return route
