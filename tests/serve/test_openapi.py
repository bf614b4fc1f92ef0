"""The OpenAPI document against its committed snapshot (``tests/serve/openapi.json``): a change of any route,
parameter or response shape fails here with a readable diff until the snapshot is refreshed on purpose
(``python -m tests.serve.update_openapi``)."""

from __future__ import annotations

import difflib
import os

from tests.serve.update_openapi import REFRESH, SNAPSHOT, current, dumps

MAX_DIFF_LINES = 200


def test_openapi_matches_the_snapshot():
    now = dumps(current())
    if os.environ.get("SER_UPDATE_OPENAPI"):
        SNAPSHOT.write_text(now)
    assert SNAPSHOT.is_file(), f"no snapshot {SNAPSHOT}: create it with {REFRESH}"
    before = SNAPSHOT.read_text()
    if now == before:
        return
    diff = list(
        difflib.unified_diff(before.splitlines(), now.splitlines(), "openapi.json (committed)", "now", n=3, lineterm="")
    )
    shown = "\n".join(diff[:MAX_DIFF_LINES]) + (
        f"\n... {len(diff) - MAX_DIFF_LINES} more lines" if len(diff) > MAX_DIFF_LINES else ""
    )
    raise AssertionError(
        f"the OpenAPI document changed (a route, parameter or response shape):\n{shown}\n\n"
        f"if the change is meant, refresh the snapshot and commit it: {REFRESH}"
    )


def test_snapshot_has_no_secret_or_path():
    text = SNAPSHOT.read_text()
    assert "+git" not in text and "/tmp/" not in text and "/home/" not in text
