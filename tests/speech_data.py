"""The committed real-speech clips (``tests/data/speech/``) and their reference transcripts.

See ``tests/data/README.md`` for where each clip comes from; ``scripts/fetch_test_data.py``
re-creates the directory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SPEECH_DIR = Path(__file__).resolve().parent / "data" / "speech"
MANIFEST_PATH = SPEECH_DIR / "manifest.json"


@dataclass(frozen=True)
class SpeechClip:
    """One clip: a 16 kHz mono 16-bit WAV file and what is said in it."""

    id: str
    path: Path
    text: str
    duration_s: float


def load_speech_manifest(manifest_path: Path = MANIFEST_PATH) -> list[SpeechClip]:
    """Return every clip listed in the manifest, in manifest order, with absolute paths."""
    entries = json.loads(manifest_path.read_text(encoding="utf-8"))
    base = manifest_path.parent
    return [
        SpeechClip(
            id=str(entry["id"]),
            path=base / str(entry["file"]),
            text=str(entry["text"]),
            duration_s=float(entry["duration_s"]),
        )
        for entry in entries
    ]


def speech_clip(clip_id: str) -> SpeechClip:
    """Return the clip called ``clip_id`` (raises ``KeyError`` naming the known ids if absent)."""
    clips = {clip.id: clip for clip in load_speech_manifest()}
    try:
        return clips[clip_id]
    except KeyError:
        raise KeyError(f"no speech clip {clip_id!r}; known: {', '.join(sorted(clips))}") from None


def corpus_wer(references: list[str], hypotheses: list[str]) -> float:
    """Corpus-level WER after OpenAI Whisper's English normaliser (``whisper-normalizer``)."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalise = EnglishTextNormalizer()
    refs = [normalise(text) for text in references]
    hyps = [normalise(text) for text in hypotheses]
    return float(jiwer.wer(refs, hyps))
