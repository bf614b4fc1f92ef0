"""Authentication and the service's other defences, route by route (the table is the README's security section):
API keys named and stored as SHA-256 digests (revoked by removing a name), the three auth modes (keys, explicit
``none``, open with a warning), admin keys and admin off without keys (no CSRF-able reload), keys in headers only
(``?api_key=`` refused, never in uvicorn's logs), the WebSocket's key subprotocol and ``Origin`` check, security
headers on every answer and no ``server`` banner, the separate metrics port, and no absolute path or code revision
in any JSON answer. The real-server checks run ``ser serve`` in a subprocess on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from ser.serve.app import create_app
from ser.serve.engine import ModelHolder
from ser.serve.security import (
    API_CSP,
    DEMO_CSP,
    KeyRing,
    QueryStringFilter,
    origin_allowed,
    parse_keys,
    redact_paths,
    ws_key_protocol,
    ws_subprotocol_key,
)
from ser.serve.settings import Settings
from tests.conftest import export_tiny_model, tone

GIT_REV = "0.1.0+git.deadbeefcafe"
KEYS = ["alice:k-alice", "k-plain"]  # a named key and a plain one (auto-named key2)
ALICE, PLAIN = {"X-API-Key": "k-alice"}, {"X-API-Key": "k-plain"}
START = json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm16"})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("security") / "m", "3", code_version=GIT_REV, metrics={"uar": 0.5})


def _wav(seconds: float = 1.5) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


WAV = _wav()


def _request(c: TestClient, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """One call of the route table, with a valid body where the route takes one."""
    h = dict(headers or {})
    if path in ("/v1/predict", "/v1/timeline"):
        return c.post(path, content=WAV, headers={**h, "content-type": "audio/wav"})
    if path == "/v1/predict/batch":
        return c.post(path, files=[("files", ("a.wav", WAV))], headers=h)
    return c.request(method, path, headers=h)


def _assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.request.url, r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]
    return err


# The route table: who may call what. "open": always; "key": an API key when keys are set; "admin": an admin key
# (else an API key), off (404) without keys; "docs-shell": the /docs page and its assets are open (no data in them).
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/healthz", "open"),
    ("GET", "/readyz", "open"),
    ("GET", "/", "open"),
    ("GET", "/static/app.js", "open"),
    ("GET", "/static/worklet.js", "open"),
    ("GET", "/docs", "open"),
    ("GET", "/docs/assets/swagger-ui-bundle.js", "open"),
    ("GET", "/v1/model", "key"),
    ("GET", "/metrics", "key"),
    ("GET", "/openapi.json", "key"),
    ("POST", "/v1/predict", "key"),
    ("POST", "/v1/predict/batch", "key"),
    ("POST", "/v1/timeline", "key"),
    ("POST", "/v1/admin/reload", "admin"),
]


# ------------------------------------------------------------------------------------------------ the route table


@pytest.mark.parametrize(("method", "path", "who"), ROUTES, ids=[p for _, p, _ in ROUTES])
def test_route_with_keys(make_client, method, path, who):
    c = make_client(api_keys=KEYS)
    if who == "open":
        assert _request(c, method, path).status_code == 200
        return
    _assert_error(_request(c, method, path), 401, "unauthorized")
    _assert_error(_request(c, method, path, {"X-API-Key": "wrong"}), 401, "unauthorized")
    for headers in (ALICE, PLAIN, {"Authorization": "Bearer k-alice"}):
        r = _request(c, method, path, headers)
        assert r.status_code == 200, (path, r.text[:300])


@pytest.mark.parametrize(("method", "path", "who"), ROUTES, ids=[p for _, p, _ in ROUTES])
def test_route_open_server(make_client, method, path, who):
    """No keys, no explicit mode: today's open behaviour for local use, except admin, which is off."""
    c = make_client()
    if who == "admin":
        _assert_error(_request(c, method, path), 404, "not_found")
    else:
        assert _request(c, method, path).status_code == 200


