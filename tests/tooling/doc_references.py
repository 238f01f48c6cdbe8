"""Documents that promise things name the tests that check them (SECURITY.md, FAULTS.md); every file
and test such a document names must exist, so it cannot drift from what CI checks."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def _resolve(name: str) -> Path | None:
    path = ROOT / name
    if path.exists():
        return path
    matches = [p for p in TESTS.rglob(Path(name).name)]
    return matches[0] if len(matches) == 1 else None


def check_named_tests(doc: Path, minimum: int) -> None:
    """Every `tests/...test_x.py` and `::test_name` in ``doc`` exists; at least ``minimum`` found."""
    text = doc.read_text()
    references = re.findall(r"`((?:tests/)?[\w/]*test_\w+\.py/?)?(::\w+)?`", text)
    checked = 0
    current: Path | None = None
    for file_name, test_name in references:
        if file_name:
            current = _resolve(file_name.rstrip("/"))
            assert current is not None, f"{doc.name} names {file_name}, which does not exist"
            checked += 1
        if test_name:
            assert current is not None, f"{test_name} follows no test file"
            assert f"def {test_name[2:]}(" in current.read_text(), f"{test_name} is not in {current.name}"
            checked += 1
    assert checked >= minimum, "the references were found (else this test checks nothing)"
