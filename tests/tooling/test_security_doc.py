"""SECURITY.md names the tests behind each guarantee; every file and test it names must exist, so the
document cannot drift from what CI checks."""

from __future__ import annotations

from tests.tooling.doc_references import ROOT, check_named_tests

DOC = ROOT / "SECURITY.md"


def test_every_test_security_md_names_exists() -> None:
    check_named_tests(DOC, minimum=20)
