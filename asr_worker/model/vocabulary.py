"""Whisper vocabulary facts derived from ``vocabulary.txt`` and the CTranslate2 ``config.json``.

Pure functions: they read token strings and ids, and decide English-only vs multilingual by the
vocabulary size (51864 vs 51865), never by the presence of ``<|en|>`` (tiny.en has that token too).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oyez.errors import ModelError

from .bundle import SpecialTokens

ENGLISH_ONLY_VOCAB_SIZE = 51864


def read_vocabulary(path: Path) -> list[str]:
    tokens = path.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return tokens


def is_multilingual(vocab_size: int) -> bool:
    return vocab_size > ENGLISH_ONLY_VOCAB_SIZE


def special_tokens(tokens: list[str]) -> SpecialTokens:
    index = {token: i for i, token in enumerate(tokens) if token.startswith("<|")}

    def need(name: str) -> int:
        if name not in index:
            raise ModelError(f"Vocabulary lacks the special token {name}")
        return index[name]

    return SpecialTokens(
        eot=need("<|endoftext|>"),
        sot=need("<|startoftranscript|>"),
        no_timestamps=need("<|notimestamps|>"),
        timestamp_begin=need("<|0.00|>"),
        transcribe=index.get("<|transcribe|>"),
        translate=index.get("<|translate|>"),
        no_speech=index.get("<|nocaptions|>", index.get("<|nospeech|>")),
    )


def language_tokens(tokens: list[str], config: dict[str, Any]) -> dict[str, int]:
    """Language code -> token id, for multilingual vocabularies; ``{"en": -1}``-free for .en models."""
    if not is_multilingual(len(tokens)):
        return {}
    ids = config.get("lang_ids") or []
    languages: dict[str, int] = {}
    for token_id in ids:
        token = tokens[int(token_id)]
        if not (token.startswith("<|") and token.endswith("|>")):
            raise ModelError(f"lang_ids entry {token_id} is not a language token ({token!r})")
        languages[token[2:-2]] = int(token_id)
    return languages


def read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"Cannot read model config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"Model config {path} is not a JSON object")
    return data
