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


def model_input(final: dict[str, Any], input_spec: dict[str, Any] | None) -> dict[str, Any]:
    """The shipped model's input (frame ``kind`` and ``trim_db``) from a train record; records from before
    ensembles over several feature kinds name it through their first member's spec."""
    inp = final.get("input")
    if inp is None:
        from ser.train.spec import ModelSpec

        first = ModelSpec.model_validate(input_spec)
        inp = {"kind": first.features, "trim_db": first.trim_db}
    return inp


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
        parity_inputs = [frame_input(f, inp["kind"], inp["trim_db"]) for f in self.parity_feats]
        out = write_model_folder(
            self.out,
            model,
            labels=list(saved["classes"]),
            feature_config=self.feature_config,
            kind=inp["kind"],
            trim_db=inp["trim_db"],
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
class RegisterJob:
    """Register ``model_dir`` under ``workdir`` as the next version of ``name`` and apply the gate: champion when
    there is none or the candidate wins on the same evaluation by ``margin`` within ``max_group_gap``, else
    challenger (:func:`ser.registry.decide`). ``tracker``/``run_id``: the MLflow mirror (version and alias);
    ``publish``: a base URI the version and ``aliases.json`` are copied to."""

    workdir: Path
    model_dir: Path
    name: str
    evaluation: dict[str, Any]
    margin: float = 0.0
    max_group_gap: float | None = None
    tracker: Any = None
    run_id: str | None = None
    publish: str | None = None

    def run(self) -> Registration:
        from ser import registry
        from ser.export import update_metadata
        from ser.model_folder import read_metadata

        version = None
        if self.tracker is not None:
            version = self.tracker.create_version(self.name, self.model_dir, self.run_id)
        dest = registry.add_version(self.workdir, self.model_dir, self.name, version)
        version = int(dest.name)
        champion = registry.read_aliases(self.workdir, self.name).get("champion")
        champ_eval = (
            read_metadata(registry.model_root(self.workdir, self.name) / str(champion)).get("evaluation")
            if champion
            else None
        )
        decision = registry.decide(self.evaluation, champ_eval, margin=self.margin, max_group_gap=self.max_group_gap)
        alias = "champion" if decision.promote else "challenger"
        registry.set_alias(self.workdir, self.name, alias, version, decision.reason)
        update_metadata(dest, decision={"alias": alias, "reason": decision.reason, "previous_champion": champion})
        if self.tracker is not None:
            self.tracker.set_alias(self.name, alias, version)
            tags = {"registered_version": str(version), "alias": alias, "decision": decision.reason}
            self.tracker.tag_run(self.run_id, tags)
        published = None
        if self.publish:
            from ser.uri import publish_file, publish_folder

            base = self.publish.rstrip("/")
            published = publish_folder(dest, f"{base}/{self.name}/{version}")
            root = registry.model_root(self.workdir, self.name)
            publish_file(root / "aliases.json", f"{base}/{self.name}/aliases.json")
        return Registration(self.name, version, alias, decision.reason, dest, champion, published)