@pytest.mark.parametrize(("method", "path", "who"), ROUTES, ids=[p for _, p, _ in ROUTES])
def test_route_auth_none_with_admin_keys(make_client, method, path, who):
    """auth none (a platform in front authenticates): no key anywhere, but admin keeps its own key."""
    c = make_client(auth="none", admin_keys=["ops:k-admin"])
    if who != "admin":
        assert _request(c, method, path).status_code == 200
        return
    _assert_error(_request(c, method, path), 401, "unauthorized")
    _assert_error(_request(c, method, path, ALICE), 401, "unauthorized")
    assert _request(c, method, path, {"X-API-Key": "k-admin"}).status_code == 200


def test_redoc_and_docs_off(make_client):
    c = make_client(api_keys=KEYS)
    _assert_error(c.get("/redoc"), 404, "not_found")
    off = make_client(api_keys=KEYS, docs=False)
    for path in ("/docs", "/docs/assets/swagger-ui.css"):
        _assert_error(off.get(path), 404, "not_found")
    _assert_error(off.get("/openapi.json", headers=ALICE), 404, "not_found")
    _assert_error(c.get("/docs/assets/../settings.py"), 404, "not_found")
    _assert_error(c.get("/docs/assets/index.html"), 404, "not_found")


def test_admin_keys_are_separate(make_client):
    c = make_client(api_keys=KEYS, admin_keys=["ops:k-admin"])
    _assert_error(c.post("/v1/admin/reload", headers=ALICE), 401, "unauthorized")  # an API key is not enough
    assert c.post("/v1/admin/reload", headers={"X-API-Key": "k-admin"}).status_code == 200
    _assert_error(_request(c, "POST", "/v1/predict", {"X-API-Key": "k-admin"}), 401, "unauthorized")


def test_cross_site_text_plain_post_cannot_reload(make_client, holder):
    """The CSRF case: a page on another site POSTs text/plain (no preflight) to the admin route. Open server: the
    route is off; keyed server: no key, no reload."""
    before = holder.reloads_ok
    csrf = {"content-type": "text/plain", "origin": "https://evil.example"}
    _assert_error(make_client().post("/v1/admin/reload", content="x", headers=csrf), 404, "not_found")
    _assert_error(make_client(api_keys=KEYS).post("/v1/admin/reload", content="x", headers=csrf), 401, "unauthorized")
    assert holder.reloads_ok == before


def test_key_in_the_url_is_refused(make_client):
    c = make_client(api_keys=KEYS)
    for path in ("/v1/model?api_key=k-alice", "/metrics?api_key=k-alice", "/openapi.json?token=k-alice"):
        err = _assert_error(c.get(path), 401, "unauthorized")
        assert "header" in err["message"] and "k-alice" not in json.dumps(err)
    err = _assert_error(c.get("/v1/model?api_key=k-alice", headers=ALICE), 401, "unauthorized")  # even with both
    assert "never in the URL" in err["message"]


# ------------------------------------------------------------------------------------------------ keys


def test_keys_are_hashed_and_named():
    ring = KeyRing(["alice:k-alice", "k-plain", " ", "bob:with:colon"])
    assert ring.names == ["alice", "key2", "bob"]
    assert [k.digest for k in ring.keys] == [
        hashlib.sha256(k.encode()).digest() for k in ("k-alice", "k-plain", "with:colon")
    ]
    held = repr(vars(ring)) + repr(ring)
    assert "k-alice" not in held and "k-plain" not in held  # only digests and names are kept
    assert ring.match("k-alice") == "alice" and ring.match("with:colon") == "bob" and ring.match("k-plain") == "key2"
    assert ring.match("alice") is None and ring.match("") is None and ring.match(None) is None
    assert ring.match("bob:with:colon") is None
    with pytest.raises(ValueError, match="'alice' is given twice") as exc:
        parse_keys(["alice:a", "alice:b"])
    with pytest.raises(ValueError, match="repeats") as exc:
        parse_keys(["a:same", "b:same"])
    assert "same" not in str(exc.value).replace("'b'", "")  # names the entry, never the key


def test_compare_is_constant_time(monkeypatch):
    """Every digest is compared (hmac.compare_digest, no early exit), whichever key matches."""
    import hmac

    calls: list[int] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    ring = KeyRing(["a:1", "b:2", "c:3"])
    for key in ("1", "3", "nope"):
        calls.clear()
        ring.match(key)
        assert len(calls) == 3


