"""Safe extraction of a model bundle archive (``.tar``, ``.tar.gz``/``.tgz``).

A bundle archive comes from ``MODEL_URL``, which may point anywhere, so it is treated as hostile.
:func:`safe_extract_tar` refuses, with a :class:`~oyez.errors.ModelError` naming the member:

* absolute paths and ``..`` traversal (and anything that would land outside ``dest``);
* symlinks, hardlinks, device files, FIFOs, sparse files - a bundle holds only files and directories;
* duplicate names, and more than ``max_members`` members;
* more than ``max_total_bytes`` of uncompressed data, checked against the headers *and* by counting
  the bytes actually decompressed, so a lying header does not help;
* a decompression bomb: decompressed bytes / compressed bytes read so far above ``max_ratio``
  (checked once more than :data:`RATIO_GRACE_BYTES` have been decompressed, because tar padding of
  a few small files compresses extremely well).

The archive is read once, as a stream, so the counters see every byte as it is produced. Python's
own ``filter="data"`` is passed as well, as defense in depth. A single top-level directory wrapping
the bundle is stripped, so ``dest`` always holds the bundle files at its root.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol

from oyez.errors import ModelError

#: Defaults for a model bundle: a few ONNX graphs (the largest Whisper is ~6 GB in fp32), a
#: vocabulary and a manifest. Generous on size, strict on shape.
DEFAULT_MAX_TOTAL_BYTES = 32 * 1024**3
DEFAULT_MAX_MEMBERS = 1000
DEFAULT_MAX_RATIO = 200.0
#: The compression ratio is only judged after this many decompressed bytes.
RATIO_GRACE_BYTES = 1024 * 1024

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_GZIP_MAGIC = b"\x1f\x8b"
_TAR_BLOCK = 512


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def is_archive_name(name: str) -> bool:
    """Whether a file name looks like a bundle archive we extract."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


