"""``oyez license keygen | issue | inspect``: the issuer's tools."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from oyez.cli import main


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_issue_inspect_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "license", "keygen", "--out-dir", str(tmp_path))
    assert code == 0
    private, public = tmp_path / "issuer.key", tmp_path / "issuer.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    public_text = public.read_text().strip()
    assert public_text.startswith("ed25519:") and f"OYEZ_LICENSE_PUBLIC_KEY={public_text}" in out

    code, key, err = _run(
        capsys,
        "license", "issue", "--customer", "Acme", "--days", "90", "--key", str(private),
        "--feature", "streaming", "--feature", "batch", "--limit", "requests_per_minute=120",
    )  # fmt: skip
    assert code == 0 and "DEVELOPMENT" not in err
    key = key.strip()

    code, out, _ = _run(capsys, "license", "inspect", key, "--public-key", public_text, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["valid"] is True and shown["customer"] == "Acme"
    assert shown["features"] == ["batch", "streaming"]
    assert shown["limits"]["requests_per_minute"] == 120
    # Without the issuer's public key the development key is trusted, which did not sign it.
    code, out, _ = _run(capsys, "license", "inspect", key)
    assert code == 1 and out.startswith("invalid: KEY_UNKNOWN_ISSUER")


def test_keygen_never_overwrites_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(capsys, "license", "keygen", "--out-dir", str(tmp_path))[0] == 0
    before = (tmp_path / "issuer.key").read_bytes()
    code, _, err = _run(capsys, "license", "keygen", "--out-dir", str(tmp_path))
    assert code == 2 and "--force" in err
    assert (tmp_path / "issuer.key").read_bytes() == before
    assert _run(capsys, "license", "keygen", "--out-dir", str(tmp_path), "--force")[0] == 0
    assert (tmp_path / "issuer.key").read_bytes() != before


def test_issue_with_the_development_key_warns(capsys: pytest.CaptureFixture[str]) -> None:
    code, key, err = _run(capsys, "license", "issue", "--customer", "Dev", "--days", "1")
    assert code == 0 and key.startswith("oyez1.")
    assert "DEVELOPMENT issuer key" in err and "OYEZ_ENV=production" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--feature", "telepathy"], "unknown feature"),
        (["--limit", "gpus=3"], "unknown limit"),
        (["--limit", "requests_per_minute=-1"], "positive"),
        (["--limit", "requests_per_minute"], "name=value"),
        (["--license-id", "acme"], "license_id must look like"),
        (["--key", "/nonexistent/issuer.key"], "cannot read issuer private key"),
        (["--not-before", "next tuesday"], "Invalid isoformat"),
    ],
)
def test_issue_errors_say_what_to_fix(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "license", "issue", "--customer", "X", "--days", "1", *extra)
    assert code == 2 and out == ""
    assert message in err and err.startswith("error: ")


def test_issue_refuses_a_non_ed25519_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "issuer.key"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    code, _, err = _run(capsys, "license", "issue", "--customer", "X", "--days", "1", "--key", str(bad))
    assert code == 2 and "not an unencrypted PEM private key" in err


def test_inspect_reports_expired_terms_with_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    _, key, _ = _run(
        capsys, "license", "issue", "--customer", "Old", "--days", "1", "--not-before", "2020-01-01T00:00:00"
    )
    code, out, _ = _run(capsys, "license", "inspect", key.strip(), "--json")
    assert code == 1 and json.loads(out)["status"].startswith("KEY_EXPIRED")
    code, out, _ = _run(capsys, "license", "inspect", key.strip())
    assert code == 1
    assert out.startswith("status:      KEY_EXPIRED: license key expired at 2020-01-02T00:00:00Z")
    assert "customer:    Old" in out


def test_inspect_reads_stdin_so_keys_stay_out_of_shell_history() -> None:
    key = subprocess.run(
        [sys.executable, "-m", "oyez.cli", "license", "issue", "--customer", "Pipe", "--days", "2"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "LICENSE_KEY"}
    shown = subprocess.run(
        [sys.executable, "-m", "oyez.cli", "license", "inspect", "-"],
        input=key, capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert shown.returncode == 0 and "customer:    Pipe" in shown.stdout
    broken = subprocess.run(
        [sys.executable, "-m", "oyez.cli", "license", "inspect", "-"],
        input=key[:60], capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert broken.returncode == 1 and broken.stdout.startswith("invalid: KEY_TRUNCATED")


def test_inspect_in_production_refuses_development_keys(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _, dev, _ = _run(capsys, "license", "issue", "--customer", "Dev", "--days", "1")
    _run(capsys, "license", "keygen", "--out-dir", str(tmp_path))
    monkeypatch.setenv("OYEZ_ENV", "production")
    monkeypatch.setenv("OYEZ_LICENSE_PUBLIC_KEY", (tmp_path / "issuer.pub").read_text().strip())
    code, out, _ = _run(capsys, "license", "inspect", dev.strip())
    assert code == 1 and out.startswith("invalid: KEY_DEVELOPMENT_ISSUER")