def test_settings_key_forms():
    s = Settings.from_env({"SER_API_KEYS": "alice:k1, k2,,", "SER_API_KEY": "k3", "SER_ADMIN_KEYS": ""})
    assert s.api_keys == ["alice:k1", "k2", "k3"] and s.admin_keys == []
    assert KeyRing(s.api_keys).names == ["alice", "key2", "key3"]
    assert "k1" not in repr(s)  # keys are left out of the settings' repr
    assert Settings.from_env({"SER_API_KEYS": ""}).api_keys == []
    assert Settings.from_env({"SER_AUTH": "none"}).auth == "none"
    with pytest.raises(ValueError, match="contradicts"):
        Settings(auth="none", api_keys=["k"])
    with pytest.raises(ValueError, match="at least one API key"):
        Settings(auth="key")
    with pytest.raises(ValueError, match="given twice"):
        Settings(api_keys=["a:1", "a:2"])


def test_revoking_a_key_by_removing_its_name(make_client):
    both = make_client(api_keys=["alice:k-alice", "bob:k-bob"])
    for key in ("k-alice", "k-bob"):
        assert both.get("/v1/model", headers={"X-API-Key": key}).status_code == 200
    bob_revoked = make_client(api_keys=["alice:k-alice"])  # restart without bob
    _assert_error(bob_revoked.get("/v1/model", headers={"X-API-Key": "k-bob"}), 401, "unauthorized")
    assert bob_revoked.get("/v1/model", headers=ALICE).status_code == 200


def test_metrics_count_key_names_never_keys(make_client):
    c = make_client(api_keys=KEYS)
    c.get("/v1/model", headers=ALICE)
    c.get("/v1/model", headers={"X-API-Key": "wrong"})
    c.get("/v1/model?api_key=k-plain")
    text = c.get("/metrics", headers=PLAIN).text
    assert 'ser_auth_total{key="alice",result="ok"} 1.0' in text
    assert 'ser_auth_total{key="",result="invalid"} 1.0' in text
    assert 'ser_auth_total{key="",result="key_in_url"} 1.0' in text
    assert "k-alice" not in text and "k-plain" not in text and "wrong" not in text


def test_open_server_warns_at_start_up(model_dir, holder, caplog):
    with caplog.at_level(logging.INFO, logger="ser.serve"):
        with TestClient(create_app(Settings(model_dir=model_dir), holder=holder)):
            pass
        with TestClient(create_app(Settings(model_dir=model_dir, auth="none"), holder=holder)):
            pass
        with TestClient(create_app(Settings(model_dir=model_dir, api_keys=KEYS), holder=holder)):
            pass
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.getMessage().startswith("auth: ")]
    assert lines[0][0] == logging.WARNING and "OPEN" in lines[0][1] and "admin routes off" in lines[0][1]
    assert lines[1][0] == logging.INFO and lines[1][1].startswith("auth: none (explicitly off")
    assert lines[2][1].startswith("auth: 2 API key(s) (alice, key2)")
    assert not [m for _, m in lines if "k-alice" in m or "k-plain" in m]


def test_serve_command_auth_modes(run_cli, model_dir, monkeypatch):
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    for var in [v for v in os.environ if v.startswith("SER_")]:
        monkeypatch.delenv(var)
    code, out, err = run_cli("serve", "--model", model_dir, "--api-key", "alice:k-alice")
    assert code == 0, err
    assert "auth: 1 API key(s) (alice)" in out and "k-alice" not in out
    assert seen["server_header"] is False  # no `server: uvicorn` banner
    code, out, _ = run_cli("serve", "--model", model_dir)
    assert code == 0 and "auth: OPEN" in out
    code, out, _ = run_cli("serve", "--model", model_dir, "--auth", "none")
    assert code == 0 and "auth: none (explicitly off" in out and seen["app"].state.auth.mode == "none"
    code, out, err = run_cli("serve", "--model", model_dir, "--auth", "none", "--api-key", "k-secret")
    assert code == 2 and "contradicts" in err and "k-secret" not in err + out
    code, _, err = run_cli("serve", "--model", model_dir, "--auth", "key")
    assert code == 2 and "at least one API key" in err
    code, _, err = run_cli("serve", "--model", model_dir, "--auth", "maybe")
    assert code == 2 and "auth" in err
    code, _, err = run_cli("serve", "--model", model_dir, "--port", "8001", "--metrics-port", "8001")
    assert code == 2 and "metrics-port" in err


