"""Authentication and the service's other defences: named API keys stored as SHA-256 digests (:class:`KeyRing`), the
auth mode (:class:`Auth`), the WebSocket's key subprotocol and ``Origin`` check, security headers on every answer
(:class:`SecurityHeadersMiddleware`), the separate metrics port (:class:`MetricsPortGate`), query strings scrubbed
from uvicorn's logs (:class:`QueryStringFilter`) and absolute paths kept out of answers (:func:`redact_paths`).

Keys travel in headers only: ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` on HTTP, and on the WebSocket
also the subprotocol ``key.<base64url(KEY)>`` offered beside ``ser.v1`` (a browser cannot set headers there). A key
in the URL (``?api_key=``) is refused: URLs end up in logs, proxies and browser history.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

log = logging.getLogger("ser.serve")

KEY_HEADER = "X-API-Key"
WS_PROTOCOL = "ser.v1"
"""The stream's subprotocol: a browser offers ``["ser.v1", "key.<base64url(KEY)>"]``; the server answers
``ser.v1`` (never the key)."""
WS_KEY_PREFIX = "key."
URL_KEY_PARAMS = ("api_key", "apikey", "key", "token", "access_token")
"""Query parameters that look like a credential: refused (401) on a keyed server, never looked at for a key."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


# ---------------------------------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class NamedKey:
    """A key's name (what logs and metrics may show) and the SHA-256 digest of the key (the key itself is not kept)."""

    name: str
    digest: bytes


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_keys(entries: Iterable[str], what: str = "API") -> list[NamedKey]:
    """``NAME:KEY`` or ``KEY`` entries → named digests. A plain ``KEY`` is named ``key<N>`` after its position
    (1-based); ``NAME`` is 1-64 of ``A-Z a-z 0-9 _ . -`` (so a key that itself holds ``:`` must be given with a
    name). Duplicate names or keys are an error (naming neither key)."""
    out: list[NamedKey] = []
    seen: set[bytes] = set()
    for i, entry in enumerate(entries, 1):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, key = entry.partition(":")
        if not (sep and key and _NAME.fullmatch(name)):
            name, key = f"key{i}", entry
        digest = _digest(key)
        if any(k.name == name for k in out):
            raise ValueError(f"{what} key name {name!r} is given twice")
        if digest in seen:
            raise ValueError(f"{what} key {name!r} repeats an earlier key")
        seen.add(digest)
        out.append(NamedKey(name, digest))
    return out


class KeyRing:
    """Accepted keys, kept as SHA-256 digests with their names. :meth:`match` hashes the presented key and compares
    it with every digest (``hmac.compare_digest``, no early exit), so the time taken says nothing about the keys."""

    def __init__(self, entries: Iterable[str] = (), what: str = "API"):
        self.keys = parse_keys(entries, what)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.keys]

    def match(self, key: str | None) -> str | None:
        """The name of the key ``key`` is, or None."""
        if not key:
            return None
        digest = _digest(key)
        found = None
        for k in self.keys:
            if hmac.compare_digest(digest, k.digest) and found is None:
                found = k.name
        return found

    def __repr__(self) -> str:
        return f"KeyRing({self.names})"


AuthMode = Literal["key", "none", "open"]


@dataclass(frozen=True)
class Auth:
    """How the service authenticates: ``key`` (API keys required), ``none`` (explicitly off: a platform in front
    authenticates) or ``open`` (nothing configured: local use; a warning at start-up). Admin routes take the admin
    keys, else the API keys; with neither they are off (404)."""

    mode: AuthMode
    api: KeyRing
    admin: KeyRing

    @classmethod
    def from_settings(cls, settings: Any) -> Auth:
        api = KeyRing(settings.api_keys, "API")
        admin = KeyRing(settings.admin_keys, "admin")
        mode: AuthMode = "none" if settings.auth == "none" else "key" if api else "open"
        return cls(mode, api, admin)

    @property
    def admin_ring(self) -> KeyRing | None:
        """The keys the admin routes take; None: admin routes are off."""
        if self.admin:
            return self.admin
        if self.mode == "key":
            return self.api
        return None

    def describe(self) -> str:
        """One line for the start-up log: the mode and the key names (never a key)."""
        if self.mode == "key":
            text = f"auth: {len(self.api)} API key(s) ({', '.join(self.api.names)})"
        elif self.mode == "none":
            text = "auth: none (explicitly off: the platform in front must authenticate every request)"
        else:
            text = "auth: OPEN (no API key configured): anyone who can reach this port can use it; local use only"
        if self.admin:
            text += f"; admin: {len(self.admin)} admin key(s) ({', '.join(self.admin.names)})"
        elif self.admin_ring is None:
            text += "; admin routes off (no key)"
        else:
            text += "; admin: the API keys"
        return text


