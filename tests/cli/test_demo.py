"""The README's main job: ``ser demo`` runs the data layer end to end on the synthetic corpus."""

from __future__ import annotations

import json

import pandas as pd

from ser.data.split import check_leakage


def test_demo_end_to_end(run_cli, tmp_path):
    code, out, err = run_cli("demo", "--out", tmp_path, "--speakers", "4", "--kfold", "2", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["synthetic"] is True and summary["corpora"] == ["synthetic"]
    assert summary["files"] == 4 * 32 and summary["speakers"] == 4 and summary["leakage_guard"] == "passed"
    splits = pd.read_parquet(summary["outputs"]["splits"])
    check_leakage(splits)
    assert splits["fold"].nunique() == 2
    report = json.loads((tmp_path / "validated" / "report.json").read_text())
    assert report["checked"] == 128
