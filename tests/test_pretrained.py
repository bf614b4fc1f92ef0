"""The bundled pretrained model: what its folder holds (licence, provenance, calibration) and that it is package
data; the fallback of ``ser serve`` / ``predict`` / ``timeline`` / ``listen`` when nothing names a model and there is
no champion (one notice line), and no fallback when a champion exists or a model is named; on RAVDESS."""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest

from ser.pretrained import LICENSE, bundle, bundled_dir, fallback_dir, notice
from tests.conftest import RAVDESS8, ROOT, export_tiny_model, write_wav

NOTICE = "bundled pretrained model"


def sine(seconds: float) -> np.ndarray:
    """A 440 Hz sine: webrtcvad takes a steady tone for voice, so the speech gate lets it through."""
    return (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16_000)) / 16_000)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return export_tiny_model(tmp_path_factory.mktemp("pretrained") / "m", "7")


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory, tiny) -> Path:
    """A bundled folder for the fallback's mechanics (the real one's contents are tested on their own below)."""
    d = tmp_path_factory.mktemp("bundled") / "ravdess-cnn"
    shutil.copytree(tiny, d)
    (d / "LICENSE").write_text("CC BY-NC-SA 4.0")
    meta = json.loads((d / "metadata.json").read_text())
    (d / "metadata.json").write_text(json.dumps({**meta, "license": LICENSE}))
    return d


@pytest.fixture
def nowhere(tmp_path, monkeypatch, stand_in) -> Path:
    """A working directory without ``runs/`` and no ``$SER_WORKDIR`` (nothing names a model), the bundled folder
    being ``stand_in``."""
    import ser.pretrained

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SER_WORKDIR", raising=False)
    monkeypatch.setattr(ser.pretrained, "bundled_dir", lambda: stand_in)
    return tmp_path


def _champion(root: Path, model_dir: Path) -> None:
    """Register ``model_dir`` as the champion (version 7) of ``root/runs`` (the registry's file layout)."""
    reg = root / "runs" / "registry" / "ser-emotion"
    shutil.copytree(model_dir, reg / "7")
    (reg / "aliases.json").write_text(json.dumps({"champion": 7}))


def _notices(text: str) -> list[str]:
    return [line for line in text.splitlines() if NOTICE in line]


# ------------------------------------------------------------------------------------------------ the folder


def test_bundled_folder_is_complete_and_licensed():
    from ser.inference import Predictor

    d = bundled_dir()
    names = {p.name for p in d.iterdir()}
    assert {"model.onnx", "metadata.json", "MODEL_CARD.md", "LICENSE"} <= names
    assert sum(p.stat().st_size for p in d.iterdir()) < 5e6  # a few MB at most: it ships in every wheel
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["license"] == LICENSE == "CC BY-NC-SA 4.0"
    assert "decision" not in meta  # the builder's registry verdict is not the bundle's (see bundle)
    prov = meta["pretrained"]
    assert prov["config"].endswith("ravdess-all.yaml") and prov["recipe"] == meta["recipe"]["name"]
    assert prov["metrics"]["uar"] == meta["evaluation"]["uar"] > 0.25  # held out; chance is 0.125
    assert meta["training"]["speakers"] == 24 and not meta["training"]["synthetic"]
    assert meta["calibration"]["method"] == "temperature"
    assert Predictor(d, warmup=False).temperature == meta["calibration"]["temperature"]
    licence = (d / "LICENSE").read_text()
    for needed in ("CC BY-NC-SA 4.0", "NonCommercial", "Livingstone", "Article 5(1)(f)", "decisions about people"):
        assert needed.lower() in licence.lower(), needed
    card = (d / "MODEL_CARD.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and "non-commercial" in card and "Calibration" in card


def test_the_bundle_is_the_default_recipe():
    """The bundled model is the default recipe (what benchmarks/default_recipe.py chose, configs/ravdess.yaml), and
    the config that rebuilds it asks for the same one: changing the default without rebuilding the bundle fails here."""
    import yaml

    default = yaml.safe_load((ROOT / "configs" / "ravdess.yaml").read_text())["train"]["model"]
    rebuild = yaml.safe_load((ROOT / "configs" / "ravdess-all.yaml").read_text())["train"]["model"]
    bundled = json.loads((bundled_dir() / "metadata.json").read_text())["pretrained"]["recipe"]
    assert default == rebuild == bundled


def test_bundled_files_are_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ser"]
    package = ROOT / "src" / "ser"
    for f in bundled_dir().iterdir():
        rel = f.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} would not ship in the wheel"


