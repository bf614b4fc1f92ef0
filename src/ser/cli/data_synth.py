"""``ser data synth``: the synthetic demo corpus (RAVDESS layout, clearly marked synthetic)."""

from __future__ import annotations

from pathlib import Path

import typer

from ser.cli._apps import console, data_app, print_json


@data_app.command("synth")
def synth_cmd(
    out: Path = typer.Option(..., "--out", help="output folder"),
    speakers: int = typer.Option(8, "--speakers"),
    per_emotion: int = typer.Option(4, "--per-emotion", help="utterances per emotion and speaker (1-4)"),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Write a synthetic, emotion-dependent, speech-like demo corpus made by code (no downloads).

    Example: ser data synth --out out/synth
    """
    from ser.data.synth import synthesize

    root = synthesize(out, n_speakers=speakers, per_emotion=per_emotion, seed=seed)
    n = len(list(root.glob("Actor_*/*.wav")))
    if as_json:
        print_json({"corpus": str(root), "files": n, "speakers": speakers, "synthetic": True})
    else:
        console.print(f"SYNTHETIC demo corpus: {n} files, {speakers} speakers → {root}")
