"""FAULTS.md names the tests behind each promise; every file and test it names must exist."""

from __future__ import annotations

from tests.tooling.doc_references import ROOT, check_named_tests


def test_every_test_faults_md_names_exists() -> None:
    check_named_tests(ROOT / "FAULTS.md", minimum=25)
