"""`ser data download`: resumable download, checksum check and safe extraction, against a loopback HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import soundfile as sf

from ser.data.download import (
    MARKER_NAME,
    RAVDESS,
    check_member_name,
    download_file,
    fetch_dataset,
    file_from_record,
    get_dataset,
    parse_checksum,
    parse_content_range,
    plan_zip,
)
from ser.errors import ConfigError, SerError
from tests.conftest import tone

ZIP_PATH = "/files/Audio_Speech_Actors_01-24.zip"
API_PATH = "/api/records/1188976"
WAV_NAMES = ("03-01-01-01-01-01-01.wav", "03-01-05-02-01-02-01.wav")
FAST = {"retries": 2, "backoff": 0.0, "timeout": 5.0, "progress": False, "environ": {}}


def make_zip(entries: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def wav_bytes(freq: float, seconds: float = 1.0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, sr=48_000, freq=freq), 48_000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive() -> bytes:
    """A small RAVDESS-shaped archive (about 190 kB, stored): Audio_Speech_Actors_01-24/Actor_01/*.wav, 48 kHz.

    Larger than one 64 KiB read, so a connection cut mid-body leaves a non-empty partial file.
    """
    members = {f"Audio_Speech_Actors_01-24/Actor_01/{n}": wav_bytes(200.0 + 50 * i) for i, n in enumerate(WAV_NAMES)}
    return make_zip(members, zipfile.ZIP_STORED)


def md5(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` with Range support; behaviour switches live on the server object."""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # the http.server hook name
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if srv.fail_first > 0:
            srv.fail_first -= 1
            self.send_error(503, "busy")
            return
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "not found")
            return
        start, status = 0, 200
        rng = self.headers.get("Range")
        if rng and not srv.ignore_range and rng.startswith("bytes="):
            start = int(rng.split("=", 1)[1].split("-", 1)[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        chunk = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if srv.cut_after is not None and srv.cuts_left > 0:
            srv.cuts_left -= 1
            self.wfile.write(chunk[: srv.cut_after])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # drop the connection mid-body
            return
        self.wfile.write(chunk)


@pytest.fixture
def server(archive):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.files = {ZIP_PATH: archive}
    srv.requests = []
    srv.ignore_range = False
    srv.cut_after = None
    srv.cuts_left = 0
    srv.fail_first = 0
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def local(srv, archive: bytes, **changes):
    """The RAVDESS record pointed at the loopback server, with the test archive's checksum pinned."""
    return replace(RAVDESS, url=srv.base + ZIP_PATH, checksum=md5(archive), size=len(archive), **changes)


def extracted(dest: Path) -> list[str]:
    root = dest / "Audio_Speech_Actors_01-24" / "Actor_01"
    return sorted(p.name for p in root.glob("*.wav"))


# ------------------------------------------------------------------------------------------------ pure core


def test_parse_checksum_and_content_range():
    assert parse_checksum("MD5:" + "AB" * 16) == ("md5", "ab" * 16)
    assert parse_checksum("sha256:" + "0" * 64) == ("sha256", "0" * 64)
    for bad in ("ab" * 16, "sha1:" + "a" * 40, "md5:xyz", "md5:" + "a" * 31):
        with pytest.raises(ConfigError):
            parse_checksum(bad)
    assert parse_content_range("bytes 100-199/1000") == (100, 1000)
    assert parse_content_range("bytes */1000") == (None, 1000)
    assert parse_content_range(None) == (None, None)


def test_pinned_ravdess_record_and_unknown_name():
    assert get_dataset("RAVDESS") is RAVDESS
    assert RAVDESS.filename == "Audio_Speech_Actors_01-24.zip" and "1188976" in RAVDESS.url
    assert parse_checksum(RAVDESS.checksum)[0] == "md5"
    assert "CC BY-NC-SA 4.0" in RAVDESS.licence and "Livingstone" in RAVDESS.citation
    with pytest.raises(SerError, match="known: ravdess"):
        get_dataset("tess")


