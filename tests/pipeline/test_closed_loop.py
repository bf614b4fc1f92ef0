"""The closed loop end to end, with every part real: ``ser loop run`` trains v1 on studio speech (the synthetic
corpus); a real ``ser serve`` subprocess serves the workdir's champion with ``--reload-poll``; production traffic
shifts to a telephone channel in noise (:mod:`ser.degrade`); the loop's monitoring report flags the shift (clean
traffic of the same kind did not); labelled audio of the new condition arrives as a second source with
``gate_share``; ``ser loop run`` retrains, the register stage's gate scores v1 and v2 on the same held-out gate
speakers and promotes v2; the running service hot-reloads it while a client keeps sending requests (every answer
200, the version switches once and never back); the prediction log and the monitoring report show v2's answers and
their feedback. The opposite case: the feedback triggers the next pass, whose candidate cannot learn (one epoch at
a learning rate of 1e-5), and the gate keeps it out (challenger, the reason in both events files) while the
service keeps serving v2.

Why v2 can win here: the synthetic classes differ in F0 level and range, speaking rate, level and spectral tilt
(:data:`ser.data.synth.PROSODY`). The condition band-limits to 300-3400 Hz (removing the fundamental and the low
harmonics and flattening the tilt) and adds pink noise at 5 dB SNR over the whole clip (masking the pauses that
carry the rate), so a model that only heard studio clips reads the cues from bands that are gone; v2 also trains
on half of the new source's speakers in that condition. The gate set is the other half (4 of 8 speakers, 80
utterances, drawn per gender before splitting): neither model trained on it. Labels are folded to the ``four``
profile (angry / happy / neutral+calm / sad) to keep the runs short; the per-gender gap is not bounded
(``max_group_gap: null``): 4 gate speakers cannot measure it.

Every assertion is on what the runs produced (flags, scores, decisions, versions, status codes); none is on a
fixed score. Three pipeline runs of ``cnn-small`` (one cross-validation fold each, no validation speaker so the
small folds keep every training speaker): about 7.5 CPU-minutes, so about 4 minutes on 2 idle cores (11 minutes
measured on the shared, loaded machine). The monitor's check on clean traffic asserts no *input* drift only: the
reference's predicted-label and confidence profile comes from the cross-validation fold model, weaker than the
shipped one, so prediction drift can show on clean traffic too.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

CONDITION = "noise:generated-pink@5+telephone"
"""The production condition of this test (a :func:`ser.degrade.parse` string)."""
PROFILE = "four"
GOOD_TRAIN = {"epochs": 15, "batch_size": 16}
WORSE_TRAIN = {"epochs": 1, "batch_size": 16, "lr": 1e-5}

pytestmark = pytest.mark.slow


# ---- data -------------------------------------------------------------------------------------------------------


def degraded_corpus(out: Path, seed: int, n_speakers: int, per_emotion: int) -> Path:
    """A synthetic corpus (``seed``) with every clip through :data:`CONDITION` (seeded per clip), RAVDESS layout;
    the marker file stays: it is synthetic audio, never reported as speech."""
    from ser import degrade
    from ser.data.synth import synthesize

    clean = synthesize(out.with_name(out.name + "-clean"), n_speakers=n_speakers, per_emotion=per_emotion, seed=seed)
    for i, wav in enumerate(sorted(clean.rglob("*.wav"))):
        y, sr = sf.read(wav, dtype="float32")
        target = out / wav.relative_to(clean)
        target.parent.mkdir(parents=True, exist_ok=True)
        sf.write(target, degrade.apply(y, sr, CONDITION, rng=1000 * seed + i), sr, subtype="PCM_16")
    (out / "SYNTHETIC_CORPUS.json").write_text((clean / "SYNTHETIC_CORPUS.json").read_text())
    return out


def traffic(folder: Path) -> list[tuple[bytes, str]]:
    """(wav bytes, true label in the ``four`` profile) of every clip under ``folder``."""
    from ser.data.synth import EMOTION_CODES

    code_to_label = {code: ("neutral" if e == "calm" else e) for e, code in EMOTION_CODES.items()}
    keep = {"neutral", "happy", "sad", "angry"}
    out = []
    for wav in sorted(folder.rglob("*.wav")):
        label = code_to_label[wav.name.split("-")[2]]
        if label in keep:
            out.append((wav.read_bytes(), label))
    return out


def pipeline_yaml(path: Path, phone: Path | None, train: dict) -> Path:
    studio = {"name": "studio", "corpus": "synthetic", "synth_speakers": 12, "synth_per_emotion": 4}
    sources = [studio]
    if phone is not None:  # the NEW source: half of its speakers are the gate set
        sources.append({"name": "phone", "corpus": "ravdess", "path": str(phone), "gate_share": 0.5})
    cfg = {
        "data": {"profile": PROFILE, "sources": sources},
        "split": {"k": 3, "folds": [0]},
        "train": {"model": "cnn-small", "overrides": {"train": train, "val_speakers": 0}},
        "evaluate": {"n_boot": 50},
        "register": {"max_group_gap": None, "n_boot": 500},
        "tracking": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---- the service and its clients ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``ser serve --workdir WD --reload-poll 0.5`` in a subprocess on 127.0.0.1 (its output in ``serve.log``)."""

    def __init__(self, workdir: Path, logfile: Path):
        import ser

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        src = str(Path(ser.__file__).resolve().parents[1])
        env = {k: v for k, v in os.environ.items() if not k.startswith("SER_")}  # this test's settings only
        env.update(
            PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]), SER_PREDICTION_LOG_FLUSH_S="0.5"
        )
        cmd = [sys.executable, "-m", "ser", "serve", "--workdir", str(workdir), "--port", str(self.port)]
        cmd += ["--reload-poll", "0.5", "--workers", "1", "--auth", "none"]
        self.log = open(logfile, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"ser serve exited: {Path(self.log.name).read_text()[-3000:]}"
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"ser serve not ready in {timeout} s: {Path(self.log.name).read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: uvicorn shuts down and the prediction log is flushed
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def predict(client, clip: bytes) -> tuple[int, dict]:
    r = client.post("/v1/predict", files={"file": ("clip.wav", clip, "audio/wav")})
    return r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else {})


