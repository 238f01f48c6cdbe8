"""Unit tests for safe archive extraction and the local-source paths of model resolution."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from asr_worker.model.bundle import MANIFEST_NAME, verify_bundle
from asr_worker.model.extract import safe_extract_tar
from asr_worker.model.fetch import cache_key, redact_url, resolve_model
from oyez.errors import ModelError
from tests.bundle_factory import make_archive, make_bundle


def _extract(archive: Path, dest: Path) -> Path:
    """Extract under roomy limits: only the member checks can refuse."""
    return safe_extract_tar(archive, dest, max_total_bytes=64 << 20, max_members=50, max_ratio=50.0)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _build(path: Path, populate: Callable[[tarfile.TarFile], None]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        populate(tar)
    return path


def _special(name: str, kind: bytes, linkname: str = "") -> Callable[[tarfile.TarFile], None]:
    def populate(tar: tarfile.TarFile) -> None:
        _add_bytes(tar, "manifest.json", b"{}")
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        tar.addfile(info)

    return populate


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    make_bundle(tmp_path / "src")
    return tmp_path / "src"


@pytest.mark.parametrize(
    ("member", "populate", "reason"),
    [
        ("../evil.txt", lambda tar: _add_bytes(tar, "../evil.txt", b"x"), "'..'"),
        ("bundle/../../evil.txt", lambda tar: _add_bytes(tar, "bundle/../../evil.txt", b"x"), "'..'"),
        ("/etc/evil.txt", lambda tar: _add_bytes(tar, "/etc/evil.txt", b"x"), "absolute path"),
        ("link", _special("link", tarfile.SYMTYPE, "/etc/passwd"), "symlink"),
        ("hard", _special("hard", tarfile.LNKTYPE, "manifest.json"), "hardlink"),
        ("pipe", _special("pipe", tarfile.FIFOTYPE), "FIFO"),
        ("null", _special("null", tarfile.CHRTYPE), "device file"),
        ("disk", _special("disk", tarfile.BLKTYPE), "device file"),
    ],
)
def test_refuses_malicious_member(
    tmp_path: Path, member: str, populate: Callable[[tarfile.TarFile], None], reason: str
) -> None:
    archive = _build(tmp_path / "evil.tar.gz", populate)
    dest = tmp_path / "out"
    with pytest.raises(ModelError) as excinfo:
        _extract(archive, dest)
    assert member in excinfo.value.message
    assert reason in excinfo.value.message
    assert not dest.exists()
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar.gz"]  # no scratch left behind


def test_refuses_decompression_bomb_by_ratio(tmp_path: Path) -> None:
    zeros = 32 * 1024 * 1024
    archive = _build(tmp_path / "bomb.tar.gz", lambda tar: _add_bytes(tar, "zeros.bin", bytes(zeros)))
    assert archive.stat().st_size < zeros // 100  # really a bomb: >100x
    with pytest.raises(ModelError, match=r"'zeros.bin' looks like a decompression bomb"):
        safe_extract_tar(archive, tmp_path / "out", max_total_bytes=1 << 30, max_members=10, max_ratio=20)
    assert not (tmp_path / "out").exists()


def test_refuses_more_than_total_bytes(tmp_path: Path) -> None:
    archive = _build(tmp_path / "big.tar.gz", lambda tar: _add_bytes(tar, "zeros.bin", bytes(4 << 20)))
    with pytest.raises(ModelError, match=r"'zeros.bin' takes the archive past 1048576 uncompressed bytes"):
        safe_extract_tar(archive, tmp_path / "out", max_total_bytes=1 << 20, max_members=10, max_ratio=1e9)


def test_refuses_too_many_members(tmp_path: Path) -> None:
    def populate(tar: tarfile.TarFile) -> None:
        for index in range(11):
            _add_bytes(tar, f"f{index:02d}.txt", b"x")

    archive = _build(tmp_path / "many.tar.gz", populate)
    with pytest.raises(ModelError, match=r"more than 10 members \(at 'f10.txt'\)"):
        safe_extract_tar(archive, tmp_path / "out", max_total_bytes=1 << 20, max_members=10, max_ratio=1e9)


def test_refuses_duplicate_member(tmp_path: Path) -> None:
    def populate(tar: tarfile.TarFile) -> None:
        _add_bytes(tar, "manifest.json", b"{}")
        _add_bytes(tar, "./manifest.json", b"{evil}")

    archive = _build(tmp_path / "dup.tar.gz", populate)
    with pytest.raises(ModelError, match="appears twice"):
        _extract(archive, tmp_path / "out")


def test_refuses_non_tar(tmp_path: Path) -> None:
    archive = tmp_path / "junk.tar.gz"
    archive.write_bytes(gzip.compress(b"this is not a tar archive" * 40))
    with pytest.raises(ModelError, match="not a readable tar archive"):
        _extract(archive, tmp_path / "out")


@pytest.mark.parametrize("wrap", ["bundle", None])
@pytest.mark.parametrize("compressed", [True, False])
def test_extracts_good_bundle(tmp_path: Path, bundle_dir: Path, wrap: str | None, compressed: bool) -> None:
    archive = make_archive(bundle_dir, tmp_path / "good.tar", wrap=wrap, gzip=compressed)
    dest = _extract(archive, tmp_path / "out")
    assert dest == tmp_path / "out"
    assert (dest / MANIFEST_NAME).is_file()
    manifest = verify_bundle(dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted([*manifest.files, MANIFEST_NAME])


def test_extracts_dot_slash_archive(tmp_path: Path, bundle_dir: Path) -> None:
    """``tar -C dir .`` style names (``.``, ``./manifest.json``) land at the root."""
    archive = tmp_path / "dot.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_dir, arcname=".")
    dest = _extract(archive, tmp_path / "out")
    verify_bundle(dest)


def test_refuses_non_empty_destination(tmp_path: Path, bundle_dir: Path) -> None:
    archive = make_archive(bundle_dir, tmp_path / "good.tgz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ModelError, match="not an empty directory"):
        _extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# --- resolve_model on local sources -------------------------------------------------------------


def test_bundle_directory_is_verified_in_place(tmp_path: Path, bundle_dir: Path) -> None:
    cache = tmp_path / "cache"
    assert resolve_model(str(bundle_dir), cache_dir=cache) == bundle_dir
    assert resolve_model(bundle_dir.as_uri(), cache_dir=cache) == bundle_dir
    assert not cache.exists()  # nothing copied


def test_corrupt_bundle_directory_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    (bundle_dir / "encoder.onnx").write_bytes(b"tampered")
    with pytest.raises(ModelError, match=r"encoder\.onnx"):
        resolve_model(str(bundle_dir), cache_dir=tmp_path / "cache")


def test_local_archive_is_extracted_into_cache(tmp_path: Path, bundle_dir: Path) -> None:
    archive = make_archive(bundle_dir, tmp_path / "model.tar.gz")
    cache = tmp_path / "cache"
    first = resolve_model(str(archive), cache_dir=cache, progress=False)
    assert first.parent == cache
    assert first.name == cache_key(str(archive))
    verify_bundle(first)
    assert resolve_model(archive.as_uri(), cache_dir=cache, progress=False) == first
    assert archive.exists()  # the user's archive is never removed


def test_missing_and_unsupported_sources(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), cache_dir=tmp_path / "cache")
    (tmp_path / "model.zip").write_bytes(b"PK")
    with pytest.raises(ModelError, match="neither a bundle directory"):
        resolve_model(str(tmp_path / "model.zip"), cache_dir=tmp_path / "cache")
    with pytest.raises(ModelError, match="Unsupported MODEL_URL scheme 'ftp'"):
        resolve_model("ftp://example.invalid/model.tgz", cache_dir=tmp_path / "cache")
    with pytest.raises(ModelError, match="64 hexadecimal"):
        resolve_model("https://example.invalid/m.tgz", cache_dir=tmp_path / "cache", expected_sha256="abc")


def test_redact_url_and_cache_key() -> None:
    url = "https://user:s3cret@models.example.com:8443/a/model.tgz?X-Amz-Signature=abc#frag"
    assert redact_url(url) == "https://models.example.com:8443/a/model.tgz"
    assert cache_key(url) == cache_key("https://models.example.com:8443/a/model.tgz?X-Amz-Signature=zzz")
    assert cache_key(url) != cache_key("https://models.example.com:8443/b/model.tgz")
    digest = "ab" * 32
    assert cache_key(url, digest.upper()) == f"sha256-{digest}"
