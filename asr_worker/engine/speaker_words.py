"""Speakers for words (pure): each word takes the speaker turn it overlaps most, and runs of one
speaker's words become segments."""

from __future__ import annotations

from dataclasses import replace

from .diarization import Turn, word_speakers
from .types import SpeakerSegment, Word


def attribute_speakers(words: list[Word], turns: list[Turn]) -> tuple[list[Word], list[SpeakerSegment]]:
    """Each word gets the speaker of the turn it overlaps most; runs of one speaker's words become
    segments. Zero-length punctuation words stay with the word before them."""
    speakers = word_speakers([(w.start, w.end) for w in words], turns)
    labelled: list[Word] = []
    for index, (word, speaker) in enumerate(zip(words, speakers, strict=True)):
        if word.end <= word.start and labelled:
            speaker = labelled[index - 1].speaker or 0
        labelled.append(replace(word, speaker=speaker))
    segments: list[SpeakerSegment] = []
    for word in labelled:
        speaker = word.speaker or 0
        if segments and segments[-1].speaker == speaker:
            last = segments[-1]
            text = f"{last.text}{word.word}" if _attaches(word.word) else f"{last.text} {word.word}"
            segments[-1] = SpeakerSegment(speaker, text, last.start, max(last.end, word.end))
        else:
            segments.append(SpeakerSegment(speaker, word.word, word.start, word.end))
    return labelled, segments


def _attaches(token: str) -> bool:
    """Punctuation joins the previous word without a space."""
    return bool(token) and all(not ch.isalnum() for ch in token)
