"""Release jobs: a trained torch model → ONNX model folder (parity-checked) → model card → registry version, with
the champion / challenger gate, the MLflow mirror and optional publishing to a URI.

Used by the pipeline's ``export``, ``card`` and ``register`` stages (``ser model promote|rollback`` change aliases
by hand through :mod:`ser.registry`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ser.errors import SerError


def model_input(final: dict[str, Any], input_spec: dict[str, Any] | None) -> dict[str, Any]:
    """The shipped model's input (frame ``kind``, ``trim`` and ``trim_db``) from a train record; records from before
    ensembles over several feature kinds name it through their first member's spec, records from before the
    ``trim`` option were level-trimmed."""
    inp = final.get("input")
    if inp is None:
        from ser.train.spec import ModelSpec

        first = ModelSpec.model_validate(input_spec)
        inp = {"kind": first.features, "trim": first.trim, "trim_db": first.trim_db}
    return {"trim": "level", **inp}


@dataclass(frozen=True)
class ExportJob:
    """``model_path`` (a saved torch model) → ONNX model folder ``out`` with its preprocessing and provenance.

    ``final``: the shipped model's training facts (input kind, trimming, evaluation windows); ``parity_feats``:
    frame features ``{kind: array}`` of a few real clips the ONNX graph is checked on against PyTorch.
    """

    model_path: Path
    out: Path
    final: dict[str, Any]
    feature_config: Any
    input_spec: dict[str, Any] | None = None
    parity_feats: list[dict[str, np.ndarray]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def run(self) -> tuple[Path, float, int]:
        """``(model folder, ONNX parity max |Δlogit|, number of parity clips)``."""
        from ser.export import write_model_folder
        from ser.model_folder import frame_input, read_metadata
        from ser.models.factory import load_model

        model, saved = load_model(self.model_path)
        inp = model_input(self.final, self.input_spec)
        parity_inputs = [frame_input(f, inp["kind"], inp["trim_db"], trim=inp["trim"]) for f in self.parity_feats]
        out = write_model_folder(
            self.out,
            model,
            labels=list(saved["classes"]),
            feature_config=self.feature_config,
            kind=inp["kind"],
            trim_db=inp["trim_db"],
            trim=inp["trim"],
            eval_mode=self.final.get("eval_mode", "full"),
            window=self.final.get("eval_window"),
            hop=self.final.get("eval_hop"),
            parity_inputs=parity_inputs,
            extra=self.extra,
        )
        return out, read_metadata(out)["export"]["parity_max_abs_diff"], len(parity_inputs)


@dataclass(frozen=True)
class CardJob:
    """Copy model folder ``src`` to ``dest`` with its model card and report plots, atomically."""

    src: Path
    dest: Path
    evaluation: dict[str, Any]
    evaluation_file: Path
    report_dir: Path
    cfg: Any = None

    def run(self) -> Path:
        from ser.card import render_card
        from ser.model_folder import CARD_FILE, read_metadata

        tmp = self.dest.parent / f".{self.dest.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(self.src, tmp)
        meta = read_metadata(tmp)
        for png in ("confusion_matrix.png", "reliability.png"):
            if (self.report_dir / png).is_file():
                shutil.copy2(self.report_dir / png, tmp / png)
        full = json.loads(Path(self.evaluation_file).read_text())
        (tmp / CARD_FILE).write_text(render_card(meta, self.evaluation, full, self.cfg))
        shutil.rmtree(self.dest, ignore_errors=True)
        os.replace(tmp, self.dest)
        return self.dest


@dataclass(frozen=True)
class Registration:
    name: str
    version: int
    alias: str
    reason: str
    model_dir: Path
    previous_champion: int | None
    published: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "reason": self.reason,
            "model_dir": str(self.model_dir),
            "published": self.published,
        }


@dataclass(frozen=True)
class GateRules:
    """The promotion rule (``register`` section of the pipeline config): see :func:`ser.registry.decide_gate`."""

    margin: float = 0.0
    max_group_gap: float | None = None
    group: str = "gender"
    on_missing_group: str = "allow"
    rule: str = "ci"
    min_utterances: int = 20
    n_boot: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class GateJob:
    """Score a registered ``candidate`` folder and the ``champion`` folder (None: there is none) on the gate set,
    with onnxruntime (:func:`ser.jobs.evaluate.score_model`), after dropping the gate utterances either model
    records it was trained on (:func:`ser.registry.unseen_gate`). Writes both reports under ``out``
    (``candidate/``, ``champion/``) and ``out/gate.json``; returns the comparison
    :func:`ser.registry.decide_gate` reads."""

    candidate: Path
    champion: Path | None
    gate: pd.DataFrame
    out: Path
    rules: GateRules = field(default_factory=GateRules)

    def run(self) -> dict[str, Any]:
        from ser import registry
        from ser.evaluate.metrics import paired_bootstrap_diff
        from ser.io import write_json
        from ser.jobs.evaluate import ModelEvaluateJob
        from ser.model_folder import read_metadata, read_trained_on

        hashes = self.gate["pcm_hash"].astype(str).tolist() if "pcm_hash" in self.gate.columns else []
        if len(hashes) != len(self.gate):
            raise SerError("the gate set has no content hashes (pcm_hash): run it through validation")
        champ_seen = read_trained_on(self.champion) if self.champion is not None else None
        ov = registry.unseen_gate(hashes, read_trained_on(self.candidate), champ_seen)
        keep = ov.pop("keep")
        unseen = self.gate[np.asarray(keep, dtype=bool)].reset_index(drop=True)
        comparison: dict[str, Any] = {
            "n": ov["n"],
            "n_unseen": ov["n_unseen"],
            "speakers": int(unseen["speaker"].nunique()) if len(unseen) else 0,
            "sources": {str(k): int(v) for k, v in unseen["source"].value_counts().items()}
            if "source" in unseen.columns
            else {},
            "overlap": ov,
            "group": self.rules.group,
            "candidate": None,
            "champion": None,
            "diff": None,
            "comparable": True,
        }
        if ov["n_unseen"] < self.rules.min_utterances:
            write_json(self.out / "gate.json", comparison)
            return comparison
        r = self.rules
        cand = ModelEvaluateJob(self.candidate, unseen, self.out / "candidate", n_boot=r.n_boot, seed=r.seed).run()
        comparison["candidate"] = _gate_score(cand, read_metadata(self.candidate), r.group)
        if self.champion is not None:
            champ = ModelEvaluateJob(self.champion, unseen, self.out / "champion", n_boot=r.n_boot, seed=r.seed).run()
            comparison["champion"] = _gate_score(champ, read_metadata(self.champion), r.group)
            a, b = cand.scored, champ.scored
            if a.labels != b.labels or list(a.frame["utt_id"]) != list(b.frame["utt_id"]):
                comparison.update(comparable=False, why=f"the models' classes differ ({a.labels} vs {b.labels})")
            else:
                paired = paired_bootstrap_diff(
                    a.frame["emotion"].astype(str).to_numpy(),
                    a.frame["pred"].astype(str).to_numpy(),
                    b.frame["pred"].astype(str).to_numpy(),
                    a.frame["speaker"].astype(str).to_numpy(),
                    classes=a.labels,
                    n_boot=r.n_boot,
                    seed=r.seed,
                )
                comparison["diff"] = {**paired["uar"], "method": "speaker", "n_boot": r.n_boot, "level": 0.95}
        write_json(self.out / "gate.json", comparison)
        return comparison


def _gate_score(ev: Any, meta: dict[str, Any], group: str) -> dict[str, Any]:
    from ser.jobs.evaluate import gap_of

    r = ev.evaluation["result"]
    return {
        "version": meta.get("version"),
        "n": r["n"],
        "uar": r["metrics"]["uar"],
        "accuracy": r["metrics"]["accuracy"],
        "ci": (r.get("ci") or {}).get("uar"),
        "group_gap": gap_of(ev.evaluation, group),
        "report": f"{ev.report_dir.name}/{ev.report.name}",  # relative to the version's gate/ folder
    }


@dataclass(frozen=True)
class RegisterJob:
    """Register ``model_dir`` under ``workdir`` as the next version of ``name`` and apply the gate.

    With a ``gate`` set (labelled utterances neither model was trained on, set aside before splitting): candidate
    and champion are scored on it with onnxruntime (:class:`GateJob`) and :func:`ser.registry.decide_gate`
    decides; the reports are kept in the version's ``gate/`` folder. Without one: the same-evaluation comparison of
    :func:`ser.registry.decide`, and the reason says so. Champion when the rule says so, else challenger; the
    decision, both scores, the gate set's size and the reason go to ``events.jsonl``, the metadata, the model card
    and (``tracker``/``run_id``) MLflow. ``publish``: a base URI the version and ``aliases.json`` are copied to."""

    workdir: Path
    model_dir: Path
    name: str
    evaluation: dict[str, Any]
    margin: float = 0.0
    max_group_gap: float | None = None
    tracker: Any = None
    run_id: str | None = None
    publish: str | None = None
    gate: pd.DataFrame | None = None
    rules: GateRules | None = None

    def _rules(self) -> GateRules:
        if self.rules is not None:
            return self.rules
        return GateRules(margin=self.margin, max_group_gap=self.max_group_gap)

    def _decide(self, work: Path, champion: int | None) -> tuple[Any, dict[str, Any] | None]:
        from ser import registry
        from ser.model_folder import read_metadata

        rules = self._rules()
        champ_dir = registry.model_root(self.workdir, self.name) / str(champion) if champion else None
        if self.gate is not None and len(self.gate):
            gate = GateJob(self.model_dir, champ_dir, self.gate, work, rules).run()
            decision = registry.decide_gate(
                gate,
                margin=rules.margin,
                max_group_gap=rules.max_group_gap,
                on_missing_group=rules.on_missing_group,
                rule=rules.rule,
                min_utterances=rules.min_utterances,
            )
            return decision, gate
        champ_eval = read_metadata(champ_dir).get("evaluation") if champ_dir is not None else None
        decision = registry.decide(
            self.evaluation,
            champ_eval,
            margin=rules.margin,
            max_group_gap=rules.max_group_gap,
            on_missing_group=rules.on_missing_group,
            note="no gate set (no data source has a gate_share): compared on the same cross-validation evaluation. ",
        )
        return decision, None

    def run(self) -> Registration:
        from ser import registry
        from ser.export import update_metadata

        # the gate runs first: a failure there (a champion folder that will not load, say) registers nothing
        champion = registry.read_aliases(self.workdir, self.name).get("champion")
        work = registry.model_root(self.workdir, self.name) / f".gate-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        try:
            decision, gate = self._decide(work, champion)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        version = None
        if self.tracker is not None:
            version = self.tracker.create_version(self.name, self.model_dir, self.run_id)
        dest = registry.add_version(self.workdir, self.model_dir, self.name, version)
        version = int(dest.name)
        if work.is_dir():  # the gate's reports and gate.json go with the version
            os.replace(work, dest / "gate")
        if gate is not None and gate.get("candidate"):
            gate["candidate"]["version"] = str(version)
        alias = "champion" if decision.promote else "challenger"
        record = gate_record(decision, gate, champion)
        registry.log_event(self.workdir, self.name, {"event": "gate", "version": version, **record})
        registry.set_alias(self.workdir, self.name, alias, version, decision.reason)
        update_metadata(dest, decision={"alias": alias, **record})
        _append_card(dest, {"alias": alias, **record})
        if self.tracker is not None:
            self.tracker.set_alias(self.name, alias, version)
            tags = {"registered_version": str(version), "alias": alias, "decision": decision.reason}
            self.tracker.tag_run(self.run_id, tags)
            self.tracker.log_gate(self.run_id, record)
        published = None
        if self.publish:
            from ser.uri import publish_file, publish_folder

            base = self.publish.rstrip("/")
            published = publish_folder(dest, f"{base}/{self.name}/{version}")
            root = registry.model_root(self.workdir, self.name)
            publish_file(root / "aliases.json", f"{base}/{self.name}/aliases.json")
        return Registration(self.name, version, alias, decision.reason, dest, champion, published)


def gate_record(decision: Any, gate: dict[str, Any] | None, champion: int | None) -> dict[str, Any]:
    """What is recorded of a decision (events.jsonl, metadata ``decision``, MLflow, the card): the outcome, the
    reason, and with a gate set its size, the overlap found, both scores and the CI of their difference."""
    rec: dict[str, Any] = {
        "promote": decision.promote,
        "outcome": decision.outcome,
        "reason": decision.reason,
        "previous_champion": champion,
        "basis": "gate" if gate is not None else "cross-validation",
    }
    if gate is not None:
        rec["gate"] = {k: gate.get(k) for k in ("n", "n_unseen", "speakers", "sources", "overlap", "group")}
        for who in ("candidate", "champion"):
            score = gate.get(who)
            rec[f"{who}_score"] = None if score is None else {k: v for k, v in score.items() if k != "report"}
        rec["uar_diff"] = gate.get("diff")
    return rec


def _append_card(model_dir: Path, decision: dict[str, Any]) -> None:
    """Add the registry decision to the registered version's model card."""
    from ser.card import render_decision
    from ser.io import write_text
    from ser.model_folder import CARD_FILE

    card = model_dir / CARD_FILE
    if card.is_file():
        write_text(card, card.read_text().rstrip() + "\n\n" + render_decision(decision))