# ------------------------------------------------------------------------------------------------ no paths, no revision

_ABS = re.compile(r"(?:^|[\s'\"(=])/[\w.-]+/")


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return [obj] if isinstance(obj, str) else []


def _assert_no_secrets(body: str, *roots: Path, paths: bool = True) -> None:
    assert GIT_REV not in body and "deadbeef" not in body and "+git" not in body
    for root in roots:
        assert str(root) not in body and str(root.resolve()) not in body
    assert str(Path.cwd()) not in body
    if paths:
        bad = [s for s in _strings(json.loads(body)) if _ABS.search(s)]
        assert not bad, bad


def test_no_path_or_revision_in_any_answer(make_client, model_dir, tmp_path):
    from ser import registry as reg

    c = make_client(api_keys=KEYS)
    bodies = [c.get(p, headers=ALICE).text for p in ("/healthz", "/readyz", "/v1/model", "/v1/nope", "/static/../x")]
    bodies += [c.post("/v1/admin/reload", headers=ALICE).text]
    bodies += [_request(c, "POST", p, ALICE).text for p in ("/v1/predict", "/v1/predict/batch", "/v1/timeline")]
    bodies += [c.post("/v1/predict", content=b"junk", headers={**ALICE, "content-type": "audio/wav"}).text]
    info = c.get("/v1/model", headers=ALICE).json()
    assert set(info) == {
        "name", "version", "labels", "sample_rate", "metrics", "evaluation", "model", "created", "registered",
        "loaded_at",
    }  # fmt: skip
    assert info["metrics"] == {"uar": 0.5} and info["version"] == "3"
    for body in bodies:
        _assert_no_secrets(body, model_dir)
    _assert_no_secrets(c.get("/openapi.json", headers=ALICE).text, model_dir, paths=False)  # route paths are fine

    # failures name no path either: a workdir with no champion, then a broken model folder
    work = tmp_path / "work"
    empty = make_client(holder_=ModelHolder(workdir=work), model_dir=None, workdir=work, api_keys=KEYS)
    assert empty.app.state.holder.reload().ok is False
    for r in (empty.get("/readyz"), empty.post("/v1/admin/reload", headers=ALICE)):
        assert r.status_code in (409, 503)
        _assert_no_secrets(r.text, work, tmp_path)
    reg.add_version(work, model_dir)
    reg.set_alias(work, "ser-emotion", "champion", 1, "test")
    h = ModelHolder(workdir=work)
    assert h.reload().ok
    c2 = make_client(holder_=h, model_dir=None, workdir=work, api_keys=KEYS)
    reg.add_version(work, model_dir)
    (work / "registry" / "ser-emotion" / "2" / "model.onnx").write_bytes(b"broken")
    reg.set_alias(work, "ser-emotion", "champion", 2, "test")
    err = _assert_error(c2.post("/v1/admin/reload", headers=ALICE), 409, "reload_failed")
    assert "model.onnx" in err["message"] and "<workdir>" in err["message"]
    _assert_no_secrets(c2.post("/v1/admin/reload", headers=ALICE).text, work, tmp_path)
    ok = c2.get("/v1/model", headers=ALICE).json()
    assert ok["version"] == "1"  # the old model (registry version 1) is kept
    assert "cannot load" in h.last_error and str(work) in h.last_error  # the full error stays on the server


def test_redact_paths():
    text = "cannot load /srv/runs/registry/m/2/model.onnx: bad; see /etc/x and http://h/a/b, ratio 1/2"
    out = redact_paths(text, {"<workdir>": Path("/srv/runs")})
    assert out == "cannot load <workdir>/registry/m/2/model.onnx: bad; see …/x and http://h/a/b, ratio 1/2"
    assert redact_paths("no champion in /tmp/abc/registry/ser-emotion") == "no champion in …/ser-emotion"


