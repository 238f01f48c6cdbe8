"""Export the torch Whisper modules to ONNX (opset 17) and check the graphs against torch.

Conversion-time only (``convert`` extra: torch, onnx). The check runs both graphs in ONNX Runtime
on a fixed pseudo-random input and compares them with torch, so a broken export fails the build
instead of producing a model that transcribes garbage.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from oyez.errors import ModelError

from .torch_whisper import WhisperDecoder, WhisperEncoder

OPSET = 17
N_FRAMES = 3000
_TOLERANCE = 2e-3


def export_encoder(encoder: WhisperEncoder, n_mels: int, path: Path) -> None:
    mel = torch.zeros(1, n_mels, N_FRAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (mel,),
            str(path),
            input_names=["mel"],
            output_names=["cross_k", "cross_v"],
            dynamic_axes={"mel": {0: "batch"}, "cross_k": {1: "batch"}, "cross_v": {1: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def export_decoder(
    decoder: WhisperDecoder, n_layers: int, d_model: int, n_audio_ctx: int, path: Path
) -> None:
    batch, past, new = 2, 3, 2
    tokens = torch.zeros(batch, new, dtype=torch.int64)
    self_kv = torch.zeros(n_layers, batch, past, d_model)
    cross = torch.zeros(n_layers, batch, n_audio_ctx, d_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            decoder,
            (tokens, self_kv, self_kv, cross, cross),
            str(path),
            input_names=["tokens", "self_k", "self_v", "cross_k", "cross_v"],
            output_names=["logits", "new_self_k", "new_self_v", "alignment"],
            dynamic_axes={
                "tokens": {0: "batch", 1: "new"},
                "self_k": {1: "batch", 2: "past"},
                "self_v": {1: "batch", 2: "past"},
                "cross_k": {1: "batch"},
                "cross_v": {1: "batch"},
                "logits": {0: "batch", 1: "new"},
                "new_self_k": {1: "batch", 2: "total"},
                "new_self_v": {1: "batch", 2: "total"},
                "alignment": {0: "batch", 2: "new"},
            },
            opset_version=OPSET,
            dynamo=False,
        )


def tie_output_projection(path: Path, embedding_name: str = "embeddings") -> None:
    """Make the vocabulary projection reuse the token-embedding matrix.

    The legacy exporter constant-folds ``embeddings.T`` into a second initializer as large as the
    embedding itself. Rewire that ``MatMul(x, E^T)`` into ``Gemm(x, E, transB=1)`` and drop the copy.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    if embedding_name not in initializers:
        raise ModelError(f"Decoder graph has no {embedding_name!r} initializer")
    vocab, width = initializers[embedding_name].dims
    embedding = numpy_helper.to_array(initializers[embedding_name])
    for index, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.input[1] not in initializers:
            continue
        weight = initializers[node.input[1]]
        if list(weight.dims) != [width, vocab]:
            continue
        if not np.array_equal(numpy_helper.to_array(weight), embedding.T):
            raise ModelError("Decoder output projection is not tied to the token embedding")
        gemm = helper.make_node(
            "Gemm", [node.input[0], embedding_name], list(node.output), name="output_projection", transB=1
        )
        graph.node.remove(node)
        graph.node.insert(index, gemm)
        graph.initializer.remove(weight)
        onnx.save(model, str(path))
        return
    raise ModelError("Decoder graph has no output projection MatMul to tie")


def check_export(
    encoder: WhisperEncoder, decoder: WhisperDecoder, encoder_path: Path, decoder_path: Path, n_mels: int
) -> float:
    """Run ORT and torch on the same inputs (batch 2, a prompt then one cached step); max abs diff."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    mel = rng.standard_normal((2, n_mels, N_FRAMES)).astype(np.float32) * 0.5
    enc = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(decoder_path), providers=["CPUExecutionProvider"])
    cross_k, cross_v = enc.run(None, {"mel": mel})
    with torch.no_grad():
        t_k, t_v = encoder(torch.from_numpy(mel))
    worst = max(float(np.abs(cross_k - t_k.numpy()).max()), float(np.abs(cross_v - t_v.numpy()).max()))
    n_layers, _, _, width = cross_k.shape
    empty = np.zeros((n_layers, 2, 0, width), dtype=np.float32)
    prompt = np.array([[50257, 50362, 440], [50257, 50362, 1002]], dtype=np.int64)
    logits, self_k, self_v, _ = dec.run(
        None, {"tokens": prompt, "self_k": empty, "self_v": empty, "cross_k": cross_k, "cross_v": cross_v}
    )
    step = np.array([[257], [262]], dtype=np.int64)
    step_logits, *_ = dec.run(
        None, {"tokens": step, "self_k": self_k, "self_v": self_v, "cross_k": cross_k, "cross_v": cross_v}
    )
    full = np.concatenate([prompt, step], axis=1)
    with torch.no_grad():
        t_empty = torch.from_numpy(empty)
        t_logits, *_ = decoder(torch.from_numpy(full), t_empty, t_empty, t_k, t_v)
    worst = max(worst, float(np.abs(logits - t_logits.numpy()[:, :3]).max()))
    worst = max(worst, float(np.abs(step_logits[:, 0] - t_logits.numpy()[:, 3]).max()))
    if not worst < _TOLERANCE:
        raise ModelError(
            f"ONNX export check failed: max |ORT - torch| = {worst:.2e} (limit {_TOLERANCE:.0e})"
        )
    return worst
