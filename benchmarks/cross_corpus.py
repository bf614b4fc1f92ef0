"""Cross-corpus evaluation on the real corpora: train on RAVDESS, test on EmoDB and the other way round, through
the 4-class profile (angry / happy / neutral(+calm) / sad).

Usage: ``.venv/bin/python benchmarks/cross_corpus.py [--model classical] [--workers 2]``.
Writes ``benchmarks/results/cross_corpus.json`` and the matching section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time

from _common import HERE, RESULTS_DIR, SHARED, machine, replace_section
from ser.data.ingest import ingest
from ser.data.validate import validate
from ser.train.crosscorpus import cross_corpus
from ser.train.recipes import get_recipe

RESULTS_JSON = RESULTS_DIR / "cross_corpus.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="RAVDESS <-> EmoDB cross-corpus evaluation (4 classes)")
    ap.add_argument("--model", default="classical")
    ap.add_argument("--profile", default="four")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--normalize", default="none,corpus", help="comma-separated: none, corpus")
    args = ap.parse_args(argv)
    runs = HERE / "runs" / "cross_corpus"
    corpora = {}
    for name in ("ravdess", "emodb"):
        corpora[name] = validate(ingest(name, SHARED / name, workers=args.workers).manifest).manifest
    spec = get_recipe(args.model)
    rows = []
    pairs = [(n, tr, te) for n in args.normalize.split(",") for tr, te in (("ravdess", "emodb"), ("emodb", "ravdess"))]
    for norm, train, test in pairs:
        t0 = time.perf_counter()
        res = cross_corpus(
            corpora[train],
            corpora[test],
            spec,
            profile=args.profile,
            out_dir=runs / f"{args.model}-{train}-to-{test}-{norm}",
            normalize=norm,
            cache_dir=HERE / "runs" / "feature_cache",
            workers=args.workers,
            progress=True,
        )
        res["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(res)
        print(f"{train} → {test} ({norm}): UAR {100 * res['uar']:.1f} % (chance {100 * res['chance_uar']:.0f} %)")
    out = {"runs": rows, "machine": machine(), "date": dt.date.today().isoformat()}
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "## Cross-corpus (RAVDESS ↔ EmoDB, 4 classes)",
        "",
        f"Machine: {out['machine']}. Date: {out['date']}. Produced by `benchmarks/cross_corpus.py`. Profile "
        f"`{args.profile}` (angry, happy, neutral + calm, sad); validation speakers from the training corpus only. "
        "Per-corpus standardisation uses no labels (each corpus' own feature means and deviations).",
        "",
        "| model | train → test | features | test utts | UAR (95 % CI) | accuracy | chance UAR | recall per class |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = r["ci"]["uar"] or {}
        lines.append(
            f"| {r['model']} | {'+'.join(r['train_corpora'])} → {'+'.join(r['test_corpora'])} | "
            f"{'standardised per corpus' if r['normalize'] == 'corpus' else 'as extracted'} | {r['n_test']} | "
            f"{100 * r['uar']:.1f} % ({100 * ci.get('low', float('nan')):.1f}–{100 * ci.get('high', float('nan')):.1f})"
            f" | {100 * r['accuracy']:.1f} % | {100 * r['chance_uar']:.0f} % | "
            + ", ".join(f"{k} {100 * v:.0f} %" for k, v in r["per_class_recall"].items())
            + " |"
        )
    replace_section("## Cross-corpus", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
