"""Cross-corpus evaluation on the real corpora (RAVDESS ↔ EmoDB, the 4-class profile: angry / happy / neutral(+calm)
/ sad).

``--model classical`` (default): the SVM on functionals, both directions, features as extracted and standardised
per corpus (:func:`ser.train.crosscorpus.cross_corpus`).

``--model <torch recipe or ensemble>`` (``cnn``, ``cnn+crnn+rnn``, ...): both directions, each with and without
unsupervised target-domain adaptation (:func:`ser.train.crosscorpus.neural_cross_corpus`: the log-mel input rows
mapped from the test corpus' statistics, estimated on its own unlabelled audio, onto the training corpus'; what
``ser model adapt`` writes into a model folder), plus joint training on both corpora pooled with speaker-independent
folds, scored on each corpus's held-out speakers (:func:`ser.train.crosscorpus.joint_corpus`). Every number has a
95 % speaker-bootstrap CI.

Cut runs for screening: ``--epochs N`` (train N epochs instead of the recipe's), ``--limit N`` (a seeded sample of
N clips per corpus), ``--folds N`` (the first N of the ``--k`` joint folds). A cut run is stored under
``<model>@cut`` with what was cut, and its section says so; it never replaces a full run's record.

Usage::

    .venv/bin/python benchmarks/cross_corpus.py [--model classical] [--workers 2]
    .venv/bin/python benchmarks/cross_corpus.py --model cnn                      # full: both directions + joint
    .venv/bin/python benchmarks/cross_corpus.py --model cnn --epochs 1 --limit 150 --folds 1   # a cut check
    .venv/bin/python benchmarks/cross_corpus.py --model cnn-robust --executor ray --threads 1  # joint folds 2 at once

Writes ``benchmarks/results/cross_corpus.json`` (``runs``: the classical rows; ``neural``: one entry per recipe) and
the matching section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from _common import HERE, NOISE_DIR, RESULTS_DIR, SHARED, machine, replace_section
from ser.cli._executor_opts import EXECUTOR_HELP, RAY_ADDRESS_HELP, make_executor
from ser.data.ingest import ingest
from ser.data.validate import validate
from ser.executor import RAY_LOCAL
from ser.jobs.train import FeatureSource
from ser.train.crosscorpus import ADAPT_MODES, cross_corpus, joint_corpus, neural_cross_corpus
from ser.train.recipes import get_recipe

RESULTS_JSON = RESULTS_DIR / "cross_corpus.json"
HEADING = "## Cross-corpus"
PAIRS = (("ravdess", "emodb"), ("emodb", "ravdess"))


def _load() -> dict[str, Any]:
    return json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.is_file() else {}


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _ci(r: dict[str, Any], metric: str) -> str:
    c = (r.get("ci") or {}).get(metric) or {}
    return f"{_pct(r[metric])} % ({_pct(c.get('low'))}–{_pct(c.get('high'))})"


def _recalls(r: dict[str, Any]) -> str:
    return ", ".join(f"{k} {'n/a' if v is None else f'{100 * v:.0f} %'}" for k, v in r["per_class_recall"].items())


def classical_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| model | train → test | features | test utts | UAR (95 % CI) | accuracy | chance UAR | recall per class |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {'+'.join(r['train_corpora'])} → {'+'.join(r['test_corpora'])} | "
            f"{'standardised per corpus' if r['normalize'] == 'corpus' else 'as extracted'} | {r['n_test']} | "
            f"{_ci(r, 'uar')} | {100 * r['accuracy']:.1f} % | {100 * r['chance_uar']:.0f} % | {_recalls(r)} |"
        )
    return lines


def neural_lines(key: str, entry: dict[str, Any]) -> list[str]:
    cut = entry.get("cut")
    lines = [f"### {entry['model']}{' — CUT RUN' if cut else ''}", ""]
    if cut:
        lines += [
            f"> **Cut run** ({', '.join(f'{k} {v}' for k, v in cut.items())}): it checks that the benchmark goes "
            "through end to end; its numbers are not findings.",
            "",
        ]
    command = entry.get("command") or (
        f"benchmarks/cross_corpus.py --model {entry['model']}" + "".join(f" --{k} {v}" for k, v in (cut or {}).items())
    )
    took = f"{entry['seconds']:.0f} s" + (
        ", resumed: an earlier invocation trained part of it" if entry.get("resumed") else ""
    )
    lines += [
        f"Machine: {entry['machine']}. Date: {entry['date']}. `{command}` ({took}). Stored as `neural[{key!r}]` in "
        "`results/cross_corpus.json`.",
        "",
        "| train → test | adaptation | test utts (speakers) | UAR (95 % CI) | accuracy (95 % CI) | Δ UAR vs none "
        "(paired 95 % CI) | recall per class |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in entry["cross_corpus"]:
        g = (r.get("gain_vs_none") or {}).get("uar")
        gain = "—" if g is None else f"{100 * g['diff']:+.1f} ({100 * g['low']:+.1f} to {100 * g['high']:+.1f})"
        adapt = {"target": "target statistics", "batchnorm": "AdaBN"}.get(r["adaptation"], "none")
        lines.append(
            f"| {'+'.join(r['train_corpora'])} → {'+'.join(r['test_corpora'])} | {adapt} | "
            f"{r['n_test']} ({r['test_speakers']}) | {_ci(r, 'uar')} | {_ci(r, 'accuracy')} | {gain} | {_recalls(r)} |"
        )
    if entry.get("joint"):
        j0 = entry["joint"][0]
        folds = f"folds {', '.join(str(f) for f in j0['folds'])} of {j0['k']}"
        lines += [
            "",
            f"Joint training on {' + '.join(j0['train_corpora'])} pooled, speaker-independent ({folds}; each fold "
            "holds out speakers of both corpora), scored on each corpus's held-out speakers:",
            "",
            "| test corpus | test utts (speakers) | UAR (95 % CI) | accuracy (95 % CI) | recall per class |",
            "|---|---|---|---|---|",
        ]
        for r in entry["joint"]:
            lines.append(
                f"| {r['test_corpus']} | {r['n_test']} ({r['test_speakers']}) | {_ci(r, 'uar')} | "
                f"{_ci(r, 'accuracy')} | {_recalls(r)} |"
            )
    else:
        lines += ["", "Joint training: not run for this record (`--no-joint`)."]
    return [*lines, ""]


def render(data: dict[str, Any]) -> str:
    lines = [
        "## Cross-corpus (RAVDESS ↔ EmoDB, 4 classes)",
        "",
        "Produced by `benchmarks/cross_corpus.py`. Profile `four` (angry, happy, neutral + calm, sad); validation "
        "speakers from the training corpus only; 95 % CIs are speaker-level bootstraps.",
        "",
    ]
    if data.get("runs"):
        lines += [
            f"**Classical** (`--model classical`). Machine: {data.get('machine')}. Date: {data.get('date')}. "
            "Per-corpus standardisation uses no labels (each corpus' own feature means and deviations).",
            "",
            *classical_lines(data["runs"]),
            "",
        ]
    if data.get("neural"):
        lines += [
            "**Neural recipes** (`--model <recipe>`). *Adaptation: target statistics* maps the model's log-mel input "
            "rows from the test corpus' per-row mean and deviation onto the training corpus' (what `ser model adapt` "
            "writes into a model folder). The target statistics are estimated on the **test corpus's own unlabelled "
            "audio** — the transductive setting a deployment has (its own recordings, no labels) — and the training "
            "side on the training corpus, both on the trimmed model inputs with the functions `ser model adapt` uses "
            "(`ser.adaptation`). Δ UAR is the "
            "paired speaker-bootstrap difference to the same model unadapted. Recipes whose models standardise each "
            "clip's rows themselves (`input_norm: utterance`: `cnn`, `crnn`, `rnn`) are invariant to this map by "
            "construction, so for them Δ ≈ 0 is expected; members on MFCC are not mapped. *Adaptation: AdaBN* "
            "re-estimates every batch-norm layer's mean and variance in the exported graph, layer after layer, on "
            "the test corpus' own unlabelled model inputs (what `ser model adapt --method batchnorm` does; "
            "`ser.adabn`); it acts on utterance-normalised models too. A speaker-disjoint AdaBN measurement is the "
            '"Target-domain adaptation (AdaBN)" section (`benchmarks/adabn.py`).',
            "",
        ]
        full = {k: v for k, v in data["neural"].items() if not v.get("cut")}
        cut = {k: v for k, v in data["neural"].items() if v.get("cut")}
        for key, entry in [*full.items(), *cut.items()]:
            lines += neural_lines(key, entry)
    return "\n".join(lines).rstrip() + "\n"


def load_corpora(workers: int, limit: int | None, seed: int) -> dict[str, Any]:
    corpora = {}
    for name in ("ravdess", "emodb"):
        m = validate(ingest(name, SHARED / name, workers=workers).manifest).manifest
        if limit is not None and len(m) > limit:
            m = m.sample(n=limit, random_state=seed).sort_values("utt_id").reset_index(drop=True)
        corpora[name] = m
    return corpora


def run_classical(args: argparse.Namespace, data: dict[str, Any]) -> None:
    runs = HERE / "runs" / "cross_corpus"
    corpora = load_corpora(args.workers, None, args.seed)
    spec = get_recipe(args.model)
    rows = []
    for norm in args.normalize.split(","):
        for train, test in PAIRS:
            t0 = time.perf_counter()
            res = cross_corpus(
                corpora[train],
                corpora[test],
                spec,
                profile=args.profile,
                out_dir=runs / f"{args.model}-{train}-to-{test}-{norm}",
                normalize=norm,
                cache_dir=args.cache_dir,
                workers=args.workers,
                progress=True,
            )
            res["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(res)
            print(f"{train} → {test} ({norm}): UAR {100 * res['uar']:.1f} % (chance {100 * res['chance_uar']:.0f} %)")
    data.update(runs=rows, machine=machine(), date=dt.date.today().isoformat())


def run_neural(args: argparse.Namespace, data: dict[str, Any]) -> None:
    import torch

    torch.set_num_threads(args.threads)
    cut = {k: getattr(args, k) for k in ("epochs", "limit") if getattr(args, k) is not None}
    if args.folds is not None and args.folds < args.k:
        cut["folds"] = args.folds
    overrides = {"train": {"epochs": args.epochs}} if args.epochs is not None else None
    spec = get_recipe(args.model, overrides)
    key = f"{args.model}@cut" if cut else args.model
    # a cut run's models are kept by what was cut: another --limit or --epochs never resumes them
    runs = HERE / "runs" / "cross_corpus" / "-".join([args.model, *(f"{k}{v}" for k, v in cut.items())])
    resumed = runs.is_dir() and any(runs.iterdir())  # an earlier invocation left models: its seconds are not here
    corpora = load_corpora(args.workers, args.limit, args.seed)
    modes = tuple(args.adapt.split(","))
    # a robust recipe's training variants: the training noises, cached beside the features (training rows only)
    variants_of = FeatureSource(
        cache_dir=args.cache_dir, workers=args.workers, progress=True, noise_dir=NOISE_DIR
    ).variants
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for train, test in PAIRS:
        t0 = time.perf_counter()
        got = neural_cross_corpus(
            corpora[train],
            corpora[test],
            spec,
            profile=args.profile,
            out_dir=runs / f"{train}-to-{test}",
            cache_dir=args.cache_dir,
            workers=args.workers,
            seed=args.seed,
            n_boot=args.n_boot,
            modes=modes,
            progress=True,
            variants_for=variants_of,
        )
        for r in got:
            r["seconds"] = round(time.perf_counter() - t0, 1)
            print(f"{train} → {test} (adaptation {r['adaptation']}): UAR {100 * r['uar']:.1f} %")
        rows += got
    joint: list[dict[str, Any]] = []
    if args.joint:
        folds = list(range(args.folds if args.folds is not None else args.k))
        joint = joint_corpus(
            corpora,
            spec,
            profile=args.profile,
            k=args.k,
            folds=folds,
            out_dir=runs / "joint",
            cache_dir=args.cache_dir,
            workers=args.workers,
            seed=args.seed,
            n_boot=args.n_boot,
            progress=True,
            variants_for=variants_of,
            executor=make_executor(args.executor, args.ray_address, args.threads),
        )
        for r in joint:
            print(f"joint → {r['test_corpus']}: UAR {100 * r['uar']:.1f} %")
    data.setdefault("neural", {})[key] = {
        "model": args.model,
        "command": args.command,
        "resumed": resumed,
        "cut": cut or None,
        "adaptation_modes": list(modes),
        "cross_corpus": rows,
        "joint": joint,
        "seed": args.seed,
        "n_boot": args.n_boot,
        "machine": machine(),
        "date": dt.date.today().isoformat(),
        "seconds": round(time.perf_counter() - t_start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="RAVDESS <-> EmoDB cross-corpus evaluation (4 classes)")
    ap.add_argument("--model", default="classical", help="classical, or a torch recipe / ensemble (cnn, cnn+crnn+rnn)")
    ap.add_argument("--profile", default="four")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-boot", type=int, default=1000, help="speaker-bootstrap resamples of the 95 %% CIs")
    ap.add_argument("--cache-dir", default=str(HERE / "runs" / "feature_cache"))
    ap.add_argument("--normalize", default="none,corpus", help="classical: comma-separated none, corpus")
    ap.add_argument("--adapt", default=",".join(ADAPT_MODES), help="neural: comma-separated none, target, batchnorm")
    ap.add_argument("--no-joint", dest="joint", action="store_false", help="neural: skip the joint training")
    ap.add_argument("--k", type=int, default=5, help="neural: joint speaker folds per corpus")
    ap.add_argument("--folds", type=int, default=None, help="cut: run only the first N joint folds")
    ap.add_argument("--epochs", type=int, default=None, help="cut: train N epochs instead of the recipe's")
    ap.add_argument("--limit", type=int, default=None, help="cut: a seeded sample of N clips per corpus")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (--executor ray: per joint fold)")
    ap.add_argument("--executor", default="local", help=f"neural: {EXECUTOR_HELP} (the joint folds)")
    ap.add_argument("--ray-address", default=RAY_LOCAL, help=RAY_ADDRESS_HELP)
    args = ap.parse_args(argv)
    args.command = "benchmarks/cross_corpus.py " + " ".join(sys.argv[1:] if argv is None else argv)
    make_executor(args.executor, args.ray_address, args.threads)  # a bad option fails here, before any work
    data = _load()
    if args.model == "classical":
        run_classical(args, data)
    else:
        run_neural(args, data)
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_JSON.write_text(json.dumps(data, indent=2) + "\n")
    replace_section(HEADING, render(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
