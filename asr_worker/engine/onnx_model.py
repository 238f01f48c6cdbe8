"""ONNX Runtime sessions for a Whisper bundle: provider choice, encoder and decoder calls.

CUDA execution provider when onnxruntime-gpu offers it (device ``GPU_DEVICE_ID``), CPU otherwise.
With ``require_gpu`` a missing or failed CUDA provider is an error, never a silent CPU fallback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from asr_worker.model.bundle import BundleManifest
from oyez.errors import OyezError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class GpuUnavailable(OyezError):
    """``OYEZ_REQUIRE_GPU`` is set but the CUDA execution provider cannot be used."""

    code = "GPU_UNAVAILABLE"


@dataclass(frozen=True)
class DeviceInfo:
    provider: str
    description: str  # e.g. "NVIDIA H100 80GB HBM3 (79GB)" or "CPU: AMD EPYC (2 cores)"

    @property
    def is_gpu(self) -> bool:
        return self.provider == CUDA


def describe_gpu(device_id: int) -> str:
    """``<name> (<N>GB)`` from nvidia-smi when present, else a generic CUDA device name."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits", "-i", str(device_id)],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
            name, memory_mib = (part.strip() for part in out.split(",", 1))
            return f"{name} ({round(float(memory_mib) / 1024)}GB)"
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return f"CUDA device {device_id}"


def describe_cpu() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def session_options(intra_op_threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    options.log_severity_level = 3
    return options


def choose_providers(require_gpu: bool, device_id: int) -> list[Any]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA in available:
        return [(CUDA, {"device_id": device_id}), CPU]
    if require_gpu:
        raise GpuUnavailable(
            "OYEZ_REQUIRE_GPU is set but onnxruntime has no CUDA execution provider "
            f"(available: {', '.join(available)}); install the worker-gpu extra on a GPU node"
        )
    return [CPU]


class WhisperOnnx:
    """The encoder and decoder sessions of one bundle."""

    def __init__(
        self,
        bundle_dir: Path,
        manifest: BundleManifest,
        *,
        require_gpu: bool = False,
        device_id: int = 0,
        intra_op_threads: int = 0,
    ) -> None:
        import onnxruntime as ort

        self.manifest = manifest
        providers = choose_providers(require_gpu, device_id)
        options = session_options(intra_op_threads)
        self.encoder = ort.InferenceSession(str(bundle_dir / "encoder.onnx"), options, providers=providers)
        self.decoder = ort.InferenceSession(str(bundle_dir / "decoder.onnx"), options, providers=providers)
        active = self.decoder.get_providers()[0]
        if require_gpu and active != CUDA:
            raise GpuUnavailable(f"CUDA execution provider failed to initialise (active: {active})")
        self.device = DeviceInfo(
            provider=active, description=describe_gpu(device_id) if active == CUDA else describe_cpu()
        )
        dims = manifest.dims
        self._empty_cache_shape = (dims.n_layers, 0, 0, dims.d_model)

    def encode(self, mel: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """``mel [B, n_mels, 3000]`` -> ``cross_k, cross_v [L, B, 1500, D]``."""
        cross_k, cross_v = self.encoder.run(None, {"mel": mel})
        return cross_k, cross_v

    def empty_cache(self, batch: int) -> npt.NDArray[np.float32]:
        layers, _, _, width = self._empty_cache_shape
        return np.zeros((layers, batch, 0, width), dtype=np.float32)

    def decode(
        self,
        tokens: npt.NDArray[np.int64],
        self_k: npt.NDArray[np.float32],
        self_v: npt.NDArray[np.float32],
        cross_k: npt.NDArray[np.float32],
        cross_v: npt.NDArray[np.float32],
    ) -> tuple[
        npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]
    ]:
        """One decoder call; returns logits, new self K/V and the alignment heads' attention."""
        logits, new_k, new_v, alignment = self.decoder.run(
            None,
            {"tokens": tokens, "self_k": self_k, "self_v": self_v, "cross_k": cross_k, "cross_v": cross_v},
        )
        return logits, new_k, new_v, alignment