# ------------------------------------------------------------------------------------------------ WebSocket


def test_ws_key_in_the_subprotocol(make_client):
    c = make_client(api_keys=KEYS)
    assert ws_subprotocol_key([ws_key_protocol("k-alice")]) == "k-alice"
    assert ws_key_protocol("a/b=+é") != "a/b=+é" and ws_subprotocol_key([ws_key_protocol("a/b=+é")]) == "a/b=+é"
    assert re.fullmatch(r"key\.[A-Za-z0-9_-]+", ws_key_protocol("a/b=+é"))  # a valid header token
    with c.websocket_connect("/v1/stream", subprotocols=["ser.v1", ws_key_protocol("k-alice")]) as ws:
        assert ws.accepted_subprotocol == "ser.v1"  # echoes ser.v1, never the key
        ws.send_text(START)
        assert ws.receive_json()["type"] == "ready"
    with c.websocket_connect("/v1/stream", headers=PLAIN) as ws:
        assert ws.accepted_subprotocol is None
        ws.send_text(START)
        assert ws.receive_json()["type"] == "ready"
    for protocols in (["ser.v1", ws_key_protocol("wrong")], ["ser.v1", "key.!!!"], ["ser.v1"]):
        with c.websocket_connect("/v1/stream", subprotocols=protocols) as ws:
            m = ws.receive_json()
            assert m["type"] == "error" and m["code"] == "unauthorized"
    for url in ("/v1/stream?api_key=k-alice", "/v1/stream?token=k-alice"):
        with c.websocket_connect(url, headers=ALICE) as ws:  # even with a valid header: the URL is refused
            m = ws.receive_json()
            assert m["code"] == "unauthorized" and "URL" in m["message"] and "k-alice" not in m["message"]


def test_ws_origin_check(make_client):
    def connects(c: TestClient, origin: str | None) -> bool:
        headers = {"origin": origin} if origin else {}
        try:
            with c.websocket_connect("/v1/stream", headers=headers) as ws:
                ws.send_text(START)
                return ws.receive_json()["type"] == "ready"
        except WebSocketDisconnect as exc:
            assert exc.code == 1008
            return False

    plain = make_client()
    assert connects(plain, None)  # not a browser
    assert connects(plain, "http://testserver")  # same host
    assert not connects(plain, "https://evil.example")
    assert not connects(plain, "null")
    cors = make_client(cors_origins=["https://ui.example"])
    assert connects(cors, "https://ui.example") and connects(cors, "http://testserver")
    assert not connects(cors, "https://evil.example") and not connects(cors, "https://ui.example.evil.example")
    assert connects(make_client(cors_origins=["*"]), "https://anything.example")
    assert origin_allowed("https://h:8000", "h:8000", []) and not origin_allowed("https://h:8000", "h:9000", [])
    assert origin_allowed("https://public.example", ["ser:8000", "public.example"], [])  # X-Forwarded-Host
    assert not origin_allowed("https://evil.example", ["ser:8000", None], []) and not origin_allowed(
        "https://x", None, []
    )
    proxied = make_client()
    with proxied.websocket_connect(
        "/v1/stream", headers={"origin": "https://public.example", "x-forwarded-host": "public.example"}
    ) as ws:
        ws.send_text(START)
        assert ws.receive_json()["type"] == "ready"


# ------------------------------------------------------------------------------------------------ headers


