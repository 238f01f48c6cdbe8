"""Whisper as two export-friendly torch modules, built from CTranslate2 weights.

Only used at conversion time (``convert`` extra). ``WhisperEncoder`` maps a log-mel to the
per-decoder-layer cross-attention keys and values; ``WhisperDecoder`` runs tokens with a self-
attention KV cache and also returns the cross-attention weights of the alignment heads, which the
runtime uses for word timestamps.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from .ct2 import Ct2Model

LAYER_NORM_EPS = 1e-5


def _param(array: np.ndarray) -> nn.Parameter:
    return nn.Parameter(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)), requires_grad=False)


class _Linear(nn.Module):
    def __init__(self, model: Ct2Model, prefix: str) -> None:
        super().__init__()
        self.weight = _param(model.float32(f"{prefix}/weight"))
        self.bias = _param(model.float32(f"{prefix}/bias")) if f"{prefix}/bias" in model.variables else None

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class _LayerNorm(nn.Module):
    def __init__(self, model: Ct2Model, prefix: str) -> None:
        super().__init__()
        self.gamma = _param(model.float32(f"{prefix}/gamma"))
        self.beta = _param(model.float32(f"{prefix}/beta"))
        self.width = int(self.gamma.shape[0])

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.width,), self.gamma, self.beta, LAYER_NORM_EPS)


class _FeedForward(nn.Module):
    def __init__(self, model: Ct2Model, prefix: str) -> None:
        super().__init__()
        self.norm = _LayerNorm(model, f"{prefix}/layer_norm")
        self.up = _Linear(model, f"{prefix}/linear_0")
        self.down = _Linear(model, f"{prefix}/linear_1")

    def forward(self, x: Tensor) -> Tensor:
        result: Tensor = x + self.down(F.gelu(self.up(self.norm(x))))
        return result


def _split_heads(x: Tensor, n_heads: int, head_dim: int) -> Tensor:
    return x.reshape(x.shape[0], x.shape[1], n_heads, head_dim).transpose(1, 2)


def _merge_heads(x: Tensor, width: int) -> Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], width)


def _attend(q: Tensor, k: Tensor, v: Tensor, n_heads: int, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    width = int(q.shape[-1])
    head_dim = width // n_heads
    qh, kh, vh = (_split_heads(t, n_heads, head_dim) for t in (q, k, v))
    scale = 1.0 / math.sqrt(head_dim)
    scores = torch.matmul(qh, kh.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    return _merge_heads(torch.matmul(weights, vh), width), weights


class _EncoderLayer(nn.Module):
    def __init__(self, model: Ct2Model, prefix: str, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.norm = _LayerNorm(model, f"{prefix}/self_attention/layer_norm")
        self.qkv = _Linear(model, f"{prefix}/self_attention/linear_0")
        self.out = _Linear(model, f"{prefix}/self_attention/linear_1")
        self.ffn = _FeedForward(model, f"{prefix}/ffn")

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        attended, _ = _attend(q, k, v, self.n_heads, None)
        result: Tensor = self.ffn(x + self.out(attended))
        return result


class WhisperEncoder(nn.Module):
    """``mel [B, n_mels, 3000]`` -> ``cross_k, cross_v [L_dec, B, 1500, D]``."""

    def __init__(self, model: Ct2Model) -> None:
        super().__init__()
        n_heads = model.scalar("encoder/num_heads")
        n_enc = _count_layers(model, "encoder")
        n_dec = _count_layers(model, "decoder")
        self.conv1_w = _param(model.float32("encoder/conv1/weight"))
        self.conv1_b = _param(model.float32("encoder/conv1/bias"))
        self.conv2_w = _param(model.float32("encoder/conv2/weight"))
        self.conv2_b = _param(model.float32("encoder/conv2/bias"))
        self.positions = _param(model.float32("encoder/position_encodings/encodings"))
        self.layers = nn.ModuleList(_EncoderLayer(model, f"encoder/layer_{i}", n_heads) for i in range(n_enc))
        self.norm = _LayerNorm(model, "encoder/layer_norm")
        self.cross_kv = nn.ModuleList(
            _Linear(model, f"decoder/layer_{i}/attention/linear_1") for i in range(n_dec)
        )

    def forward(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        x = F.gelu(F.conv1d(mel, self.conv1_w, self.conv1_b, padding=1))
        x = F.gelu(F.conv1d(x, self.conv2_w, self.conv2_b, stride=2, padding=1))
        x = x.transpose(1, 2) + self.positions
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        keys, values = [], []
        for projection in self.cross_kv:
            k, v = projection(x).chunk(2, dim=-1)
            keys.append(k)
            values.append(v)
        return torch.stack(keys), torch.stack(values)


class _DecoderLayer(nn.Module):
    def __init__(self, model: Ct2Model, prefix: str, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.self_norm = _LayerNorm(model, f"{prefix}/self_attention/layer_norm")
        self.self_qkv = _Linear(model, f"{prefix}/self_attention/linear_0")
        self.self_out = _Linear(model, f"{prefix}/self_attention/linear_1")
        self.cross_norm = _LayerNorm(model, f"{prefix}/attention/layer_norm")
        self.cross_q = _Linear(model, f"{prefix}/attention/linear_0")
        self.cross_out = _Linear(model, f"{prefix}/attention/linear_2")
        self.ffn = _FeedForward(model, f"{prefix}/ffn")

    def forward(
        self, x: Tensor, past_k: Tensor, past_v: Tensor, cross_k: Tensor, cross_v: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        q, k, v = self.self_qkv(self.self_norm(x)).chunk(3, dim=-1)
        all_k = torch.cat([past_k, k], dim=1)
        all_v = torch.cat([past_v, v], dim=1)
        attended, _ = _attend(q, all_k, all_v, self.n_heads, mask)
        x = x + self.self_out(attended)
        cross, weights = _attend(self.cross_q(self.cross_norm(x)), cross_k, cross_v, self.n_heads, None)
        x = x + self.cross_out(cross)
        return self.ffn(x), all_k, all_v, weights


class WhisperDecoder(nn.Module):
    """One decoder call over ``n`` new tokens given ``P`` cached positions.

    Inputs: ``tokens [B, n]``, ``self_k/self_v [L, B, P, D]``, ``cross_k/cross_v [L, B, 1500, D]``.
    Outputs: ``logits [B, n, V]``, ``new_self_k/new_self_v [L, B, P+n, D]`` and
    ``alignment [B, A, n, 1500]`` (cross-attention weights of the A alignment heads).
    """

    def __init__(self, model: Ct2Model, alignment_heads: list[tuple[int, int]]) -> None:
        super().__init__()
        n_heads = model.scalar("decoder/num_heads")
        n_dec = _count_layers(model, "decoder")
        self.embeddings = _param(model.float32("decoder/embeddings/weight"))
        self.positions = _param(model.float32("decoder/position_encodings/encodings"))
        self.layers = nn.ModuleList(_DecoderLayer(model, f"decoder/layer_{i}", n_heads) for i in range(n_dec))
        self.norm = _LayerNorm(model, "decoder/layer_norm")
        self.alignment_heads = list(alignment_heads)

    def forward(
        self, tokens: Tensor, self_k: Tensor, self_v: Tensor, cross_k: Tensor, cross_v: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        batch, n_new = tokens.shape
        offset = self_k.shape[2]
        positions = torch.arange(n_new, dtype=torch.int64) + offset
        x = F.embedding(tokens, self.embeddings) + F.embedding(positions, self.positions).unsqueeze(0)
        key_positions = torch.arange(n_new + offset, dtype=torch.int64)
        blocked = key_positions.unsqueeze(0) > positions.unsqueeze(1)
        mask = torch.where(blocked, torch.tensor(float("-inf")), torch.tensor(0.0))
        new_k, new_v, cross_weights = [], [], []
        for index, layer in enumerate(self.layers):
            x, k, v, weights = layer(x, self_k[index], self_v[index], cross_k[index], cross_v[index], mask)
            new_k.append(k)
            new_v.append(v)
            cross_weights.append(weights)
        x = self.norm(x)
        # 2-D Gemm with transB against the shared embedding matrix: no transposed copy of it in
        # the graph, and no Einsum (both measured as costly; see whisper-onnx.md §5).
        flat = F.linear(x.reshape(batch * n_new, x.shape[-1]), self.embeddings)
        logits = flat.reshape(batch, n_new, self.embeddings.shape[0])
        alignment = torch.stack(
            [cross_weights[layer][:, head] for layer, head in self.alignment_heads], dim=1
        )
        return logits, torch.stack(new_k), torch.stack(new_v), alignment


def _count_layers(model: Ct2Model, side: str) -> int:
    count = 0
    while f"{side}/layer_{count}/ffn/linear_0/weight" in model.variables:
        count += 1
    return count
