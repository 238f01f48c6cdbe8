"""The speaker encoder for diarization: Resemblyzer's pretrained voice encoder (Apache-2.0, shipped
as ``resemblyzer/pretrained.pt`` in the pinned PyPI wheel), rebuilt in torch and exported to ONNX.

Conversion-time only (``convert`` extra: torch, onnx). The network: a 3-layer LSTM over 40-channel
mel frames (25 ms windows, 10 ms hop, 16 kHz), a linear layer on the last layer's final hidden
state, ReLU, L2 normalisation: one 256-dimensional embedding per window of frames. The exported
graph is checked against torch on a fixed input, so a broken export fails the build.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from oyez.errors import ModelError

OPSET = 17
MEL_CHANNELS = 40
HIDDEN = 256
EMBEDDING = 256
LAYERS = 3
_TOLERANCE = 1e-4


class SpeakerEncoder(nn.Module):
    """mels (batch, frames, 40) -> L2-normalised embeddings (batch, 256)."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(MEL_CHANNELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        raw = torch.relu(self.linear(hidden[-1]))
        # The epsilon keeps an all-zero (ReLU-dead) embedding finite instead of NaN.
        normalised: torch.Tensor = raw / (torch.linalg.vector_norm(raw, dim=1, keepdim=True) + 1e-12)
        return normalised


def load_speaker_encoder(checkpoint: Path) -> SpeakerEncoder:
    """The encoder with the checkpoint's weights (its training-only similarity terms are ignored)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    weights = state.get("model_state") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise ModelError(f"{checkpoint} is not a Resemblyzer checkpoint (no model_state)")
    encoder = SpeakerEncoder()
    wanted = set(encoder.state_dict())
    missing = wanted - set(weights)
    if missing:
        raise ModelError(f"{checkpoint} lacks {sorted(missing)}")
    encoder.load_state_dict({name: weights[name] for name in wanted})
    return encoder.eval()


def export_speaker_encoder(encoder: SpeakerEncoder, path: Path) -> None:
    mels = torch.zeros(2, 160, MEL_CHANNELS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (mels,),
            str(path),
            input_names=["mels"],
            output_names=["embeddings"],
            dynamic_axes={"mels": {0: "batch", 1: "frames"}, "embeddings": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def check_speaker_export(encoder: SpeakerEncoder, path: Path) -> None:
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    # Mel power values are non-negative and spread over orders of magnitude.
    mels = (rng.standard_normal((3, 160, MEL_CHANNELS), dtype=np.float32) ** 2) * 0.1
    with torch.no_grad():
        expected = encoder(torch.from_numpy(mels)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (actual,) = session.run(["embeddings"], {"mels": mels})
    error = float(np.max(np.abs(actual - expected)))
    if not error <= _TOLERANCE:
        raise ModelError(f"The exported speaker encoder differs from torch by {error:.2e}")