def test_security_headers_on_every_answer(make_client):
    c = make_client(api_keys=KEYS, cors_origins=["https://ui.example"])
    answers = [_request(c, m, p, ALICE) for m, p, _ in ROUTES]
    answers += [c.get("/nope"), c.get("/v1/model"), c.post("/v1/predict", content=b"", headers=ALICE)]
    answers += [
        c.options("/v1/predict", headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
    ]
    for r in answers:
        assert r.headers["x-content-type-options"] == "nosniff", r.request.url
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "server" not in r.headers
    assert c.get("/v1/model", headers=ALICE).headers["content-security-policy"] == API_CSP
    page = c.get("/")
    assert (
        page.headers["content-security-policy"] == DEMO_CSP
        and "microphone=(self)" in page.headers["permissions-policy"]
    )
    docs = c.get("/docs")
    csp = docs.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "http" not in csp
    for html in (page.text, docs.text):  # nothing from another origin: no CDN, no inline script
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), html
        assert not re.search(r"<script>(?!</script>)", html)
    assert c.get("/docs/assets/swagger-ui-bundle.js").text.lstrip().startswith(("/*", "!function"))
    js = c.get("/static/app.js").text
    assert "api_key" not in js and "searchParams" not in js  # the demo never puts the key in a URL
    assert "key." in js and "ser.v1" in js


def test_query_string_filter():
    rec = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/model?api_key=sekrit&x=1", "1.1", 401), None,
    )  # fmt: skip
    assert QueryStringFilter().filter(rec) and "sekrit" not in rec.getMessage() and "/v1/model" in rec.getMessage()
    ws = logging.LogRecord(
        "uvicorn.error", logging.INFO, __file__, 1, '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5", "/v1/stream?api_key=sekrit"), None,
    )  # fmt: skip
    QueryStringFilter().filter(ws)
    assert ws.getMessage() == '127.0.0.1:5 - "WebSocket /v1/stream" [accepted]'


# ------------------------------------------------------------------------------------------------ a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_server(model_dir, tmp_path):
    """``ser serve`` in a subprocess on loopback with a key and a metrics port: no ``server`` banner, headers on
    every answer, /metrics only on its port, ``?api_key=`` refused over HTTP and WS, the key subprotocol accepted,
    and the key in none of the server's output (access log included)."""
    from websockets.sync.client import connect

    port, mport = _free_port(), _free_port()
    log = tmp_path / "ser.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}
    env["SER_API_KEYS"] = "alice:k-alice-s3cret"
    args = [sys.executable, "-m", "ser", "serve", "--model", str(model_dir), "--host", "127.0.0.1"]
    args += ["--port", str(port), "--metrics-port", str(mport), "--workers", "1", "--log-level", "info"]
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    base, key = f"http://127.0.0.1:{port}", {"X-API-Key": "k-alice-s3cret"}
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=30) as c:
            answers = [c.get("/healthz"), c.get("/"), c.get("/v1/model", headers=key), c.get("/nope")]
            for r in answers:
                assert "server" not in r.headers, r.headers
                assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
            _assert_error(c.get("/v1/model?api_key=k-alice-s3cret"), 401, "unauthorized")
            _assert_error(c.get("/metrics", headers=key), 404, "not_found")  # only on the metrics port
            assert c.post("/v1/predict", content=WAV, headers={**key, "content-type": "audio/wav"}).is_success
        metrics = httpx.get(f"http://127.0.0.1:{mport}/metrics", timeout=10)
        assert (
            metrics.status_code == 200 and "ser_http_requests_total" in metrics.text and "server" not in metrics.headers
        )
        assert httpx.get(f"http://127.0.0.1:{mport}/v1/model", headers=key, timeout=10).status_code == 404

        with connect(f"ws://127.0.0.1:{port}/v1/stream?api_key=k-alice-s3cret") as ws:
            m = json.loads(ws.recv(timeout=10))
            assert m["code"] == "unauthorized"
        with connect(
            f"ws://127.0.0.1:{port}/v1/stream", subprotocols=["ser.v1", ws_key_protocol("k-alice-s3cret")]
        ) as ws:
            assert ws.subprotocol == "ser.v1"
            ws.send(START)
            assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        with pytest.raises(Exception, match="403"):
            connect(f"ws://127.0.0.1:{port}/v1/stream", origin="https://evil.example", open_timeout=10)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    text = log.read_text()
    assert "auth: 1 API key(s) (alice)" in text and "GET /v1/model" in text and "WebSocket /v1/stream" in text
    assert "k-alice-s3cret" not in text and ws_key_protocol("k-alice-s3cret")[4:] not in text
    assert "api_key" not in text  # query strings are scrubbed from every log line
