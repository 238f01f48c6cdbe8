"""``python -m bench.gpu_copy_probe BUNDLE_DIR...``: the cost of the decoder's per-step copies on CUDA.

The engine calls the decoder with numpy arrays, so on the CUDA execution provider ``cross_k`` and
``cross_v`` (``[L, B, 1500, D]`` float32, 18 MB per window for tiny.en, 37 MB for base) are copied to
the GPU again on every decoding step. This probe (not the worker) times ``WhisperOnnx.encode`` and
30 greedy decoder steps at batch 1 and 8, once as the engine does it and once with ``cross_k`` /
``cross_v`` handed over as CUDA ``OrtValue``s made once per window (what ORT I/O binding would do).
Needs onnxruntime-gpu and a GPU; prints one line per model and batch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

STEPS = 30
DEVICE_ID = 0


def decoder_step_ms(model: Any, prompt: list[int], batch: int, cross_k: Any, cross_v: Any) -> float:
    """Mean wall ms of one greedy decoder step over ``STEPS`` steps from the prompt (KV cache growing)."""
    tokens = np.asarray([prompt] * batch, dtype=np.int64)
    self_k = self_v = model.empty_cache(batch)
    started = time.perf_counter()
    for _ in range(STEPS):
        logits, self_k, self_v, _alignment = model.decoder.run(
            None,
            {"tokens": tokens, "self_k": self_k, "self_v": self_v, "cross_k": cross_k, "cross_v": cross_v},
        )
        tokens = logits[:, -1].argmax(-1).astype(np.int64)[:, None]
    return (time.perf_counter() - started) / STEPS * 1000


def probe(bundle: Path, samples: Any) -> list[str]:
    import onnxruntime as ort

    from asr_worker.engine.decoding import build_prompt
    from asr_worker.engine.features import log_mel_spectrogram
    from asr_worker.engine.onnx_model import WhisperOnnx
    from asr_worker.model.bundle import load_manifest

    manifest = load_manifest(bundle)
    model = WhisperOnnx(bundle, manifest, require_gpu=True, device_id=DEVICE_ID)
    prompt = build_prompt(manifest, "en")
    one = log_mel_spectrogram(samples, manifest.dims.n_mels)[None]
    lines = []
    for batch in (1, 8):
        mel = np.repeat(one, batch, axis=0)
        for _ in range(2):
            cross_k, cross_v = model.encode(mel)
        started = time.perf_counter()
        for _ in range(5):
            cross_k, cross_v = model.encode(mel)
        encode_ms = (time.perf_counter() - started) / 5 * 1000
        decoder_step_ms(model, prompt, batch, cross_k, cross_v)  # warm-up
        host = min(decoder_step_ms(model, prompt, batch, cross_k, cross_v) for _ in range(3))
        dev_k = ort.OrtValue.ortvalue_from_numpy(cross_k, "cuda", DEVICE_ID)
        dev_v = ort.OrtValue.ortvalue_from_numpy(cross_v, "cuda", DEVICE_ID)
        decoder_step_ms(model, prompt, batch, dev_k, dev_v)  # warm-up
        device = min(decoder_step_ms(model, prompt, batch, dev_k, dev_v) for _ in range(3))
        copied_mb = (cross_k.nbytes + cross_v.nbytes) / 1e6
        lines.append(
            f"{manifest.name} b={batch}: encode {encode_ms:.1f} ms/batch; decoder step {host:.2f} ms with "
            f"numpy cross_k/v ({copied_mb:.0f} MB copied per step), {device:.2f} ms with CUDA OrtValues "
            f"({host / device:.1f}x)"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from bench.workload import load_clips

    bundles = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not bundles:
        print(__doc__, file=sys.stderr)
        return 2
    samples = load_clips()[0].samples
    for bundle in bundles:
        for line in probe(bundle, samples):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