def presented_key(headers: Any) -> str | None:
    """The key a request carries in its headers: ``X-API-Key``, else ``Authorization: Bearer``."""
    key = headers.get("x-api-key")
    if key:
        return str(key)
    scheme, _, credentials = (headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def key_in_url(query_params: Any) -> bool:
    """Does the query string carry something that looks like a credential?"""
    return any(p in query_params for p in URL_KEY_PARAMS)


# ---------------------------------------------------------------------------------------------------- WebSocket


def ws_key_protocol(key: str) -> str:
    """The subprotocol that carries ``key`` (base64url without padding: any key becomes a valid token)."""
    return WS_KEY_PREFIX + base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")


def ws_offered(scope: Any) -> list[str]:
    """The subprotocols a WebSocket handshake offers."""
    return [p.strip() for p in scope.get("subprotocols") or [] if p.strip()]


def ws_subprotocol_key(offered: list[str]) -> str | None:
    """The key carried by an offered ``key.<base64url>`` subprotocol (None without one or when it does not decode)."""
    for p in offered:
        if p.startswith(WS_KEY_PREFIX):
            raw = p[len(WS_KEY_PREFIX) :]
            try:
                return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8") or None
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
    return None


def origin_allowed(origin: str | None, hosts: str | list[str | None] | None, allowed: list[str]) -> bool:
    """May a WebSocket from a page of ``origin`` connect? Yes without an ``Origin`` (not a browser), from the same
    host (``hosts``: the ``Host`` the client connected to, and a proxy's ``X-Forwarded-Host``, which no page can set
    on a browser's WebSocket; the scheme is not compared, for TLS ended at a proxy), and from an origin in
    ``allowed`` (the CORS origins; ``*`` allows any)."""
    if not origin:
        return True
    if "*" in allowed or origin.rstrip("/") in (a.rstrip("/") for a in allowed):
        return True
    if origin == "null":
        return False
    netloc = urlsplit(origin).netloc.lower()
    candidates = [hosts] if isinstance(hosts, str) or hosts is None else hosts
    names = {h.split(",")[0].strip().lower() for h in candidates if h}
    return bool(netloc) and netloc in names


# ---------------------------------------------------------------------------------------------------- answers

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
"""The Content-Security-Policy of every answer that does not set its own (JSON, text: nothing to run)."""
DEMO_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The demo page's: its own script (and audio worklet) and style sheet only; fetch and WebSocket to this origin."""
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The docs page's: Swagger UI from this server (it sets inline styles), requests to this origin only."""

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeadersMiddleware:
    """Pure ASGI middleware: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy:
    no-referrer``, ``Cross-Origin-Opener-Policy`` and a Content-Security-Policy (:data:`API_CSP` unless the route set
    its own) on every HTTP answer, errors and 404s included."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", API_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class MetricsPortGate:
    """Pure ASGI middleware for ``metrics_port``: a connection to that port reaches ``GET /metrics`` only (marked
    ``scope["ser.metrics_port"]``, which the route takes instead of a key), and ``/metrics`` is 404 on the others."""

    def __init__(self, app: Any, metrics_port: int):
        self.app, self.port = app, metrics_port

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        server = scope.get("server") or (None, None)
        on_metrics_port = server[1] == self.port
        path = scope.get("path", "")
        if on_metrics_port and scope["type"] == "http" and path == "/metrics":
            scope = {**scope, "ser.metrics_port": True}
        elif on_metrics_port or path == "/metrics":
            await _not_found(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _not_found(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": "not_found"})
        return
    from ser.serve.errors import error_response

    await error_response(404, "not_found", "Not Found")(scope, receive, send)


# ---------------------------------------------------------------------------------------------------- logs


class QueryStringFilter(logging.Filter):
    """Drops the query string from every path in uvicorn's access and WebSocket log lines (a key sent in the URL by
    an old client, or any other parameter, never reaches the logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_strip_query(a) for a in record.args)
        return True


def _strip_query(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("/") and "?" in value:
        return value.split("?", 1)[0]
    return value


SCRUBBED_LOGGERS = ("uvicorn.access", "uvicorn.error")


def install_log_filters() -> None:
    """Add :class:`QueryStringFilter` to uvicorn's loggers (once; idempotent)."""
    for name in SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, QueryStringFilter) for f in logger.filters):
            logger.addFilter(QueryStringFilter())


# ---------------------------------------------------------------------------------------------------- paths

_ABS_PATH = re.compile(r"(?<![\w.:/~>-])/[^\s/'\"(),;:\[\]{}<>]+(?:/[^\s/'\"(),;:\[\]{}<>]*)*")


def redact_paths(text: str, roots: dict[str, Path | None] | None = None) -> str:
    """``text`` without absolute file-system paths: each of ``roots`` (``{"<model>": path, ...}``, as given and
    resolved) becomes its placeholder, any other absolute path ``…/<last part>``."""
    for placeholder, root in (roots or {}).items():
        if root is None:
            continue
        forms = {str(p) for p in (Path(root), Path(root).resolve()) if p.is_absolute() and str(p) != "/"}
        for form in sorted(forms, key=len, reverse=True):
            text = text.replace(form, placeholder)
    return _ABS_PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)
