"""Dynamic int8 quantisation of the exported graphs (MatMul/Gemm weights) for CPU inference."""

from __future__ import annotations

from pathlib import Path


def quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        model_input=str(source),
        model_output=str(target),
        op_types_to_quantize=["MatMul", "Gemm"],
        weight_type=QuantType.QInt8,
        per_channel=False,
    )
