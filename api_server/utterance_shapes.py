"""Words grouped into utterances (sentences): shared by COMPAT responses and streaming finals."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

UTTERANCE_GAP_S = 0.8
_SENTENCE_END = (".", "?", "!")


def utterances(words: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``{"word","start","end"}`` items -> utterances; a new one after a sentence end or a 0.8 s pause,
    and (words with a ``speaker``: diarized) whenever the speaker changes, the utterance then
    carrying that ``speaker``."""
    groups: list[list[Mapping[str, Any]]] = []
    for word in words:
        if groups:
            previous = groups[-1][-1]
            ended = str(previous["word"]).rstrip().endswith(_SENTENCE_END)
            turned = word.get("speaker") != previous.get("speaker")
            if ended or turned or float(word["start"]) - float(previous["end"]) >= UTTERANCE_GAP_S:
                groups.append([word])
                continue
            groups[-1].append(word)
        else:
            groups.append([word])
    return [
        {
            "text": " ".join(str(w["word"]).strip() for w in group).strip(),
            "start": round(float(group[0]["start"]), 3),
            "end": round(float(group[-1]["end"]), 3),
            **({"speaker": group[0]["speaker"]} if "speaker" in group[0] else {}),
        }
        for group in groups
    ]
