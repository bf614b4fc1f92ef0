"""Model cards (Markdown in the Hugging Face model-card format: YAML front matter, then sections).

:func:`render_card` is pure: metadata of the exported model + the evaluation → text. ``{{version}}`` is filled in
when the folder is registered.
"""

from __future__ import annotations

from typing import Any

import yaml


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f} %"


def _ci(ci: dict[str, Any], metric: str) -> str:
    c = (ci or {}).get(metric)
    if not c or c.get("low") is None:
        return ""
    return f" (95 % CI {_pct(c['low'])} – {_pct(c['high'])}, {ci.get('method', '')} bootstrap)"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def front_matter(meta: dict[str, Any], evaluation: dict[str, Any]) -> dict[str, Any]:
    training = meta.get("training", {})
    corpora = training.get("corpora", [])
    return {
        "library_name": "onnxruntime",
        "pipeline_tag": "audio-classification",
        "license": "other",
        "tags": ["speech-emotion-recognition", "audio-classification", "onnx", "ser"]
        + (["synthetic-data"] if training.get("synthetic") else []),
        "datasets": corpora,
        "metrics": ["balanced_accuracy", "accuracy", "f1"],
        "model-index": [
            {
                "name": meta.get("name", "ser-emotion"),
                "results": [
                    {
                        "task": {"type": "audio-classification", "name": "Speech emotion recognition"},
                        "dataset": {"name": ", ".join(corpora) or "unknown", "type": ", ".join(corpora) or "unknown"},
                        "metrics": [
                            {
                                "type": "balanced_accuracy",
                                "name": "UAR (mean over folds)",
                                "value": evaluation.get("uar"),
                            },
                            {
                                "type": "accuracy",
                                "name": "accuracy (mean over folds)",
                                "value": evaluation.get("accuracy"),
                            },
                        ],
                    }
                ],
            }
        ],
    }


def render_card(meta: dict[str, Any], evaluation: dict[str, Any], full: dict[str, Any], cfg: Any = None) -> str:
    """The model card of an exported model. ``meta``: its metadata.json; ``evaluation``: the evaluate stage's
    block (uar, ci, per fold, gaps); ``full``: the whole evaluation (pooled result, cv, fairness)."""
    result = full.get("result", {})
    lines = _header(meta, evaluation)
    lines += _model_details(meta)
    lines += _USES
    lines += _training_data(meta)
    lines += _evaluation(evaluation, result)
    lines += _per_class(result)
    lines += _per_group((full.get("fairness") or {}).get("attributes") or {})
    lines += _LIMITS_ETHICS_USAGE
    decision = meta.get("decision")
    if decision:
        lines += [*render_decision(decision).splitlines(), ""]
    return "\n".join(lines)


