"""Tokens -> words with times and confidence; punctuation kept attached or removed.

Pure functions. Leading punctuation (quotes, brackets) joins the following word, trailing
punctuation joins the previous one, so a word list never contains punctuation-only entries.
With ``punctuate=False`` punctuation is stripped from text and words alike (intra-word apostrophes
and hyphens stay: "don't" and "well-known" are words, not punctuation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .tokenizer import PUNCTUATION
from .types import Word

PREPEND = "\"'“¿¡([{«-"
_STRIP_RE = re.compile(r"(?<![\w])['’-]|['’-](?![\w])|[^\w\s'’-]")
_SPACES_RE = re.compile(r"\s+")


@dataclass
class TimedPiece:
    text: str
    start: float
    end: float
    probabilities: list[float]


def strip_punctuation(text: str) -> str:
    """Remove punctuation but keep apostrophes/hyphens inside words."""
    return _SPACES_RE.sub(" ", _STRIP_RE.sub("", text)).strip()


def clean_text(text: str, punctuate: bool) -> str:
    text = _SPACES_RE.sub(" ", text).strip()
    return text if punctuate else strip_punctuation(text)


def _is_punctuation(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and all(ch in PUNCTUATION for ch in stripped)


def merge_punctuation(pieces: list[TimedPiece]) -> list[TimedPiece]:
    merged: list[TimedPiece] = []
    carry: TimedPiece | None = None
    for piece in pieces:
        if _is_punctuation(piece.text):
            if piece.text.strip()[0] in PREPEND and (not merged or piece.text.startswith(" ")):
                carry = (
                    piece
                    if carry is None
                    else TimedPiece(
                        carry.text + piece.text,
                        carry.start,
                        carry.end,
                        carry.probabilities + piece.probabilities,
                    )
                )
                continue
            if merged:
                last = merged[-1]
                merged[-1] = TimedPiece(
                    last.text + piece.text.strip(),
                    last.start,
                    last.end,
                    last.probabilities + piece.probabilities,
                )
                continue
        if carry is not None:
            piece = TimedPiece(
                " " + carry.text.strip() + piece.text.lstrip(),
                piece.start,
                piece.end,
                carry.probabilities + piece.probabilities,
            )
            carry = None
        merged.append(piece)
    if carry is not None and merged:
        last = merged[-1]
        merged[-1] = TimedPiece(last.text + carry.text.strip(), last.start, last.end, last.probabilities)
    return merged


def snap_to_speech(words: list[Word], speech: list[tuple[float, float]]) -> list[Word]:
    """Move word edges that fall in VAD silence onto the nearest speech edge inside the word.

    Cross-attention alignment tends to let a word absorb the pause before it (the first word of a
    window starts at the window start). VAD knows where the pause is: a start inside silence moves
    forward to the next speech onset, an end inside silence moves back to the last speech offset,
    whenever that keeps ``start <= end``.
    """
    if not speech:
        return words
    snapped: list[Word] = []
    for word in words:
        start, end = word.start, word.end
        if not any(a <= start < b for a, b in speech):
            onsets = [a for a, _ in speech if start < a <= end]
            if onsets:
                start = onsets[0]
        if not any(a < end <= b for a, b in speech):
            offsets = [b for _, b in speech if start <= b < end]
            if offsets:
                end = offsets[-1]
        snapped.append(Word(word.word, round(start, 3), round(end, 3), word.confidence))
    return snapped


def build_words(
    word_groups: list[tuple[str, list[int]]],
    probabilities: list[float],
    token_starts: npt.NDArray[np.float64],
    offset: float,
    window_end: float,
    punctuate: bool,
) -> list[Word]:
    """Timed words for one window. ``token_starts[k]`` is when text token ``k`` begins (seconds
    from the window start); the entry after the last token marks the end of the last word."""
    pieces: list[TimedPiece] = []
    cursor = 0
    for text, ids in word_groups:
        first, after = cursor, cursor + len(ids)
        cursor = after
        start = offset + float(token_starts[first])
        end = offset + float(token_starts[min(after, len(token_starts) - 1)])
        pieces.append(TimedPiece(text, start, end, probabilities[first:after]))
    words: list[Word] = []
    previous_end = offset
    for piece in merge_punctuation(pieces):
        text = piece.text.strip() if punctuate else strip_punctuation(piece.text)
        if not text:
            continue
        start = min(max(piece.start, previous_end), window_end)
        end = min(max(piece.end, start), window_end)
        confidence = float(np.mean(piece.probabilities)) if piece.probabilities else 0.0
        words.append(
            Word(word=text, start=round(start, 3), end=round(end, 3), confidence=round(confidence, 4))
        )
        previous_end = end
    return words
