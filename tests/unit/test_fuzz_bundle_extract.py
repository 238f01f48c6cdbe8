"""Hostile model archives (hypothesis): generated tars mixing traversal, absolute names, links,
devices and duplicates, and real bundle archives with damaged bytes. ``safe_extract_tar`` either
extracts plain files and directories inside ``dest`` or refuses with a ``ModelError``; nothing
is ever written outside ``dest`` and a refusal leaves nothing behind."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from asr_worker.model.extract import safe_extract_tar
from oyez.errors import ModelError
from tests.fuzzing import fuzz_settings

NAME_PARTS = ["bundle", "model", "..", ".", "", "encoder.onnx", "manifest.json", "ü", "a b", "..\\x", "~"]
KINDS = [
    tarfile.REGTYPE,
    tarfile.REGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.FIFOTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.CONTTYPE,
]
LINK_TARGETS = ["/etc/passwd", "../outside", "manifest.json", "bundle/manifest.json", "", "."]


@st.composite
def member_specs(draw: st.DrawFn) -> tuple[str, bytes, str, bytes]:
    parts = draw(st.lists(st.sampled_from(NAME_PARTS), min_size=1, max_size=4))
    name = ("/" if draw(st.integers(0, 5)) == 0 else "") + "/".join(parts)
    kind = draw(st.sampled_from(KINDS))
    link = draw(st.sampled_from(LINK_TARGETS))
    content = draw(st.binary(max_size=64))
    return name, kind, link, content


def build_tar(members: list[tuple[str, bytes, str, bytes]], compress: bool) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, link, content in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind in (tarfile.REGTYPE, tarfile.CONTTYPE):
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                info.linkname = link
                tar.addfile(info)
    data = raw.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


@cache
def real_bundle_archive() -> bytes:
    return build_tar(
        [
            ("bundle/", tarfile.DIRTYPE, "", b""),
            ("bundle/manifest.json", tarfile.REGTYPE, "", b'{"name": "whisper-tiny.en"}' * 8),
            ("bundle/encoder.onnx", tarfile.REGTYPE, "", bytes(range(256)) * 8),
            ("bundle/vocabulary.txt", tarfile.REGTYPE, "", b"hello\nworld\n" * 20),
        ],
        compress=True,
    )


def check_extract(archive_bytes: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        archive = root / f"bundle{suffix}"
        archive.write_bytes(archive_bytes)
        dest = root / "cache" / "out"
        try:
            result = safe_extract_tar(archive, dest, max_total_bytes=1 << 20, max_members=50, max_ratio=50.0)
        except ModelError as exc:
            assert exc.message and exc.code
            assert not dest.exists(), "a refusal leaves no partial bundle"
            leftovers = list((root / "cache").iterdir()) if (root / "cache").exists() else []
            assert leftovers == [], f"scratch left behind: {leftovers}"
        else:
            assert result == dest
            for path in dest.rglob("*"):
                assert not path.is_symlink(), f"{path} is a link"
                assert path.is_file() or path.is_dir(), f"{path} is not a plain file or directory"
                assert os.path.realpath(path).startswith(os.path.realpath(dest) + os.sep)
        outside = sorted(p.name for p in root.iterdir())
        assert outside == sorted(["cache", archive.name]) or outside == [archive.name], outside
        assert not Path("/tmp/outside").exists()


def test_the_real_bundle_seed_extracts() -> None:
    check_extract(real_bundle_archive(), ".tar.gz")


@fuzz_settings(200)
@given(st.lists(member_specs(), min_size=1, max_size=8), st.booleans())
def test_generated_hostile_archives_extract_safely_or_are_refused(
    members: list[tuple[str, bytes, str, bytes]], compress: bool
) -> None:
    check_extract(build_tar(members, compress), ".tar.gz" if compress else ".tar")


@fuzz_settings(200)
@given(st.data())
def test_damaged_real_archives_extract_safely_or_are_refused(data: st.DataObject) -> None:
    blob = bytearray(real_bundle_archive())
    compressed = data.draw(st.booleans())
    if not compressed:
        blob = bytearray(gzip.decompress(bytes(blob)))
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        blob = blob[: data.draw(st.integers(0, len(blob)))]
    check_extract(bytes(blob), ".tar.gz" if compressed else ".tar")
