"""``ser features ...``: feature extraction over a manifest, through the feature cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ser.cli._apps import app, console, print_json, require_file
from ser.errors import SerError

features_app = typer.Typer(
    help="Acoustic features: frame features → utterance functionals, cached by content hash.", no_args_is_help=True
)
app.add_typer(features_app, name="features")


@features_app.command("extract")
def extract_cmd(
    manifest: Path = typer.Argument(..., help="manifest Parquet file (from `ser data ingest`)"),
    out: Path = typer.Option(..., "--out", "-o", help="output folder for functionals.parquet and features.json"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML of FeatureConfig fields (default: built-in)"),
    cache: Path | None = typer.Option(None, "--cache", help="feature cache folder [default: OUT/cache]"),
    kind: list[str] = typer.Option(
        ["functionals"], "--kind", "-k", help="utterance-level kind: functionals, egemaps, compare (repeatable)"
    ),
    workers: int | None = typer.Option(None, "--workers", "-w", min=1, help="worker processes [default: min(CPUs, 2)]"),
    no_cache: bool = typer.Option(False, "--no-cache", help="compute everything, read and write no cache"),
    frame_cache: bool = typer.Option(
        True, "--frame-cache/--no-frame-cache", help="also cache frame features (lets parameter changes reuse them)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON (no progress bar)"),
) -> None:
    """Extract utterance features for every manifest row; a second run reads them from the cache.

    Writes OUT/functionals.parquet (utt_id + one column per feature; OUT/egemaps.parquet etc. for other kinds)
    and OUT/features.json (configuration, hashes, counts, cache hits/misses, seconds, failures). Files that
    cannot be decoded are listed as failures; the run fails only if none extracts.

    Example: ser features extract data/manifest.parquet --out features/ --workers 2
    """
    from ser.data.schema import read_manifest
    from ser.features import TABLE_KINDS, load_config
    from ser.features.extract import extract_manifest
    from ser.io import write_json, write_parquet

    require_file(manifest, "manifest")
    for k in kind:
        if k not in TABLE_KINDS:
            raise SerError(f"--kind must be one of {', '.join(TABLE_KINDS)}, got {k!r}")
    if out.exists() and not out.is_dir():
        raise SerError(f"--out is not a folder: {out}")
    cfg = load_config(config)
    frame = read_manifest(manifest)
    cache_dir = None if no_cache else (cache or out / "cache")
    result = extract_manifest(
        frame, cfg, cache_dir, kinds=tuple(kind), workers=workers, progress=not as_json, cache_frames=frame_cache
    )
    if result.n_utterances and not result.features:
        first = result.failures[0]
        raise SerError(f"no utterance could be extracted ({len(result.failures)} failed; first: {first['reason']})")
    out.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for k, table in result.tables.items():
        target = out / f"{k}.parquet"
        write_parquet(target, table.reset_index())
        outputs[k] = str(target)
    summary: dict[str, Any] = {
        "manifest": str(manifest),
        "cache": str(cache_dir) if cache_dir else None,
        "outputs": outputs,
    }
    summary.update(result.summary())
    write_json(out / "features.json", summary)
    if as_json:
        print_json(summary)
        return
    counts = summary["counts"]
    console.print(
        f"[bold]features[/bold] {counts['extracted']}/{counts['utterances']} utterances, "
        + ", ".join(f"{k}: {n} values" for k, n in summary["n_features"].items())
        + f", {summary['seconds']:.1f} s"
    )
    hit_total, miss_total = sum(result.hits.values()), sum(result.misses.values())
    console.print(
        f"cache {cache_dir or 'off'}: {hit_total} hit(s), {miss_total} computed"
        + (f" ({_fmt(result.misses)})" if result.misses else "")
        + (f", {sum(result.corrupt.values())} unreadable cache entries recomputed" if result.corrupt else "")
    )
    if result.failures:
        console.print(f"[yellow]{len(result.failures)} failure(s)[/yellow] (listed in {out / 'features.json'}):")
        for f in result.failures[:10]:
            console.print(f"  {f['path']}: {f['reason']}", markup=False, highlight=False)
    for path in outputs.values():
        console.print(f"wrote {path}", markup=False, highlight=False)


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
