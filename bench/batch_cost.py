"""``python -m bench.batch_cost``: what batching buys on this machine, and whether it changes results.

Takes B real clips, times the bundle's encoder and greedy decoding one clip at a time (batch 1) and
all B at once (batch B, as the worker's batcher runs them), and prints the cost per window. It also
checks that batching leaves each window's tokens unchanged: the largest difference of the encoder
output (cross-attention K) between batch 1 and batch B, and how many windows decoded differently.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

REPEATS = 3


@dataclass(frozen=True)
class BatchCost:
    encode_b1: float  # seconds per window
    decode_b1: float
    encode_bn: float
    decode_bn: float
    max_cross_k_diff: float
    windows_changed: int


def _median_s(call: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def batch_cost(bundle_dir: Path, windows: Sequence[npt.NDArray[np.float32]]) -> BatchCost:
    """Per-window encode/decode seconds at batch 1 and batch ``len(windows)``, plus consistency."""
    from asr_worker.engine.decoding import build_prompt, greedy_decode
    from asr_worker.engine.features import log_mel_spectrogram
    from asr_worker.engine.onnx_model import WhisperOnnx
    from asr_worker.model.bundle import load_manifest

    manifest = load_manifest(bundle_dir)
    model = WhisperOnnx(bundle_dir, manifest)
    prompt = build_prompt(manifest, "en")
    mels = [log_mel_spectrogram(samples, manifest.dims.n_mels)[None] for samples in windows]
    n = len(mels)
    singles = [model.encode(mel) for mel in mels]  # also warms batch 1 up
    single_tokens = [greedy_decode(model, k, v, [prompt])[0].tokens for k, v in singles]
    batch_mel = np.concatenate(mels)
    cross_k, cross_v = model.encode(batch_mel)  # warms batch n up
    batch_tokens = [w.tokens for w in greedy_decode(model, cross_k, cross_v, [prompt] * n)]
    diff = max(float(np.abs(cross_k[:, i : i + 1] - singles[i][0]).max()) for i in range(n))
    encode_b1 = sum(_median_s(partial(model.encode, mel)) for mel in mels)
    decode_b1 = sum(_median_s(partial(greedy_decode, model, k, v, [prompt])) for k, v in singles)
    return BatchCost(
        encode_b1=encode_b1 / n,
        decode_b1=decode_b1 / n,
        encode_bn=_median_s(partial(model.encode, batch_mel)) / n,
        decode_bn=_median_s(partial(greedy_decode, model, cross_k, cross_v, [prompt] * n)) / n,
        max_cross_k_diff=diff,
        windows_changed=sum(a != b for a, b in zip(single_tokens, batch_tokens, strict=True)),
    )


def main(argv: Sequence[str] | None = None) -> int:
    from asr_worker.model.build import build_model, default_cache_dir
    from bench.cpu import CpuMeter
    from bench.workload import load_clips

    parser = argparse.ArgumentParser(prog="python -m bench.batch_cost", description=__doc__)
    parser.add_argument("--models", default="whisper-tiny.en,whisper-base")
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    clips = load_clips()[: args.batch]
    b = len(clips)
    print(f"Per-window cost in ms (median of {REPEATS}) over {b} clips: {', '.join(c.id for c in clips)}\n")
    print(
        f"| model | precision | encode b1 | encode b{b} | decode b1 | decode b{b} | window b1 | window b{b} "
        f"| max Δ cross_k b{b} vs b1 | windows decoded differently | CPU used by others |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for precision in args.precisions.split(","):
            bundle = build_model(
                model,
                int8=precision == "int8",
                cache_dir=args.cache_dir or default_cache_dir(),
                progress=False,
            )
            meter = CpuMeter([])
            cost = batch_cost(bundle, [clip.samples for clip in clips])
            usage = meter.stop()
            cells = [
                cost.encode_b1,
                cost.encode_bn,
                cost.decode_b1,
                cost.decode_bn,
                cost.encode_b1 + cost.decode_b1,
                cost.encode_bn + cost.decode_bn,
            ]
            others = f"{usage.others_share:.0%}" if usage else "–"
            print(
                f"| {model} | {precision} | "
                + " | ".join(f"{v * 1000:.0f}" for v in cells)
                + f" | {cost.max_cross_k_diff:.2g} | {cost.windows_changed}/{b} | {others} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
