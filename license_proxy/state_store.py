"""The validation cache on disk (``$OYEZ_LICENSE_STATE_DIR/validation.json``).

A restart inside the grace period keeps serving because the last successful check survives. The
file carries an HMAC-SHA256 keyed by a digest of the license key, so an edited file (say, a later
``checked_at`` to stretch the grace period) or a file left by another key is detected and ignored.
Writes are atomic (temp file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from license_proxy.grace import CachedValidation
from oyez.logs import get_logger

_log = get_logger("license_proxy.state")
_FILE_NAME = "validation.json"
_FORMAT_VERSION = 1


def key_digest(license_key: str) -> str:
    """SHA-256 of the key text: identifies a key without storing it."""
    return hashlib.sha256(license_key.strip().encode("utf-8")).hexdigest()


def _mac_key(license_key: str) -> bytes:
    return hashlib.sha256(b"oyez-license-cache-v1\x00" + license_key.strip().encode("utf-8")).digest()


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class ValidationStore:
    """Loads and saves the :class:`CachedValidation` of one license key."""

    def __init__(self, state_dir: Path, license_key: str) -> None:
        self.path = state_dir / _FILE_NAME
        self._digest = key_digest(license_key)
        self._mac_key = _mac_key(license_key)

    def save(self, cached: CachedValidation) -> None:
        data = {
            "license_id": cached.license_id,
            "key_digest": cached.key_digest,
            "checked_at": cached.checked_at.isoformat(),
            "revoked": cached.revoked,
            "revoked_reason": cached.revoked_reason,
        }
        mac = hmac.new(self._mac_key, _canonical(data), hashlib.sha256).hexdigest()
        document = {"version": _FORMAT_VERSION, "data": data, "mac": mac}
        write_atomic(self.path, json.dumps(document, indent=2).encode("utf-8"))

    def load(self) -> CachedValidation | None:
        """The cached validation, or None when there is none or it cannot be trusted (logged)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.warning("Cannot read cached validation, ignoring it", path=str(self.path), error=str(exc))
            return None
        try:
            document = json.loads(raw)
            data = document["data"]
            expected = hmac.new(self._mac_key, _canonical(data), hashlib.sha256).hexdigest()
            if document.get("version") != _FORMAT_VERSION or not hmac.compare_digest(
                str(document["mac"]), expected
            ):
                raise ValueError("integrity check failed")
            if data["key_digest"] != self._digest:
                raise ValueError("it belongs to a different license key")
            return CachedValidation(
                license_id=str(data["license_id"]),
                key_digest=str(data["key_digest"]),
                checked_at=datetime.fromisoformat(data["checked_at"]),
                revoked=bool(data["revoked"]),
                revoked_reason=data["revoked_reason"],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            _log.warning(
                "Cached validation was altered or is unreadable; ignoring it",
                path=str(self.path),
                error=str(exc),
            )
            return None
