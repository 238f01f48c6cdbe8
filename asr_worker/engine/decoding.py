"""Greedy Whisper decoding with a KV cache, over a batch of windows at once.

All windows of a batch share one prompt length (the prompt layout is fixed per model), so the
sequences stay position-aligned and no padding mask is needed; a sequence that emits ``eot`` is
dropped from the batch. With fp32 graphs each sequence's result depends only on its own window, so
batched and unbatched decoding give the same tokens. (int8 graphs quantise activations per tensor,
across the batch, so there the engine decodes each window on its own; see ``transcriber``.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from asr_worker.model.bundle import BundleManifest

FloatArray = npt.NDArray[np.float32]
MAX_NEW_TOKENS = 224


class DecoderModel(Protocol):
    manifest: BundleManifest

    def empty_cache(self, batch: int) -> FloatArray: ...

    def decode(
        self,
        tokens: npt.NDArray[np.int64],
        self_k: FloatArray,
        self_v: FloatArray,
        cross_k: FloatArray,
        cross_v: FloatArray,
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]: ...


@dataclass
class DecodedWindow:
    """Text tokens (no specials), their probabilities, and the alignment-head attention.

    ``alignment`` is ``[A, len(tokens) + 1, 1500]``: the rows of the positions that predicted each
    text token and the end token (the last prompt token through the last text token).
    """

    tokens: list[int]
    probabilities: list[float]
    alignment: FloatArray


def build_prompt(manifest: BundleManifest, language: str) -> list[int]:
    """English-only: ``[sot, notimestamps]``; multilingual: ``[sot, <|lang|>, transcribe, notimestamps]``."""
    special = manifest.special_tokens
    if not manifest.multilingual:
        return [special.sot, special.no_timestamps]
    assert special.transcribe is not None
    return [special.sot, manifest.languages[language], special.transcribe, special.no_timestamps]


def suppression_masks(manifest: BundleManifest) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(always, first step only) boolean masks over the vocabulary."""
    always = np.zeros(manifest.dims.n_vocab, dtype=np.bool_)
    always[manifest.suppress_ids] = True
    always[manifest.special_tokens.eot + 1 :] = True
    first = always.copy()
    first[manifest.suppress_ids_begin] = True
    return always, first


def _log_softmax(logits: FloatArray) -> FloatArray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    result: FloatArray = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return result


def greedy_decode(
    model: DecoderModel,
    cross_k: FloatArray,
    cross_v: FloatArray,
    prompts: list[list[int]],
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[DecodedWindow]:
    """Decode every window of the batch until each emits ``eot`` (or hits the token limit).

    A window that finishes leaves the batch (its rows are dropped from the token, cache and
    cross-attention arrays), so the rest do not pay for it on later steps.
    """
    batch = len(prompts)
    if len({len(p) for p in prompts}) != 1:
        raise ValueError("All prompts of a batch must have the same length")
    manifest = model.manifest
    eot = manifest.special_tokens.eot
    limit = min(max_new_tokens, manifest.dims.n_text_ctx - len(prompts[0]))
    always, first = suppression_masks(manifest)
    tokens = np.asarray(prompts, dtype=np.int64)
    self_k = self_v = model.empty_cache(batch)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    probabilities: list[list[float]] = [[] for _ in range(batch)]
    rows: list[list[FloatArray]] = [[] for _ in range(batch)]
    active = np.arange(batch)  # original index of each row still decoding
    for step in range(limit):
        logits, self_k, self_v, alignment = model.decode(tokens, self_k, self_v, cross_k, cross_v)
        last = logits[:, -1].astype(np.float32)
        last[:, first if step == 0 else always] = -np.inf
        logprobs = _log_softmax(last)
        chosen = logprobs.argmax(axis=-1)
        keep = np.ones(active.size, dtype=np.bool_)
        for row, index in enumerate(active):
            rows[index].append(alignment[row, :, -1])
            token = int(chosen[row])
            if token == eot:
                keep[row] = False
                continue
            outputs[index].append(token)
            probabilities[index].append(float(np.exp(logprobs[row, token])))
        if not keep.any():
            break
        if not keep.all():
            active, chosen = active[keep], chosen[keep]
            self_k, self_v = self_k[:, keep], self_v[:, keep]
            cross_k, cross_v = cross_k[:, keep], cross_v[:, keep]
        tokens = chosen.astype(np.int64)[:, None]
    return [
        DecodedWindow(
            tokens=outputs[i],
            probabilities=probabilities[i],
            alignment=np.ascontiguousarray(np.stack(rows[i], axis=1)[:, : len(outputs[i]) + 1]),
        )
        for i in range(batch)
    ]
