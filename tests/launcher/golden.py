"""Compare JSON-able values with golden files under tests/launcher/golden/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(name: str, value: Any) -> None:
    """Equal to golden/<name>.json; a missing file is written (that is how to regenerate one)."""
    path = GOLDEN / f"{name}.json"
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    expected = json.loads(path.read_text())
    assert value == expected, (
        f"{name} differs from the golden file {path}.\n"
        f"expected: {json.dumps(expected, sort_keys=True)}\n"
        f"got:      {json.dumps(value, sort_keys=True)}\n"
        f"If the change is deliberate, delete {path} and rerun the tests to regenerate it, "
        "then review and commit the new file."
    )
