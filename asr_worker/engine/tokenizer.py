"""Token ids -> text for Whisper's byte-level BPE (GPT-2 style), and word grouping.

``vocabulary.txt`` holds one token per line (line index = id). Each character of a token stands
for one byte through GPT-2's printable byte mapping; joining and mapping back gives UTF-8 bytes.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

PUNCTUATION = frozenset(string.punctuation) | frozenset("。，！？：”“、¿¡«»…")
WORD_JOINERS = frozenset({"-", "'", "’"})


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {chr(b): b for b in printable}
    extra = 0
    for byte in range(256):
        if byte not in printable:
            mapping[chr(256 + extra)] = byte
            extra += 1
    return mapping


class Tokenizer:
    """Detokeniser over a vocabulary; ids at or above ``eot`` are special and never printed."""

    def __init__(self, tokens: list[str], eot: int) -> None:
        self.tokens = tokens
        self.eot = eot

    @classmethod
    def from_file(cls, path: Path, eot: int) -> Tokenizer:
        tokens = path.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        return cls(tokens, eot)

    def token_bytes(self, token_id: int) -> bytes:
        if token_id >= self.eot:
            return b""
        table = _unicode_to_byte()
        return bytes(table[ch] for ch in self.tokens[token_id])

    def decode(self, token_ids: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in token_ids).decode("utf-8", errors="replace")

    def split_words(self, token_ids: list[int]) -> list[tuple[str, list[int]]]:
        """Group text tokens into words: a new word starts at a leading space or at punctuation.

        Multi-byte characters split across tokens are kept whole (bytes are accumulated until they
        decode cleanly), so every token lands in exactly one word.
        """
        pieces: list[tuple[str, list[int]]] = []
        pending: list[int] = []
        pending_bytes = b""
        for token_id in token_ids:
            pending.append(token_id)
            pending_bytes += self.token_bytes(token_id)
            try:
                text = pending_bytes.decode("utf-8")
            except UnicodeDecodeError:
                continue
            pieces.append((text, pending))
            pending, pending_bytes = [], b""
        if pending:
            pieces.append((pending_bytes.decode("utf-8", errors="replace"), pending))
        words: list[tuple[str, list[int]]] = []
        for text, ids in pieces:
            joiner = text in WORD_JOINERS  # "ill" + "-" + "disposed", "don" + "'t"
            starts_word = not words or text.startswith(" ") or (text.strip() in PUNCTUATION and not joiner)
            if starts_word:
                words.append((text, list(ids)))
            else:
                prev_text, prev_ids = words[-1]
                words[-1] = (prev_text + text, prev_ids + ids)
        return words
