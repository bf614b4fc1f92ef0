"""The pretrained model bundled with the package (package data): ``ravdess-cnn/``, the default recipe trained on
all of RAVDESS (24 actors, 8 emotions), with ``model.onnx``, ``metadata.json``, ``MODEL_CARD.md`` and its own
``LICENSE`` (CC BY-NC-SA 4.0, as the data it was trained on: not for commercial use; the card and the licence file
list what it must not be used for).

**Fallback** (:func:`fallback_dir`, the one place that decides): ``ser serve``, ``ser predict``, ``ser timeline``
and ``ser listen`` use the bundled model when nothing names a model — no ``--model``, no ``--workdir`` or
``$SER_WORKDIR``, no ``--ref`` — and the default workdir (``./runs``) has no registered champion, or only one
trained on the synthetic demo corpus (what ``make demo`` registers there: tones, not speech, so it would answer
real clips at random; name the workdir to use it anyway). They say so in one line (:func:`notice`: stderr for the
CLI, the ``ser.serve`` log for the service). A model, workdir or reference that is named but missing is still an
error: a bundled model is never served in place of one asked for.

**Rebuild**: ``make pretrained`` runs the pipeline on ``configs/ravdess-all.yaml`` (the recipe comes from that
config) and :func:`bundle` copies the registered folder here, with the run record's stage keys and metrics in
``metadata.json["pretrained"]``. Reproducible means the same metrics from the same run record, not the same bytes.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ser.errors import SerError
from ser.io import write_json
from ser.model_folder import CARD_FILE, METADATA_FILE, MODEL_FILE, check_model_dir, read_metadata
from ser.registry import WORKDIR_ENV, default_workdir, read_aliases

BUNDLED_NAME = "ravdess-cnn"
LICENSE_FILE = "LICENSE"
LICENSE = "CC BY-NC-SA 4.0"
LICENSE_URL = "https://creativecommons.org/licenses/by-nc-sa/4.0/"
_KEEP = {LICENSE_FILE}
"""Files of the bundled folder that :func:`bundle` leaves in place (written by hand, not by the pipeline)."""


def bundled_dir() -> Path:
    """Where the bundled model folder is (inside the installed package)."""
    return Path(__file__).resolve().parent / BUNDLED_NAME


def fallback_dir(ref: str | None = None, env: Mapping[str, str] | None = None) -> Path | None:
    """The bundled model folder when nothing names a model and there is no champion to serve: ``ref`` None,
    ``$SER_WORKDIR`` unset (in ``env``, default ``os.environ``) and no ``champion`` alias in the default workdir's
    registry. None otherwise (the caller resolves the model as it always did), and None when the package was
    installed without its model (then the usual "no champion" error stands)."""
    env = os.environ if env is None else env
    if ref is not None or env.get(WORKDIR_ENV):
        return None
    if "champion" in read_aliases(default_workdir()) and not _synthetic_champion():
        return None
    path = bundled_dir()
    if not ((path / MODEL_FILE).is_file() and (path / METADATA_FILE).is_file()):
        return None
    return path


def _synthetic_champion() -> bool:
    """True when the default workdir's champion was trained on the synthetic demo corpus only (its metadata's
    ``training.synthetic``); False when it was not, or cannot be read (then it is served as before)."""
    from ser.registry import resolve

    try:
        meta = read_metadata(resolve(default_workdir(), "champion"))
    except SerError:
        return False
    training = meta.get("training")
    return isinstance(training, dict) and training.get("synthetic") is True


def notice(model_dir: str | Path) -> str:
    """The one line that says the bundled model is in use: which model, its licence, where its licence file is."""
    model_dir = Path(model_dir)
    wd = default_workdir()
    why = (
        f"the champion in {wd} was trained on the synthetic demo corpus (not speech; --workdir {wd} serves it)"
        if "champion" in read_aliases(wd)
        else f"no model named and no champion in {wd}"
    )
    meta = read_metadata(model_dir)
    info = meta.get("pretrained") or {}
    uar = (meta.get("evaluation") or {}).get("uar")
    held_out = f", held-out UAR {100 * uar:.0f} %" if isinstance(uar, int | float) else ""
    return (
        f"note: {why}: using the bundled pretrained model "
        f"{info.get('bundled_as', model_dir.name)} "
        f"({info.get('recipe') or meta.get('model', {}).get('name', 'model')} trained on "
        f"RAVDESS{held_out}); licence {meta.get('license', LICENSE)}: non-commercial use only, not for decisions "
        f"about people (see {model_dir / LICENSE_FILE})"
    )


def bundle(model_dir: str | Path, dest: str | Path, provenance: Mapping[str, Any]) -> Path:
    """Copy the registered model folder ``model_dir`` to ``dest`` (the package's bundled folder): its files
    replace those there (but ``LICENSE``, kept), ``metadata.json`` gains ``license`` and ``pretrained``
    (``provenance``: config, run record keys and metrics, plus ``bundled_as`` and the date). Returns ``dest``."""
    src = check_model_dir(model_dir)
    dest = Path(dest)
    if not (dest / LICENSE_FILE).is_file():
        raise SerError(f"{dest / LICENSE_FILE} is missing: the bundled model never ships without its licence")
    for old in dest.iterdir():
        if old.is_file() and old.name not in _KEEP:
            old.unlink()
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name not in _KEEP:
            shutil.copy2(f, dest / f.name)
    if not (dest / CARD_FILE).is_file():
        raise SerError(f"{src} has no {CARD_FILE}: bundle a folder the pipeline registered")
    card = dest / CARD_FILE
    text = _without_section(card.read_text(encoding="utf-8"), REGISTRY_SECTION)
    card.write_text(_card_with_licence(text, dest.name), encoding="utf-8")
    meta = read_metadata(dest)
    # the registry's verdict was against whatever the builder's workdir held before (a champion there, or none): it
    # says nothing about the model that ships, whose run and metrics are in "pretrained"
    meta.pop("decision", None)
    meta["license"] = LICENSE
    meta["pretrained"] = {
        "bundled_as": dest.name,
        "bundled": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **provenance,
    }
    write_json(dest / METADATA_FILE, meta)
    return dest


REGISTRY_SECTION = "## Registry decision"
"""The model card's section on the registry's verdict in the workdir that built it, left out of the bundle."""


def _without_section(card: str, heading: str) -> str:
    """``card`` without the Markdown section that starts with the line ``heading`` (up to the next ``## `` heading
    or the end)."""
    lines = card.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if start is None:
        return card
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "".join(lines[:start] + lines[end:])


def _card_with_licence(card: str, name: str) -> str:
    """The registered model card with the bundle's licence: ``license: cc-by-nc-sa-4.0`` in its front matter and
    a notice under its title (the pipeline's card says ``license: other``: a registered model's terms are its
    owner's to set)."""
    card = card.replace("\nlicense: other\n", "\nlicense: cc-by-nc-sa-4.0\n", 1)
    note = (
        f"> **Bundled pretrained model `{name}`** of the `ser` package, licensed {LICENSE} like RAVDESS, the data it "
        "was trained on: non-commercial use only, attribution, share-alike. It must not be used for decisions about "
        "people, nor to infer emotions in workplaces or education (EU AI Act, Art. 5(1)(f)): see LICENSE. "
        "Rebuild: `make pretrained`."
    )
    head, sep, rest = card.partition("\n# ")
    if not sep:
        return f"{note}\n\n{card}"
    title, _, body = rest.partition("\n")
    return f"{head}\n# {title}\n\n{note}\n{body}"