def test_bundle_keeps_the_licence_and_records_the_run(tiny, tmp_path):
    dest = tmp_path / "ravdess-cnn"
    dest.mkdir()
    (dest / "stale.png").write_bytes(b"x")
    with pytest.raises(Exception, match="LICENSE"):
        bundle(tiny, dest, {})
    (dest / "LICENSE").write_text("the licence")
    (tiny / "MODEL_CARD.md").write_text(
        "---\nlicense: other\n---\n\n# ser-emotion (version 7)\n\nbody\n\n## Registry decision\n\n**challenger**: "
        "does not beat the champion\n\n## How to use\n\nuse\n"
    )
    registered = json.loads((tiny / "metadata.json").read_text())
    decision = {"alias": "challenger", "outcome": "not_better"}  # against whatever the builder's workdir held
    (tiny / "metadata.json").write_text(json.dumps({**registered, "decision": decision}))
    bundle(tiny, dest, {"config": "configs/x.yaml", "metrics": {"uar": 0.5}})
    assert (dest / "LICENSE").read_text() == "the licence" and not (dest / "stale.png").exists()
    meta = json.loads((dest / "metadata.json").read_text())
    assert meta["license"] == LICENSE and meta["pretrained"]["metrics"] == {"uar": 0.5}
    assert meta["pretrained"]["bundled_as"] == "ravdess-cnn"
    card = (dest / "MODEL_CARD.md").read_text()
    assert "license: cc-by-nc-sa-4.0" in card and card.index("# ser-emotion") < card.index("Bundled pretrained")
    assert "decision" not in meta and "Registry decision" not in card and "challenger" not in card
    assert card.endswith("body\n\n## How to use\n\nuse\n")  # the sections around it are kept whole


# ------------------------------------------------------------------------------------------------ the fallback


def test_fallback_only_when_nothing_names_a_model(nowhere, tiny, stand_in):
    assert fallback_dir() == stand_in
    line = notice(stand_in)
    assert "\n" not in line and "ravdess-cnn" in line and "CC BY-NC-SA 4.0" in line
    # the notice names the recipe the bundle records (the network's name when it records none)
    meta = json.loads((stand_in / "metadata.json").read_text())
    (stand_in / "metadata.json").write_text(json.dumps({**meta, "pretrained": {"recipe": "cnn-robust"}}))
    assert "(cnn-robust trained on RAVDESS" in notice(stand_in)
    (stand_in / "metadata.json").write_text(json.dumps(meta))
    assert fallback_dir("challenger") is None  # a reference is a request for a registered model
    assert fallback_dir(env={"SER_WORKDIR": str(nowhere)}) is None
    _champion(nowhere, tiny)
    assert fallback_dir() is None


def test_a_synthetic_demo_champion_is_passed_over_unless_named(nowhere, tiny, run_cli):
    """After ``make demo`` the default workdir's champion was trained on tones (``training.synthetic``): nothing
    named → the bundled model answers, with a notice saying why; ``--workdir runs`` still serves the demo model."""
    _champion(nowhere, tiny)
    meta_path = nowhere / "runs" / "registry" / "ser-emotion" / "7" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "training": {"synthetic": True}}))
    assert fallback_dir() is not None
    clip = write_wav(nowhere / "clip.wav", sine(1.5))
    code, out, err = run_cli("predict", clip, "--json")
    assert code == 0, err
    lines = _notices(err)
    assert len(lines) == 1 and "synthetic demo corpus" in lines[0], err
    code, out, err = run_cli("predict", clip, "--workdir", nowhere / "runs", "--json")
    assert code == 0 and not _notices(err), err
    assert json.loads(out)[0]["model_version"] == "7"
    meta_path.write_text(json.dumps({**meta, "training": {"synthetic": False}}))
    assert fallback_dir() is None  # a champion trained on real data is served as always


@pytest.mark.parametrize("command", ["predict", "timeline", "listen"])
def test_cli_falls_back_with_one_notice_and_not_with_a_champion(command, nowhere, tiny, run_cli):
    clip = write_wav(nowhere / "clip.wav", sine(1.5))
    args = {
        "predict": ["predict", clip, "--json"],
        "timeline": ["timeline", clip, "--json"],
        "listen": ["listen", "--file", clip, "--fast", "--json"],
    }[command]
    code, out, err = run_cli(*args)
    assert code == 0, err
    lines = _notices(err)
    assert len(lines) == 1 and "ravdess-cnn" in lines[0] and "CC BY-NC-SA 4.0" in lines[0], err
    assert NOTICE not in out  # stdout stays machine-readable
    _champion(nowhere, tiny)
    code, out, err = run_cli(*args)
    assert code == 0, err
    assert not _notices(err)
    if command == "predict":
        assert json.loads(out)[0]["model_version"] == "7"  # the champion answered


