"""``ser model evaluate``: a registered version scored with onnxruntime on a labelled manifest → the report."""

from __future__ import annotations

import json

import pytest

from tests.conftest import export_tiny_model


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A workdir (``root/wd``) with one registered tiny model."""
    from ser import registry

    root = tmp_path_factory.mktemp("model-evaluate")
    folder = export_tiny_model(root / "exported", label_profile="ravdess8")
    registry.add_version(root / "wd", folder)
    return root


@pytest.fixture(scope="module")
def setup(registered):
    """The registered model, and a synthetic manifest (parquet) and CSV of labelled clips."""
    from ser.data.synth import synthesize
    from ser.jobs.data import IngestJob

    root = registered
    corpus = synthesize(root / "corpus", n_speakers=2, per_emotion=1, seed=2)
    ing = IngestJob("ravdess", corpus, root / "m").run()
    rows = ing.result.manifest
    csv = root / "labels.csv"
    rows.assign(label=rows["emotion"])[["path", "label", "speaker", "gender"]].to_csv(csv, index=False)
    return root, ing.manifest, csv


@pytest.mark.slow
@pytest.mark.parametrize("which", ["parquet", "csv"])
def test_model_evaluate_writes_the_report_and_the_confusion_matrix(setup, run_cli, which):
    root, manifest, csv = setup
    out = root / f"report-{which}"
    src = manifest if which == "parquet" else csv
    code, stdout, err = run_cli(
        "model", "evaluate", "ser-emotion/1", "--manifest", src, "--out", out, "--workdir", root / "wd",
        "--n-boot", "50", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["n"] == 16 and summary["speakers"] == 2 and 0 <= summary["uar"] <= 1
    assert summary["ci"]["method"] == "speaker" and summary["ci"]["n_boot"] == 50
    for name in ("report.md", "metrics.json", "confusion_matrix.png", "reliability.png", "predictions.parquet"):
        assert (out / name).is_file(), name
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["n"] == 16 and "gender" in metrics["fairness"]["attributes"]
    report = (out / "report.md").read_text()
    assert "## Per class" in report and "## Per group" in report and "onnxruntime" in report


@pytest.mark.slow
def test_model_evaluate_takes_a_folder_and_an_alias(setup, run_cli):
    root, manifest, _ = setup
    folder = root / "wd" / "registry" / "ser-emotion" / "1"
    out = root / "r-folder"
    code, _, err = run_cli("model", "evaluate", folder, "--manifest", manifest, "--out", out, "--n-boot", "0")
    assert code == 0, err
    assert (out / "report.md").is_file()
    from ser import registry

    registry.set_alias(root / "wd", "ser-emotion", "champion", 1, "test")
    code, out, err = run_cli(
        "model", "evaluate", "ser-emotion@champion", "--manifest", manifest, "--out", root / "r-alias",
        "--workdir", root / "wd", "--n-boot", "0",
    )  # fmt: skip
    assert code == 0, err
    assert "UAR" in out and (root / "r-alias" / "confusion_matrix.png").is_file()


def test_bad_ref_or_manifest_is_a_one_line_error(registered, run_cli, tmp_path):
    root = registered
    manifest = tmp_path / "some.parquet"
    wd = ["--workdir", root / "wd", "--out", tmp_path / "o"]
    cases = [
        (["ser-emotion/9", "--manifest", manifest], "not registered"),
        (["no way", "--manifest", manifest], "bad model reference"),
        (["ser-emotion/1", "--manifest", tmp_path / "missing.parquet"], "manifest not found"),
    ]
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,emotion\nx.wav,angry\n")
    cases.append((["ser-emotion/1", "--manifest", bad_csv], "lacks column(s) label, path"))
    not_parquet = tmp_path / "m.parquet"
    not_parquet.write_text("not parquet")
    cases.append((["ser-emotion/1", "--manifest", not_parquet], "cannot read manifest"))
    for args, why in cases:
        code, _, err = run_cli("model", "evaluate", *args, *wd)
        assert code == 2, (args, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and why in lines[0], (args, err)
    assert not (tmp_path / "o").exists()