class Sender(threading.Thread):
    """Keeps sending the clips in turn until stopped: (status, model_version, prediction_id, true label) each."""

    def __init__(self, url: str, clips: list[tuple[bytes, str]]):
        super().__init__(daemon=True)
        self.url, self.clips = url, clips
        self.answers: list[dict] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        import httpx

        try:
            with httpx.Client(base_url=self.url, timeout=60) as c:
                i = 0
                while not self.stop.is_set():
                    clip, label = self.clips[i % len(self.clips)]
                    status, body = predict(c, clip)
                    self.answers.append({"status": status, "true": label, **body})
                    i += 1
                    time.sleep(0.2)
        except BaseException as exc:  # a dropped connection is a failed request: the test reports it
            self.error = exc

    def versions_seen(self, version: str) -> int:
        return sum(1 for a in self.answers if a.get("model_version") == version)


def uar(pairs: list[tuple[str, str]]) -> float:
    """Unweighted average recall of (true, predicted) pairs over the true classes present."""
    classes = sorted({t for t, _ in pairs})
    return float(np.mean([np.mean([p == t for tt, p in pairs if tt == t]) for t in classes]))


def input_drift(check: dict) -> list[str]:
    """The report's reasons about the audio coming in (its statistics and quality), not about the answers."""
    return [r for r in check["monitor"]["reasons"] if r.startswith(("data drift", "input quality"))]


def loop_pass(loop: Path, capsys, *extra: str) -> dict:
    from ser.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["loop", "run", "--config", str(loop), "--json", *extra])
    out = capsys.readouterr().out
    assert exc.value.code == 0, out
    return json.loads(out)