def test_file_from_record_list_and_entries_forms():
    digest = "md5:" + "c" * 32
    listed = {
        "files": [
            {"key": "other.zip", "checksum": "md5:" + "d" * 32, "size": 1},
            {"key": RAVDESS.filename, "checksum": digest, "size": 42, "links": {"self": "http://x/c"}},
        ]
    }
    found = file_from_record(listed, RAVDESS.filename)
    assert (found.checksum, found.size, found.url) == (digest, 42, "http://x/c")
    entries = {"files": {"entries": {RAVDESS.filename: {"checksum": digest, "size": 42}}}}
    assert file_from_record(entries, RAVDESS.filename).checksum == digest
    with pytest.raises(SerError, match="does not list"):
        file_from_record(listed, "missing.zip")


def test_member_names_that_escape_are_refused(tmp_path):
    assert str(check_member_name("a/b/c.wav")) == "a/b/c.wav"
    for bad in ("../evil.wav", "a/../../evil.wav", "/etc/passwd", "C:/evil.wav", "..\\evil.wav"):
        with pytest.raises(SerError, match="zip slip"):
            check_member_name(bad)
    zpath = tmp_path / "x.zip"
    zpath.write_bytes(make_zip({"Actor_01/a.wav": b"1", "Actor_02/b.wav": b"22"}))
    plan = plan_zip(zpath)
    assert plan.tops == ("Actor_01", "Actor_02") and plan.n_files == 2 and plan.n_bytes == 3


# ------------------------------------------------------------------------------------------------ download


def test_full_download_verifies_and_extracts(server, archive, tmp_path):
    dest = tmp_path / "ravdess"
    result = fetch_dataset(local(server, archive), dest, **FAST)
    assert not result.skipped and result.checksum == md5(archive) and result.received == len(archive)
    assert extracted(dest) == sorted(WAV_NAMES)
    info = sf.info(dest / "Audio_Speech_Actors_01-24" / "Actor_01" / WAV_NAMES[0])
    assert info.samplerate == 48_000
    assert result.entries == ["Audio_Speech_Actors_01-24"] and result.n_files == 2
    marker = json.loads((dest / MARKER_NAME).read_text())
    assert marker["status"] == "complete" and marker["checksum"] == md5(archive)
    assert marker["url"] == server.base + ZIP_PATH and marker["downloaded_at"]
    # no archive, partial or temporary extraction folder left behind
    assert sorted(p.name for p in dest.iterdir()) == sorted([MARKER_NAME, "Audio_Speech_Actors_01-24"])
    assert [r for r in server.requests if r[1]] == []  # a fresh download sends no Range header


def test_second_run_is_a_noop_without_network(server, archive, tmp_path):
    dest = tmp_path / "ravdess"
    spec = local(server, archive)
    fetch_dataset(spec, dest, **FAST)
    n = len(server.requests)
    again = fetch_dataset(spec, dest, **FAST)
    assert again.skipped and again.checksum == md5(archive) and again.n_files == 2
    assert len(server.requests) == n


