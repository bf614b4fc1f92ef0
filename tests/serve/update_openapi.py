"""The OpenAPI snapshot ``tests/serve/openapi.json``: what ``create_app().openapi()`` gives (the package version
replaced by ``<version>``), compared by ``tests/serve/test_openapi.py`` so that any change of a route, a parameter or
a response shape is deliberate. After such a change, refresh it and commit it with the change:

    python -m tests.serve.update_openapi    # or: SER_UPDATE_OPENAPI=1 python -m pytest tests/serve/test_openapi.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SNAPSHOT = Path(__file__).with_name("openapi.json")
REFRESH = "python -m tests.serve.update_openapi (or SER_UPDATE_OPENAPI=1 python -m pytest tests/serve/test_openapi.py)"


def current() -> dict[str, Any]:
    """The app's OpenAPI document now, with the version (which changes with every release) normalised."""
    from ser.serve.app import create_app

    spec = create_app().openapi()
    spec["info"]["version"] = "<version>"
    return spec


def dumps(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    SNAPSHOT.write_text(dumps(current()))
    print(f"wrote {SNAPSHOT}")


if __name__ == "__main__":
    main()