def test_named_but_missing_is_still_an_error(nowhere, run_cli):
    clip = write_wav(nowhere / "clip.wav", sine(1.0))
    code, _, err = run_cli("predict", clip, "--workdir", nowhere / "runs")
    assert code == 2 and "champion" in err and not _notices(err)


def test_the_bundle_is_not_rebuilt_from_uncommitted_code(run_cli, monkeypatch, tmp_path):
    import ser.export
    import ser.pipeline

    monkeypatch.setattr(ser.export, "code_version", lambda: "0.1.0+git.abc123+dirty")
    ran: list[object] = []
    monkeypatch.setattr(ser.pipeline, "load_config", lambda path: ran.append(path))
    code, _, err = run_cli("pipeline", "pretrained", "--workdir", tmp_path / "w", "--dest", tmp_path / "d")
    assert code != 0 and "uncommitted changes (0.1.0+git.abc123+dirty)" in err and "--allow-dirty" in err
    assert ran == []  # refused before the config is read or anything trained
    monkeypatch.setattr(ser.pipeline, "load_config", lambda path: ran.append(path) or _stop())
    code, _, err = run_cli("pipeline", "pretrained", "--allow-dirty", "--workdir", tmp_path / "w")
    assert ran == [Path("configs/ravdess-all.yaml")] and "stopped here" in err


def test_a_model_exported_from_uncommitted_code_is_not_bundled(run_cli, monkeypatch, tmp_path, tiny):
    import ser.export
    import ser.pipeline

    model_dir = tmp_path / "registered"
    shutil.copytree(tiny, model_dir)
    meta = json.loads((model_dir / "metadata.json").read_text())
    (model_dir / "metadata.json").write_text(json.dumps({**meta, "code_version": "0.1.0+git.abc123+dirty"}))

    class Summary:  # a pipeline run read back from a cache that an earlier, dirty tree filled
        ok, results = True, []

        def record(self, name):
            return {"result": {"model_dir": str(model_dir), "name": "m", "version": "1", "alias": "champion"}}

    monkeypatch.setattr(ser.export, "code_version", lambda: "0.1.0+git.def456")  # the tree is clean now
    monkeypatch.setattr(ser.pipeline, "load_config", lambda path: object())
    monkeypatch.setattr(ser.pipeline, "run", lambda cfg, workdir, progress: Summary())
    dest = tmp_path / "dest"
    code, _, err = run_cli("pipeline", "pretrained", "--workdir", tmp_path / "w", "--dest", dest)
    assert code != 0 and "exported from a tree with uncommitted changes (0.1.0+git.abc123+dirty)" in err
    assert not dest.exists()


def _stop():
    from ser.errors import SerError

    raise SerError("stopped here")


def test_serve_falls_back_with_one_log_line(nowhere, tiny, stand_in, run_cli, monkeypatch, caplog):
    import uvicorn

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app))
    with caplog.at_level(logging.WARNING, logger="ser.serve"):
        code, _, err = run_cli("serve")
    assert code == 0, err
    assert len(_notices(caplog.text)) == 1 and "CC BY-NC-SA 4.0" in caplog.text
    holder = seen["app"].state.holder
    assert holder.model_dir == stand_in and holder.workdir is None
    caplog.clear()
    _champion(nowhere, tiny)
    with caplog.at_level(logging.WARNING, logger="ser.serve"):
        code, _, err = run_cli("serve")
    assert code == 0, err
    assert not _notices(caplog.text)
    holder = seen["app"].state.holder
    assert holder.model_dir is None and holder.workdir == Path("runs")


# ------------------------------------------------------------------------------------------------ on RAVDESS


@pytest.mark.shared_data
def test_bundled_model_is_far_above_chance_on_ravdess(ravdess_dir):
    """The bundled model was TRAINED on these very clips (all of RAVDESS, every actor), so this number is not an
    accuracy estimate (the held-out one is in its model card): the test guards the packaging — the right weights,
    labels, preprocessing and calibration ship and load with onnxruntime alone. A sample of 48 clips (2 per actor)."""
    from ser.inference import Predictor

    p = Predictor(bundled_dir())
    files = sorted(ravdess_dir.rglob("03-01-*.flac"))[::30]
    assert len(files) == 48
    truth = [RAVDESS8[int(f.name.split("-")[2]) - 1] for f in files]
    assert p.labels == RAVDESS8
    acc = sum(p.predict_file(f).label == t for f, t in zip(files, truth, strict=True)) / len(files)
    assert acc > 0.5  # chance is 0.125