def render_decision(decision: dict[str, Any]) -> str:
    """The card's "Registry decision" section: champion or challenger and why; with a gate set, its size, the
    overlap found, both models' UAR on it and the CI of the difference (:func:`ser.jobs.release.gate_record`)."""
    lines = ["## Registry decision", "", f"**{decision.get('alias')}**: {decision.get('reason')}", ""]
    gate = decision.get("gate")
    if not gate:
        if decision.get("basis") == "cross-validation":
            lines += [
                "No gate set: the decision compared cross-validation evaluations of the same data and splits.",
                "",
            ]
        return "\n".join(lines).rstrip() + "\n"
    ov = gate.get("overlap") or {}
    sources = ", ".join(f"{k} {v}" for k, v in (gate.get("sources") or {}).items())
    lines += [
        f"Promotion gate: {gate.get('n')} held-out utterances set aside before training (speaker-disjoint share of "
        f"the new sources{': ' + sources if sources else ''}); {gate.get('n_unseen')} of them, from "
        f"{gate.get('speakers')} speakers, were seen by neither model (the champion trained on "
        f"{ov.get('champion_seen', 0)}, this model on {ov.get('candidate_seen', 0)}). Both scored with onnxruntime.",
        "",
    ]
    rows = []
    for who in ("candidate", "champion"):
        sc = decision.get(f"{who}_score")
        if sc:
            ci = sc.get("ci") or {}
            interval = f"{_pct(ci.get('low'))} – {_pct(ci.get('high'))}" if ci.get("low") is not None else "n/a"
            rows.append([f"{who} v{sc.get('version')}", _pct(sc.get("uar")), interval, _pct(sc.get("group_gap"))])
    if rows:
        lines += [*_table(["model", "gate UAR", "95 % CI", f"{gate.get('group')} UAR gap"], rows), ""]
    d = decision.get("uar_diff")
    if d:
        lines += [
            f"UAR difference (this model − champion): {100 * d['diff']:+.1f} points, 95 % CI "
            f"[{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] (paired speaker bootstrap, {d.get('n_boot')} resamples).",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def _header(meta: dict[str, Any], evaluation: dict[str, Any]) -> list[str]:
    lines = ["---", yaml.safe_dump(front_matter(meta, evaluation), sort_keys=False).strip(), "---", ""]
    lines += [f"# {meta.get('name', 'ser-emotion')} (version {{{{version}}}})", ""]
    if (meta.get("training") or {}).get("synthetic"):
        lines += [
            "> **Trained on the SYNTHETIC demo corpus** (signals made by code, not speech). It exists to show the",
            "> pipeline end to end; its numbers say nothing about real speech. Do not use it on real audio.",
            "",
        ]
    return lines


def _model_details(meta: dict[str, Any]) -> list[str]:
    labels = meta.get("labels", [])
    inp = meta.get("input", {})
    export = meta.get("export", {})
    stacked = "; the kinds stacked along the feature axis" if "+" in str(inp.get("kind")) else ""
    return [
        "A speech emotion recognition model: it takes a mono audio clip and returns a probability for each of "
        f"{len(labels)} emotions ({', '.join(labels)}).",
        "",
        "## Model details",
        "",
        _architecture(meta.get("model", {})),
        *_distilled(meta),
        f"- Input: {meta.get('sample_rate')} Hz mono audio → `{inp.get('kind')}` features "
        f"({inp.get('shape')}{stacked}); {_trim_text(inp)}, exactly as in training.",
        "- Format: ONNX (`model.onnx`, opset "
        f"{export.get('opset')}), run with onnxruntime; `metadata.json` holds the preprocessing. "
        f"ONNX vs PyTorch parity: max |Δlogit| {export.get('parity_max_abs_diff', float('nan')):.1e}.",
        f"- Code version: `{meta.get('code_version')}`; created {meta.get('created')}.",
        "",
    ]


_USES = [
    "## Intended use",
    "",
    "- Aggregate analysis of emotional tone in recorded or live speech (e.g. the share of angry speech over many "
    "customer calls, the emotional arc of a conversation), and emotion-aware interfaces that adapt softly.",
    "- Research and benchmarking of speech emotion recognition.",
    "",
    "## Out-of-scope uses",
    "",
    "- Decisions about individuals (hiring, credit, insurance, policing, health, performance reviews) and any "
    "use on people who have not been told and have not consented.",
    "- Lie detection, clinical diagnosis, or inferring feelings as facts: the model recognises *expressed* "
    "emotion in the voice, which may differ from what a person feels.",
    "- Covert monitoring of employees or the public.",
    "- Emotion recognition in the workplace or in education: the EU AI Act (Art. 5(1)(f)) prohibits it there "
    "except for medical or safety reasons, so an employee well-being use needs legal review where it applies.",
    "",
]


def _trim_text(inp: dict[str, Any]) -> str:
    """How the input's leading and trailing non-speech is trimmed (``input.trim``; absent = ``level``)."""
    trim = inp.get("trim", "level")
    if trim == "none":
        return "no silence trim"
    level = f"{inp.get('trim_db')} dB below the loudest frame"
    if trim == "vad":
        return f"trimmed to the first-to-last voiced frame (webrtcvad; no speech found: to {level})"
    return f"silence trimmed at {level}"


def _training_data(meta: dict[str, Any]) -> list[str]:
    training = meta.get("training", {})
    synthetic = bool(training.get("synthetic"))
    genders = ", ".join(f"{k}: {v}" for k, v in (training.get("speakers_by_gender") or {}).items())
    return [
        "## Training data",
        "",
        f"- Corpora: {', '.join(training.get('corpora', [])) or 'unknown'}"
        + (" (synthetic, made by `ser data synth`)" if synthetic else ""),
        f"- {training.get('utterances')} utterances, {training.get('speakers')} speakers ({genders}), "
        f"{training.get('hours')} hours.",
        f"- Label profile `{meta.get('label_profile')}`; utterances per class: "
        + ", ".join(f"{k} {v}" for k, v in (training.get("classes") or {}).items()),
        f"- The shipped model was trained on all these speakers, {training.get('final_model', {}).get('n_val')} "
        "utterances of whole held-out speakers kept for early stopping.",
        *_sources(meta),
        "",
    ]


def _sources(meta: dict[str, Any]) -> list[str]:
    sources = meta.get("data_sources") or []
    if not sources:
        return []
    parts = [
        f"{s.get('name')} ({s.get('corpus')}, {s.get('utterances')} utterances"
        + (
            f", {100 * s['gate_share']:.0f} % of its speakers held out for the promotion gate"
            if s.get("gate_share")
            else ""
        )
        + ")"
        for s in sources
    ]
    return [f"- Data version `{meta.get('data_version')}`; sources: " + "; ".join(parts) + "."]


def _evaluation(evaluation: dict[str, Any], result: dict[str, Any]) -> list[str]:
    ci = result.get("ci", {})
    pooled = result.get("metrics", {})
    ece = pooled.get("ece") if pooled.get("ece") is None else round(pooled["ece"], 4)
    return [
        "## Evaluation",
        "",
        f"Protocol: {evaluation.get('protocol')}. No speaker is on both sides of any split; augmentation touches "
        "training data only; validation speakers for early stopping come out of each training fold, so test "
        "speakers are seen only at the final prediction. UAR is the unweighted average recall (balanced accuracy).",
        "",
        f"- **UAR {_pct(evaluation.get('uar'))} ± {_pct(evaluation.get('uar_std'))}** (mean ± std over folds); "
        f"accuracy {_pct(evaluation.get('accuracy'))}.",
        f"- Pooled over all test predictions: UAR {_pct(pooled.get('uar'))}{_ci(ci, 'uar')}; accuracy "
        f"{_pct(pooled.get('accuracy'))}{_ci(ci, 'accuracy')}; macro F1 {_pct(pooled.get('macro_f1'))}; expected "
        f"calibration error {ece}.",
        "- UAR per fold: " + ", ".join(_pct(v) for v in evaluation.get("uar_per_fold") or []),
        *_calibration(evaluation.get("calibration")),
        "",
    ]


def _calibration(cal: dict[str, Any] | None) -> list[str]:
    if not cal:
        return []
    # The log-loss is what the temperature minimises; the binned ECE can rise while it falls (few clips per bin).
    nll = (
        f"; log-loss {cal['nll_before']:.4f} → {cal['nll_after']:.4f}"
        if cal.get("nll_before") is not None and cal.get("nll_after") is not None
        else ""
    )
    return [
        f"- Calibration: the served probabilities are temperature-scaled, T = {cal['temperature']:.3f} (fitted on "
        f"{cal['n']} out-of-fold predictions by minimising the NLL); expected calibration error "
        f"{cal['ece_before']:.4f} → {cal['ece_after']:.4f} ({cal['n_bins']} bins, {cal['after']}){nll}."
    ]


def _per_class(result: dict[str, Any]) -> list[str]:
    per_class = result.get("per_class") or []
    if isinstance(per_class, dict):  # {label: metrics}
        per_class = [{"class": k, **v} for k, v in per_class.items() if isinstance(v, dict)]
    rows = [
        [m.get("class"), *(_pct(m.get(k)) for k in ("precision", "recall", "f1")), m.get("support")]
        for m in per_class
        if isinstance(m, dict)
    ]
    if not rows:
        return []
    return ["### Per class", "", *_table(["emotion", "precision", "recall", "F1", "support"], rows), ""]


def _per_group(attrs: dict[str, Any]) -> list[str]:
    if not attrs:
        return []
    rows = [
        [attr, g["group"], _pct(g.get("uar")), _pct(g.get("accuracy")), g.get("count")]
        for attr, block in attrs.items()
        for g in block.get("groups", [])
    ]
    gaps = ", ".join(
        f"{a}: {_pct(v['gap']['uar'])}" for a, v in attrs.items() if v.get("gap", {}).get("uar") is not None
    )
    return [
        "### Per group",
        "",
        *_table(["attribute", "group", "UAR", "accuracy", "utterances"], rows),
        "",
        f"Largest UAR gap between groups: {gaps or 'n/a (fewer than two groups)'}.",
        "",
    ]


_LIMITS_ETHICS_USAGE = [
    "### Confusion matrix",
    "",
    "![confusion matrix](confusion_matrix.png)",
    "",
    "## Known limitations",
    "",
    "- Acted speech: emotions in the training corpora are portrayed by actors, stronger and cleaner than in real "
    "calls; expect lower accuracy on spontaneous speech, telephone bandwidth, noise and overlapping talk.",
    "- Language and culture: trained on the languages and speakers listed above (RAVDESS is North-American "
    "English; EmoDB German); expression of emotion differs across languages and cultures.",
    "- Few speakers: a handful of speakers per gender; per-group numbers above have wide uncertainty.",
    "- Fixed label set: anything else (e.g. boredom, contempt) is forced into one of the classes.",
    "",
    "## Ethical considerations",
    "",
    "- Emotion is personal data in many jurisdictions (GDPR special-category risk when linked to health). Tell "
    "people, get consent, keep audio only as long as needed (the service stores none by default).",
    "- Check the per-group gaps on your own population before deployment and monitor them in production.",
    "- Show probabilities and uncertainty to people, not only a label; let people contest outcomes.",
    "",
    "## How to use",
    "",
    "```bash",
    "ser predict clip.wav --model path/to/this/folder",
    "ser serve --model path/to/this/folder   # POST /v1/predict",
    "```",
    "",
]


def _distilled(meta: dict[str, Any]) -> list[str]:
    """One line for a model trained by knowledge distillation (its recipe's ``distil`` part); none otherwise."""
    distil = (meta.get("recipe") or {}).get("distil")
    if not distil:
        return []
    k = distil.get("cross_fit") or 0
    targets = (
        f"its targets out-of-fold (the training speakers in {k} groups, each labelled by a teacher trained on the "
        "others)"
        if k
        else "the teacher trained on the same training speakers"
    )
    return [
        f"- Distilled (Hinton et al., 2015) from the `{distil.get('teacher')}` recipe (alpha {distil.get('alpha')}, "
        f"temperature {distil.get('temperature')}): {targets}, and this model trained towards its outputs as well as "
        "the labels. Only this model ships; it runs at its own cost."
    ]


def _architecture(model: dict[str, Any]) -> str:
    """One line on the architecture; an ensemble names its members instead of dumping their nested parameters."""
    n_params = model.get("n_params", "?")
    size = f"{n_params:,} parameters" if isinstance(n_params, int) else "? parameters"
    params = model.get("params") or {}
    if model.get("name") == "ensemble" and params.get("members"):
        members = params["members"]
        rows = params.get("rows")
        if rows is None and len({m["name"] for m in members}) == 1:
            return (
                f"- Architecture: an ensemble of {len(members)} `{members[0]['name']}` models whose class "
                f"probabilities are averaged (weights {params.get('weights')}; {size} in all); member parameters "
                f"`{members[0].get('params')}`."
            )
        rows = rows or [None] * len(members)
        parts = [
            f"`{m['name']}`" + (f" on input rows {r[0]}-{r[1] - 1}" if r else "")
            for m, r in zip(members, rows, strict=True)
        ]
        return (
            f"- Architecture: an ensemble of {len(members)} models ({', '.join(parts)}) whose class probabilities "
            f"are averaged (weights {params.get('weights')}; {size} in all)."
        )
    return f"- Architecture: `{model.get('name')}` ({size}), parameters `{params}`."


ADAPTATION_HEADING = "## Adaptation to a deployment"


def render_adaptation(info: dict[str, Any]) -> str:
    """The model card's adaptation section from ``metadata.json["adaptation"]`` (:class:`ser.jobs.adapt.AdaptJob`)."""
    base = info.get("base") or {}
    skipped = int(info.get("skipped", 0))
    if info.get("method") == "batchnorm":
        return "\n".join(
            [
                ADAPTATION_HEADING,
                "",
                f"This folder is **adapted** to `{info.get('target')}` by AdaBN (Li et al., 2016): the mean and "
                f"variance of each of the graph's {info.get('layers')} batch-norm layers were re-estimated, layer "
                f"after layer, on the model inputs of {info.get('files')} unlabelled file(s), "
                f"{float(info.get('seconds', 0.0)):.1f} s of audio under `{info.get('target_audio')}`"
                + (f" ({skipped} file(s) skipped, reasons in `adaptation.json`)" if skipped else "")
                + f", on {info.get('created')}; every learned weight is unchanged. The layer means moved by "
                f"{float(info.get('mean_shift_sd', 0.0)):.2f} training standard deviations on average (per layer "
                "in `adaptation.json`).",
                "",
                f"Adapted from {base.get('name', '?')} version {base.get('version', '?')}. The evaluation above (and "
                "the calibration temperature and reference profile) are the unadapted model's on its training "
                "corpus; the adapted model was not scored on labelled target audio here.",
                "",
            ]
        )
    rows = info.get("rows") or [0, 0]
    return "\n".join(
        [
            ADAPTATION_HEADING,
            "",
            f"This folder is **adapted** to `{info.get('target')}`: per-row statistics of the log-mel input rows "
            f"{rows[0]}–{rows[1] - 1} were estimated without labels from {info.get('files')} file(s), "
            f"{float(info.get('seconds', 0.0)):.1f} s of audio under `{info.get('target_audio')}`"
            + (f" ({skipped} file(s) skipped, reasons in `adaptation.json`)" if skipped else "")
            + f", on {info.get('created')}. Serving maps each of those rows from the deployment's mean and deviation "
            f"onto the training data's ({info.get('source')}) before the model: `(x - mu_t) / sd_t * sd_s + mu_s`.",
            "",
            f"Adapted from {base.get('name', '?')} version {base.get('version', '?')}. The evaluation above is the "
            "unadapted model's on its training corpus; the adaptation was not scored on labelled target audio here. "
            "A model that standardises each clip's rows itself (`input_norm: utterance`) is invariant to this map.",
            "",
        ]
    )


def with_adaptation(card: str, info: dict[str, Any]) -> str:
    """``card`` with its adaptation section (:func:`render_adaptation`) replaced or appended."""
    head, sep, rest = card.partition(ADAPTATION_HEADING)
    tail = ""
    if sep:  # keep what followed the old section (the next ``## `` heading on)
        nxt = rest.find("\n## ")
        tail = rest[nxt + 1 :] if nxt >= 0 else ""
    return head.rstrip() + "\n\n" + render_adaptation(info) + ("\n" + tail if tail else "")