class _MeteredStream(io.RawIOBase):
    """The decompressed tar stream: counts bytes and enforces the size and ratio limits.

    ``compressed_bytes`` reports how much of the archive file the decompressor has consumed.
    """

    def __init__(
        self,
        inner: _Readable,
        compressed_bytes: Callable[[], int],
        *,
        max_total_bytes: int,
        max_ratio: float,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._compressed_bytes = compressed_bytes
        self._max_total_bytes = max_total_bytes
        self._max_ratio = max_ratio
        self.bytes_read = 0
        self.current_member = "<archive header>"

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        data = self._inner.read(-1 if size is None else size)
        self.bytes_read += len(data)
        self._check()
        return data

    def _check(self) -> None:
        if self.bytes_read > self._max_total_bytes:
            raise ModelError(
                f"Archive member {self.current_member!r} takes the archive past "
                f"{self._max_total_bytes} uncompressed bytes"
            )
        if self.bytes_read > RATIO_GRACE_BYTES:
            ratio = self.bytes_read / max(self._compressed_bytes(), 1)
            if ratio > self._max_ratio:
                raise ModelError(
                    f"Archive member {self.current_member!r} looks like a decompression bomb "
                    f"(compression ratio {ratio:.0f} > {self._max_ratio:g})"
                )


def _open_decompressed(raw: BinaryIO) -> _Readable:
    """Sniff gzip by its magic bytes; anything else is read as a plain tar."""
    magic = raw.read(len(_GZIP_MAGIC))
    raw.seek(0)
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def _normalized_name(member: tarfile.TarInfo) -> str | None:
    """The member's relative POSIX path, ``None`` for the archive root (``.``); refuse escapes."""
    name = member.name
    if name.startswith("/") or PurePosixPath(name).is_absolute():
        raise ModelError(f"Archive member {name!r} has an absolute path")
    parts = [part for part in PurePosixPath(name).parts if part not in ("", ".")]
    if ".." in parts:
        raise ModelError(f"Archive member {name!r} escapes the destination with '..'")
    if "\\" in name or "\x00" in name:
        raise ModelError(f"Archive member {name!r} has a character not allowed in a bundle path")
    return "/".join(parts) if parts else None


def _check_member_type(member: tarfile.TarInfo) -> None:
    """Only regular files and directories belong in a bundle."""
    kinds = (
        (member.issym(), "is a symlink"),
        (member.islnk(), "is a hardlink"),
        (member.ischr() or member.isblk(), "is a device file"),
        (member.isfifo(), "is a FIFO"),
        (member.issparse(), "is a sparse file"),
    )
    for refused, why in kinds:
        if refused:
            raise ModelError(f"Archive member {member.name!r} {why}; refusing the archive")
    if not (member.isreg() or member.isdir()):
        raise ModelError(f"Archive member {member.name!r} has an unsupported type {member.type!r}")


class _MemberChecker:
    """Per-archive bookkeeping: member count, declared sizes, duplicate names."""

    def __init__(self, root: Path, *, max_total_bytes: int, max_members: int) -> None:
        self._root = root.resolve()
        self._max_total_bytes = max_total_bytes
        self._max_members = max_members
        self._members = 0
        self._declared_bytes = 0
        self._seen: set[str] = set()

    def admit(self, member: tarfile.TarInfo) -> str | None:
        """Validate one member; return the name to extract it as (``None``: skip the root entry)."""
        self._members += 1
        if self._members > self._max_members:
            raise ModelError(f"Archive has more than {self._max_members} members (at {member.name!r})")
        _check_member_type(member)
        name = _normalized_name(member)
        if name is None:
            if not member.isdir():
                raise ModelError(f"Archive member {member.name!r} is a file with no name")
            return None
        if name in self._seen:
            raise ModelError(f"Archive member {member.name!r} appears twice")
        self._seen.add(name)
        self._declared_bytes += max(member.size, 0)
        if self._declared_bytes > self._max_total_bytes:
            raise ModelError(
                f"Archive member {member.name!r} takes the archive past {self._max_total_bytes} "
                "uncompressed bytes"
            )
        if not (self._root / name).resolve().is_relative_to(self._root):
            raise ModelError(f"Archive member {member.name!r} resolves outside the destination")
        return name


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error is the destination running out of space (or quota), not a bad archive."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, name: str, root: Path) -> None:
    """Extract one checked member under ``root`` and confirm the bytes written match its header."""
    member.name = name
    try:
        if hasattr(tarfile, "data_filter"):
            tar.extract(member, root, filter="data")
        else:  # pragma: no cover - Python 3.11 before 3.11.4
            tar.extract(member, root)
    except (OSError, tarfile.TarError) as exc:
        if is_disk_full(exc):
            raise  # the disk, not the archive: the caller says what to do about it
        raise ModelError(f"Could not extract archive member {name!r}: {exc}") from exc
    if member.isreg() and (root / name).stat().st_size != member.size:
        raise ModelError(f"Archive member {name!r} did not extract to its declared {member.size} bytes")


def _extract_stream(
    archive: Path, root: Path, *, max_total_bytes: int, max_members: int, max_ratio: float
) -> int:
    """Stream ``archive`` into ``root`` under every check; return the number of entries extracted."""
    checker = _MemberChecker(root, max_total_bytes=max_total_bytes, max_members=max_members)
    extracted = 0
    with archive.open("rb") as raw:
        metered = _MeteredStream(
            _open_decompressed(raw),
            raw.tell,
            # The stream also carries tar headers and padding: allow for them on top of the data.
            max_total_bytes=max_total_bytes + (3 * max_members + 20) * _TAR_BLOCK,
            max_ratio=max_ratio,
        )
        try:
            with tarfile.open(fileobj=metered, mode="r|") as tar:
                for member in tar:
                    metered.current_member = member.name
                    name = checker.admit(member)
                    if name is not None:
                        _extract_member(tar, member, name, root)
                        extracted += 1
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, OSError) as exc:
            if is_disk_full(exc):
                raise
            raise ModelError(f"{archive.name} is not a readable tar archive: {exc}") from exc
    return extracted


def _bundle_root(extracted: Path) -> Path:
    """The directory holding the bundle: ``extracted`` or its single wrapping directory."""
    entries = list(extracted.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return extracted


def safe_extract_tar(
    archive: Path,
    dest: Path,
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
    max_ratio: float = DEFAULT_MAX_RATIO,
) -> Path:
    """Extract a (gzipped) tar of a bundle so that ``dest`` holds the bundle files at its root.

    ``dest`` must not exist, or be an empty directory. Extraction happens in a temporary directory
    beside ``dest`` (same filesystem) that is moved into place with :func:`os.replace` only when
    every member passed; on any refusal nothing is left behind. Returns ``dest``.
    """
    if not archive.is_file():
        raise ModelError(f"Model archive {archive} does not exist")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ModelError(f"Cannot extract into {dest}: it exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        extracted = _extract_stream(
            archive, scratch, max_total_bytes=max_total_bytes, max_members=max_members, max_ratio=max_ratio
        )
        if extracted == 0:
            raise ModelError(f"Archive {archive.name} is empty")
        os.replace(_bundle_root(scratch), dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dest
