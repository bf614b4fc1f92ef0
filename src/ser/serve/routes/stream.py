"""``WS /v1/stream``: real-time emotion of a live audio stream. The protocol and the session logic are
:mod:`ser.serve.stream`; this route only admits the connection (API key, stream capacity), moves messages between
the socket and a :class:`~ser.serve.stream.StreamSession`, and counts them in the metrics.

Admission: a browser page's ``Origin`` must be this server's own host (``Host``, or a proxy's
``X-Forwarded-Host``) or one of the CORS origins (else the handshake is refused, 403); the key comes in the
``X-API-Key`` (or ``Authorization: Bearer``) header or, from a browser, as the subprotocol ``key.<base64url(KEY)>``
offered beside ``ser.v1`` (the server answers ``ser.v1``, never the key); a key in the URL (``?api_key=``) is
refused.

Unlike the other route modules this one has no router: :func:`ser.serve.app.create_app` adds :func:`stream` to the
app itself (see there why)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import MutableMapping
from typing import Any

import anyio
from fastapi import WebSocket, WebSocketDisconnect

from ser.serve.deps import auth_of, check_key, holder_of, limiter_of, metrics_of, settings_of
from ser.serve.errors import ApiError
from ser.serve.monitoring import logmel_of, monitor_of
from ser.serve.security import WS_PROTOCOL, origin_allowed, presented_key, ws_offered, ws_subprotocol_key
from ser.serve.stream import CLOSE_INTERNAL, CLOSE_POLICY, CLOSE_TRY_AGAIN, StreamLimits, StreamSession

log = logging.getLogger("ser.serve")

PATH = "/v1/stream"


async def stream(websocket: WebSocket) -> None:
    """Real-time emotion of a live audio stream (protocol: :mod:`ser.serve.stream`). Each message is handled in
    the inference thread pool, one at a time per stream; a client that disconnects at any point just ends it."""
    conn = StreamConnection(websocket)
    if not conn.origin_ok():  # a page of another site: refuse the handshake itself (HTTP 403)
        conn.metrics.streams.labels("forbidden_origin").inc()
        log.info("stream refused: Origin %r is neither this host nor a CORS origin", websocket.headers.get("origin"))
        await websocket.close(CLOSE_POLICY)
        return
    await websocket.accept(subprotocol=WS_PROTOCOL if WS_PROTOCOL in ws_offered(websocket.scope) else None)
    try:
        if not await conn.admit():
            return
    except (WebSocketDisconnect, OSError):
        return
    await conn.serve()


class StreamConnection:
    """One accepted WebSocket on ``/v1/stream``: admission, the message loop over its session, and ``end`` (how
    the stream ended, the ``ser_streams`` metric label)."""

    def __init__(self, websocket: WebSocket):
        self.ws = websocket
        self.settings, self.metrics = settings_of(websocket), metrics_of(websocket)
        self.end = "disconnect"
        self.session: StreamSession | None = None

    async def send_all(self, messages: list[dict[str, Any]]) -> None:
        """Send ``messages`` in order, counting each (and partial latencies, final predictions) in the metrics."""
        for m in messages:
            self.metrics.stream_messages.labels(m["type"], m.get("code", "")).inc()
            if m["type"] == "partial":
                self.metrics.partial_latency.observe(m["latency_ms"] / 1e3)
            elif m["type"] == "final":
                version = self.session.predictor.version if self.session and self.session.predictor else ""
                self.metrics.observe_prediction("stream", m["label"], m["probabilities"][m["label"]], version)
            await self.ws.send_json(m)

    async def refuse(self, code: str, message: str, close_code: int) -> None:
        """Send an error message, then close with ``close_code``."""
        await self.send_all([{"type": "error", "code": code, "message": message}])
        await self.ws.close(close_code, code)

    def origin_ok(self) -> bool:
        """Is the handshake's ``Origin`` (if any) this server's own host or one of the CORS origins?"""
        h = self.ws.headers
        return origin_allowed(h.get("origin"), [h.get("host"), h.get("x-forwarded-host")], self.settings.cors_origins)

    async def admit(self) -> bool:
        """Check the API key (``X-API-Key`` / ``Authorization: Bearer`` header, or the ``key.<base64url>``
        subprotocol; never the URL) and the number of open streams; refuse (and count) the stream when either
        fails."""
        auth = auth_of(self.ws)
        if auth.mode == "key":
            key = presented_key(self.ws.headers) or ws_subprotocol_key(ws_offered(self.ws.scope))
            try:
                check_key(self.ws, auth.api, key=key)
            except ApiError as exc:
                self.metrics.streams.labels("unauthorized").inc()
                await self.refuse("unauthorized", exc.message, CLOSE_POLICY)
                return False
        state = self.ws.app.state
        if state.streams_open >= self.settings.max_streams:
            self.metrics.streams.labels("too_many_streams").inc()
            msg = f"{state.streams_open} streams open (at most {self.settings.max_streams}); try again later"
            await self.refuse("too_many_streams", msg, CLOSE_TRY_AGAIN)
            return False
        return True

    async def serve(self) -> None:
        """Run an admitted stream to its end, counted in ``streams_open`` and the stream metrics meanwhile."""
        monitor = monitor_of(self.ws.app)
        on_final = None
        if monitor is not None:

            def on_final(predictor: Any, audio: Any, answer: dict[str, Any], features: Any) -> str:
                return monitor.answered(PATH, predictor, audio, answer, logmel=logmel_of(predictor, features))

        session = StreamSession(
            holder_of(self.ws).get, StreamLimits(max_stream_s=self.settings.max_stream_s), on_final=on_final
        )
        self.session = session
        state = self.ws.app.state
        state.streams_open += 1
        self.metrics.streams_active.inc()
        try:
            await self.loop(session)
        except (WebSocketDisconnect, OSError):  # the client went away (any moment, even mid-send)
            pass
        finally:
            state.streams_open -= 1
            self.metrics.streams_active.dec()
            self.metrics.streams.labels(self.end).inc()

    async def loop(self, session: StreamSession) -> None:
        """Answer the client's messages until the session asks to close (then close as it says), the client
        disconnects, the stream idles too long (``stream_idle_timeout_s`` waiting for a message) or the session
        fails."""
        limiter = limiter_of(self.ws.app)
        with anyio.CancelScope() as scope, IdleWatch(scope, self.settings.stream_idle_timeout_s) as idle:
            while session.close is None:
                idle.waiting()
                message: MutableMapping[str, Any] = await self.ws.receive()
                idle.busy()
                if message["type"] == "websocket.disconnect":
                    return
                data = message.get("bytes") if message.get("bytes") is not None else message.get("text")
                if data is None:
                    continue
                out = await self.answer(session, data, limiter)
                if out is None:
                    return
                await self.send_all(out)
        if scope.cancelled_caught:
            self.end = "idle_timeout"
            msg = f"no message for {self.settings.stream_idle_timeout_s:g} s"
            await self.refuse("idle_timeout", msg, CLOSE_POLICY)
            return
        assert session.close is not None
        self.end = "done" if session.close.code == 1000 else session.close.reason.replace(" ", "_")
        await self.ws.close(session.close.code, session.close.reason)

    async def answer(self, session: StreamSession, data: str | bytes, limiter: Any) -> list[dict[str, Any]] | None:
        """The session's messages answering ``data``; None once a failing session (a bug) has been closed."""
        try:
            if isinstance(data, bytes) and session.started:
                # Audio: buffer + VAD here (microseconds); only a due model call goes to a worker thread,
                # about twice a second per stream instead of every 20 ms frame.
                t0 = time.perf_counter()
                out = session.ingest_frame(data)
                if session.work_pending():
                    out += await anyio.to_thread.run_sync(session.advance, t0, limiter=limiter)
                else:
                    out += session.advance(t0)
                return out
            return await anyio.to_thread.run_sync(session.handle, data, limiter=limiter)
        except Exception as exc:  # a bug, never a bad input: report it, close, keep serving
            log.exception("stream session failed")
            self.end = "internal"
            await self.refuse("internal", f"internal error ({type(exc).__name__})", CLOSE_INTERNAL)
            return None


class IdleWatch:
    """Cancels ``scope`` once the stream has waited ``timeout_s`` for a message (time spent answering does not
    count). One event-loop timer per stream, re-armed only when it fires: a timeout scope per message (anyio's
    ``fail_after``, about 50 µs on a loaded core) was a measurable share of a 20 ms frame's cost on the event loop."""

    def __init__(self, scope: anyio.CancelScope, timeout_s: float):
        self.scope, self.timeout_s = scope, timeout_s
        self.since: float | None = None  # when the wait for the next message began; None while answering
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    def __enter__(self) -> IdleWatch:
        self._arm(self._loop.time() + self.timeout_s)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def waiting(self) -> None:
        self.since = self._loop.time()

    def busy(self) -> None:
        self.since = None

    def _arm(self, when: float) -> None:
        self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        if self.since is not None and now - self.since >= self.timeout_s:
            self._timer = None
            self.scope.cancel()
            return
        self._arm((self.since if self.since is not None else now) + self.timeout_s)
