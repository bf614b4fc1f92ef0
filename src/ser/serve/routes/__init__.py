"""The API's routes by concern, added by :func:`ser.serve.app.create_app`: :mod:`~ser.serve.routes.ops` (health,
readiness, served model, metrics), :mod:`~ser.serve.routes.predict`, :mod:`~ser.serve.routes.timeline`,
:mod:`~ser.serve.routes.admin` (reload) and :mod:`~ser.serve.routes.demo` (the browser demo page), each a
:class:`fastapi.APIRouter`; :mod:`~ser.serve.routes.stream` (``WS /v1/stream``), a bare endpoint."""