# ---- the loop ---------------------------------------------------------------------------------------------------


def test_the_closed_loop_end_to_end(tmp_path, capsys):
    import httpx

    from ser import registry
    from ser.data.synth import synthesize
    from ser.jobs.loop import read_events
    from ser.monitor.log import read_log

    wd = tmp_path / "wd"
    phone = degraded_corpus(tmp_path / "phone", seed=5, n_speakers=8, per_emotion=4)  # labelled, new condition
    clean_traffic = traffic(synthesize(tmp_path / "t-clean", n_speakers=4, per_emotion=2, seed=9))
    phone_traffic = traffic(degraded_corpus(tmp_path / "t-phone", seed=11, n_speakers=4, per_emotion=2))
    v1_cfg = pipeline_yaml(tmp_path / "v1.yaml", None, GOOD_TRAIN)
    loop = tmp_path / "loop.yaml"

    def loop_yaml(pipeline: Path, min_new_feedback: int = 0) -> None:
        block = {"workdir": "wd", "pipeline": pipeline.name, "since": "1h", "min_new_feedback": min_new_feedback}
        loop.write_text(yaml.safe_dump({"loop": block}))

    # 1. a fresh workdir: the first pass trains v1 on studio speech only
    loop_yaml(v1_cfg)
    first = loop_pass(loop, capsys)
    assert first["reasons"][0].startswith("no model to monitor") and first["decision"]["version"] == 1
    assert first["decision"]["alias"] == "champion"

    # 2. serve it, polling the registry
    service = Service(wd, tmp_path / "serve.log")
    try:
        service.wait_ready()
        with httpx.Client(base_url=service.url, timeout=60) as c:
            assert c.get("/v1/model").json()["version"] == "1"
            # clean traffic like the training data: no input statistic drifts
            answers = [predict(c, clip) for clip, _ in clean_traffic]
            assert all(s == 200 for s, _ in answers)
            time.sleep(1.5)  # the log's flush interval (0.5 s) and then some
            check = loop_pass(loop, capsys, "--check-only")
            assert check["monitor"]["predictions"] == len(clean_traffic)
            assert not input_drift(check), check["monitor"]["reasons"]
            # 3. production shifts to the telephone channel in noise: v1 answers, the monitor flags it
            v1_answers = [(label, predict(c, clip)) for clip, label in phone_traffic]
            assert all(s == 200 and b["model_version"] == "1" for _, (s, b) in v1_answers)
            v1_traffic_uar = uar([(t, b["label"]) for t, (_, b) in v1_answers])
            time.sleep(1.5)
            check = loop_pass(loop, capsys, "--check-only")
            assert check["monitor"]["predictions"] == len(clean_traffic) + len(phone_traffic)
            assert check["monitor"]["flagged"] and check["triggered"], check
            assert check["reasons"][0].startswith("monitoring report flagged") and input_drift(check), check

        # 4. labelled audio of the new condition arrives (a second source, half of its speakers the gate set);
        # the loop retrains while a client keeps sending production traffic
        loop_yaml(pipeline_yaml(tmp_path / "v2.yaml", phone, GOOD_TRAIN), min_new_feedback=20)
        sender = Sender(service.url, phone_traffic)
        sender.start()
        second = loop_pass(loop, capsys)
        deadline = time.monotonic() + 60  # every production clip once more, answered by v2
        while sender.versions_seen("2") < len(phone_traffic) and time.monotonic() < deadline and sender.is_alive():
            time.sleep(0.2)
        sender.stop.set()
        sender.join(60)
        assert sender.error is None, repr(sender.error)

        # the gate compared both models on the same unseen gate set, and promoted v2
        assert "monitoring report flagged" in second["reasons"][0] and second["retrained"], second
        dec = second["decision"]
        assert dec["version"] == 2 and dec["alias"] == "champion" and dec["new"], dec["reason"]
        gate = dec["gate"]
        assert gate["outcome"] == "better" and gate["basis"] == "gate"
        assert gate["gate"]["n_unseen"] == gate["gate"]["n"] >= 20
        ov = gate["gate"]["overlap"]
        assert ov["candidate_checked"] and ov["champion_checked"] and ov["candidate_seen"] == ov["champion_seen"] == 0
        assert gate["candidate_score"]["uar"] > gate["champion_score"]["uar"]
        assert gate["uar_diff"]["low"] >= 0
        assert str(gate["champion_score"]["version"]) == "1"
        events = [e for e in registry.events(wd) if e["event"] == "gate"]
        assert [(e["version"], e["outcome"]) for e in events] == [(1, "first"), (2, "better")]

        # the service hot-reloaded while the client was sending: every answer 200, the version switched once
        statuses = {a["status"] for a in sender.answers}
        assert statuses == {200}, statuses
        versions = [a["model_version"] for a in sender.answers]
        switch = versions.index("2")
        assert switch > 0 and set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}
        v2 = [a for a in sender.answers if a["model_version"] == "2"]
        assert len(v2) >= len(phone_traffic)
        v2_traffic_uar = uar([(a["true"], a["label"]) for a in v2[: len(phone_traffic)]])  # the same clips as v1
        assert v2_traffic_uar > v1_traffic_uar, (v1_traffic_uar, v2_traffic_uar)

        # 5. the monitor shows v2's answers: in the prediction log, and their feedback in the report
        with httpx.Client(base_url=service.url, timeout=60) as c:
            for a in v2:
                r = c.post("/v1/feedback", json={"prediction_id": a["prediction_id"], "label": a["true"]})
                assert r.status_code == 202, r.text
        time.sleep(1.5)
        log = read_log(wd / "monitor").to_pandas()
        logged = log[log["model_version"] == "2"]
        assert {a["prediction_id"] for a in v2} <= set(logged["prediction_id"])

        # 6. that feedback triggers the next pass; its candidate cannot learn, and the gate keeps it out
        loop_yaml(pipeline_yaml(tmp_path / "worse.yaml", phone, WORSE_TRAIN), min_new_feedback=20)
        third = loop_pass(loop, capsys)
        assert any(f"{len(v2)} new labelled answers" in r for r in third["reasons"]), third["reasons"]
        report = json.loads((Path(third["monitor"]["report"]).parent / "report.json").read_text())
        live = {(v["model_version"], v["role"]): v for v in report["accuracy"]["versions"]}
        answered = [(a["true"], a["label"]) for a in v2 if a["label"] is not None]  # no-speech answers: no label
        assert live[("2", "primary")]["n"] == len(answered) and report["accuracy"]["labelled"] == len(v2)
        assert live[("2", "primary")]["uar"] == pytest.approx(uar(answered))
        dec3 = third["decision"]
        assert dec3["version"] == 3 and dec3["alias"] == "challenger" and dec3["new"]
        assert dec3["gate"]["outcome"] == "not_better" and "does not reach the margin" in dec3["reason"]
        assert dec3["aliases"] == {"champion": 2, "challenger": 3}
        gates = [e for e in registry.events(wd) if e["event"] == "gate"]
        assert gates[-1]["version"] == 3 and gates[-1]["outcome"] == "not_better" and gates[-1]["reason"]
        passes = read_events(wd / "loop" / "events.jsonl")
        assert [p["decision"]["alias"] for p in passes if p["retrained"]] == ["champion", "champion", "challenger"]
        assert passes[-1]["decision"]["reason"] == dec3["reason"]
        time.sleep(1.5)  # three polls: the service still serves v2
        with httpx.Client(base_url=service.url, timeout=60) as c:
            assert c.get("/v1/model").json()["version"] == "2"
    finally:
        service.stop()