def test_interrupted_download_resumes_with_range(server, archive, tmp_path):
    server.cut_after, server.cuts_left = 100_000, 1  # the first answer stops after 100 kB of ~190 kB
    dest = tmp_path / "ravdess"
    result = fetch_dataset(local(server, archive), dest, **FAST)
    assert extracted(dest) == sorted(WAV_NAMES)
    assert len(server.requests) == 2 and server.requests[0][1] is None
    start = int(server.requests[1][1].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 100_000  # resumed from what reached the disk, not from zero
    assert result.received == len(archive) and not result.restarted


def test_existing_partial_file_is_resumed(server, archive, tmp_path):
    dest = tmp_path / "ravdess"
    dest.mkdir()
    (dest / (RAVDESS.filename + ".partial")).write_bytes(archive[:100])
    result = fetch_dataset(local(server, archive), dest, **FAST)
    assert result.resumed_from == 100 and result.received == len(archive) - 100
    assert server.requests == [(ZIP_PATH, "bytes=100-")]
    assert extracted(dest) == sorted(WAV_NAMES)


def test_server_ignoring_range_restarts_cleanly(server, archive, tmp_path):
    server.ignore_range = True
    dest = tmp_path / "ravdess"
    dest.mkdir()
    (dest / (RAVDESS.filename + ".partial")).write_bytes(b"garbage that must not survive")
    result = fetch_dataset(local(server, archive), dest, **FAST)
    assert result.restarted and result.received == len(archive)
    assert server.requests[0][1] == f"bytes={len(b'garbage that must not survive')}-"
    assert extracted(dest) == sorted(WAV_NAMES)


def test_5xx_is_retried_then_succeeds(server, archive, tmp_path):
    server.fail_first = 2
    result = fetch_dataset(local(server, archive), tmp_path / "d", **FAST)
    assert len(server.requests) == 3 and result.n_files == 2


def test_network_failure_keeps_partial_for_next_run(server, archive, tmp_path):
    partial = tmp_path / "x.zip.partial"
    partial.write_bytes(archive[:50])
    server.fail_first = 10
    with pytest.raises(SerError, match="partial file kept") as err:
        download_file(server.base + ZIP_PATH, partial, retries=1, backoff=0.0, timeout=5.0, progress=False)
    assert "\n" not in str(err.value) and "HTTP 503" in str(err.value)
    assert partial.read_bytes() == archive[:50]
    server.fail_first = 0
    stats = download_file(server.base + ZIP_PATH, partial, retries=1, backoff=0.0, timeout=5.0, progress=False)
    assert stats.resumed_from == 50 and partial.read_bytes() == archive


def test_connection_refused_is_retried_then_one_line_error(tmp_path):
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    waits = []
    with pytest.raises(SerError, match="connection refused; nothing received") as err:
        download_file(
            f"http://127.0.0.1:{port}/a.zip",
            tmp_path / "a.zip.partial",
            retries=2,
            backoff=0.5,
            progress=False,
            sleep=waits.append,
        )
    assert waits == [0.5, 1.0] and "after 3 attempt(s)" in str(err.value) and "\n" not in str(err.value)


def test_interrupted_extraction_is_recovered_on_the_next_run(server, archive, tmp_path):
    dest = tmp_path / "ravdess"
    spec = local(server, archive)
    fetch_dataset(spec, dest, **FAST)
    marker = json.loads((dest / MARKER_NAME).read_text())
    marker["status"] = "extracting"  # as if the previous run died while moving folders into place
    (dest / MARKER_NAME).write_text(json.dumps(marker))
    (dest / "Audio_Speech_Actors_01-24" / "Actor_01" / WAV_NAMES[0]).unlink()
    result = fetch_dataset(spec, dest, **FAST)
    assert not result.skipped and extracted(dest) == sorted(WAV_NAMES)
    assert json.loads((dest / MARKER_NAME).read_text())["status"] == "complete"


def test_complete_partial_answered_416_counts_as_done(server, archive, tmp_path):
    partial = tmp_path / "x.zip.partial"
    partial.write_bytes(archive)
    stats = download_file(server.base + ZIP_PATH, partial, retries=0, backoff=0.0, timeout=5.0, progress=False)
    assert stats.received == 0 and partial.read_bytes() == archive
    assert server.requests == [(ZIP_PATH, f"bytes={len(archive)}-")]


def test_checksum_mismatch_fails_and_removes_partial(server, archive, tmp_path):
    dest = tmp_path / "ravdess"
    spec = replace(local(server, archive), checksum="md5:" + "0" * 32)
    with pytest.raises(SerError, match="checksum mismatch") as err:
        fetch_dataset(spec, dest, **FAST)
    assert "\n" not in str(err.value) and md5(archive) in str(err.value)
    assert not (dest / (RAVDESS.filename + ".partial")).exists()
    assert not (dest / RAVDESS.filename).exists() and not (dest / MARKER_NAME).exists()


def test_sha256_checksum_option(server, archive, tmp_path):
    sha = "sha256:" + hashlib.sha256(archive).hexdigest()
    result = fetch_dataset(local(server, archive), tmp_path / "d", checksum=sha, keep_archive=True, **FAST)
    assert result.checksum == sha and result.checksum_source == "option"
    assert Path(result.archive).read_bytes() == archive


def test_zip_slip_archive_is_rejected(server, tmp_path):
    evil = make_zip({"Actor_01/ok.wav": b"fine", "../escaped.wav": b"bad"})
    server.files[ZIP_PATH] = evil
    dest = tmp_path / "ravdess"
    with pytest.raises(SerError, match="zip slip"):
        fetch_dataset(replace(RAVDESS, url=server.base + ZIP_PATH, checksum=md5(evil), size=len(evil)), dest, **FAST)
    assert not (tmp_path / "escaped.wav").exists() and not (dest / "Actor_01").exists()


def test_foreign_folder_in_dest_is_not_overwritten(server, archive, tmp_path):
    dest = tmp_path / "ravdess"
    (dest / "Audio_Speech_Actors_01-24").mkdir(parents=True)
    (dest / "Audio_Speech_Actors_01-24" / "mine.txt").write_text("user data")
    with pytest.raises(SerError, match="already exists"):
        fetch_dataset(local(server, archive), dest, **FAST)
    assert (dest / "Audio_Speech_Actors_01-24" / "mine.txt").read_text() == "user data"


def test_checksum_from_records_api(server, archive, tmp_path):
    record = {"id": 1188976, "files": [{"key": RAVDESS.filename, "size": len(archive), "checksum": md5(archive)}]}
    server.files[API_PATH] = json.dumps(record).encode()
    spec = replace(RAVDESS, url=server.base + ZIP_PATH, checksum=None, size=None, api_url=server.base + API_PATH)
    result = fetch_dataset(spec, tmp_path / "d", **FAST)
    assert result.checksum_source == "records-api" and result.checksum == md5(archive)
    assert [p for p, _ in server.requests] == [API_PATH, ZIP_PATH]
    # a records API that disagrees with the archive is caught
    record["files"][0]["checksum"] = "md5:" + "1" * 32
    server.files[API_PATH] = json.dumps(record).encode()
    with pytest.raises(SerError, match="checksum mismatch"):
        fetch_dataset(spec, tmp_path / "e", **FAST)


def test_env_overrides_url_and_api(server, archive, tmp_path):
    record = {"files": [{"key": RAVDESS.filename, "size": len(archive), "checksum": md5(archive)}]}
    server.files[API_PATH] = json.dumps(record).encode()
    env = {"SER_RAVDESS_URL": server.base + ZIP_PATH, "SER_RAVDESS_API_URL": server.base + API_PATH}
    result = fetch_dataset(RAVDESS, tmp_path / "d", **{**FAST, "environ": env})
    assert result.url == server.base + ZIP_PATH and result.checksum_source == "records-api"


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_download_then_noop(server, archive, tmp_path, run_cli):
    dest = tmp_path / "ravdess"
    args = ("data", "download", "ravdess", "--dest", dest, "--url", server.base + ZIP_PATH, "--checksum", md5(archive))
    code, out, err = run_cli(*args, "--quiet")
    assert code == 0, err
    assert "2 files" in out and "CC BY-NC-SA 4.0" in out and "Livingstone" in out
    assert extracted(dest) == sorted(WAV_NAMES)
    code, out, err = run_cli(*args, "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["skipped"] is True and payload["n_files"] == 2 and payload["checksum"] == md5(archive)


def test_cli_errors_are_one_line(server, archive, tmp_path, run_cli):
    code, _, err = run_cli("data", "download", "tess", "--dest", tmp_path / "t")
    assert code == 2 and err.strip().count("\n") == 0 and "known: ravdess" in err
    code, _, err = run_cli("data", "download", "ravdess", "--dest", tmp_path / "t", "--checksum", "md5:nothex")
    assert code == 2 and err.startswith("error: bad checksum") and err.strip().count("\n") == 0
    base = ("data", "download", "ravdess", "--dest", tmp_path / "m", "--url", server.base + ZIP_PATH)
    code, _, err = run_cli(*base, "--checksum", "md5:" + "0" * 32, "--quiet")
    assert code == 2 and "checksum mismatch" in err and err.strip().count("\n") == 0
    code, _, err = run_cli(*base[:-1], server.base + "/missing.zip", "--checksum", md5(archive), "--quiet")
    assert code == 2 and "HTTP 404" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("data", "download", "ravdess", "--dest", tmp_path / "file", "--checksum", md5(archive))
    assert code == 2 and "not a folder" in err


def test_cli_help_has_example(run_cli):
    code, out, _ = run_cli("data", "download", "--help")
    assert code == 0 and "Example:" in out and "--checksum" in out
