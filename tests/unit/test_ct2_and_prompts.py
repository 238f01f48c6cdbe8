"""CTranslate2 reader round trip, prompts and suppression, bundle verification."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from asr_worker.engine.decoding import build_prompt, suppression_masks
from asr_worker.model.bundle import BundleManifest, verify_bundle, write_manifest
from asr_worker.model.ct2 import read_ct2_model
from asr_worker.model.vocabulary import is_multilingual
from oyez.errors import ModelError


def _string(text: str) -> bytes:
    raw = text.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    dtype_ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.float16): 4}
    blob = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<I", 3)
    blob += struct.pack("<I", len(variables))
    for name, value in variables.items():
        blob += _string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        data = value.tobytes()
        blob += struct.pack("<B", dtype_ids[value.dtype]) + struct.pack("<I", len(data)) + data
    blob += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        blob += _string(alias) + _string(target)
    path.write_bytes(blob)


def test_ct2_round_trip(tmp_path: Path) -> None:
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    flag = np.array(1, dtype=np.int8)
    path = tmp_path / "model.bin"
    _write_ct2(
        path,
        {"decoder/embeddings/weight": weight, "decoder/scale": flag},
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    model = read_ct2_model(path)
    assert model.spec_name == "WhisperSpec" and model.revision == 3
    assert np.array_equal(model.float32("decoder/embeddings/weight"), weight.astype(np.float32))
    assert model.variables["decoder/projection/weight"] is model.variables["decoder/embeddings/weight"]
    assert model.scalar("decoder/scale") == 1
    with pytest.raises(ModelError, match="no variable"):
        model.get("missing")


def test_ct2_truncated_file_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    _write_ct2(path, {"w": np.zeros((4, 4), dtype=np.float32)}, {})
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(ModelError, match="truncated"):
        read_ct2_model(path)


def test_ct2_wrong_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(struct.pack("<I", 5))
    with pytest.raises(ModelError, match="version 5"):
        read_ct2_model(path)


def _manifest(multilingual: bool, files: dict | None = None) -> BundleManifest:
    eot = 50257 if multilingual else 50256
    return BundleManifest.model_validate(
        {
            "name": "whisper-test",
            "precision": "fp32",
            "multilingual": multilingual,
            "dims": {
                "n_mels": 80,
                "n_audio_ctx": 1500,
                "n_text_ctx": 448,
                "n_layers": 4,
                "d_model": 384,
                "n_heads": 6,
                "n_vocab": 51865 if multilingual else 51864,
            },
            "special_tokens": {
                "eot": eot,
                "sot": eot + 1,
                "no_timestamps": eot + 106,
                "timestamp_begin": eot + 107,
                "transcribe": eot + 102,
                "translate": eot + 101,
            },
            "languages": {"en": eot + 2, "de": eot + 4} if multilingual else {},
            "suppress_ids": [1, 2],
            "suppress_ids_begin": [220, eot],
            "alignment_heads": [[1, 0]],
            "files": files or {},
        }
    )


def test_prompts_follow_vocabulary_size() -> None:
    assert not is_multilingual(51864) and is_multilingual(51865)
    assert build_prompt(_manifest(False), "en") == [50257, 50362]
    assert build_prompt(_manifest(True), "de") == [50258, 50261, 50359, 50363]


def test_suppression_masks() -> None:
    manifest = _manifest(False)
    always, first = suppression_masks(manifest)
    assert always[1] and always[2] and not always[3]
    assert not always[50256] and always[50257:].all()
    assert first[220] and first[50256] and not always[220]


def test_verify_bundle_detects_tampering(tmp_path: Path) -> None:
    from asr_worker.model.bundle import describe_files

    (tmp_path / "encoder.onnx").write_bytes(b"graph bytes")
    write_manifest(tmp_path, _manifest(False, describe_files(tmp_path, ["encoder.onnx"])))
    assert verify_bundle(tmp_path).name == "whisper-test"
    (tmp_path / "encoder.onnx").write_bytes(b"graph bytez")
    with pytest.raises(ModelError, match="sha256"):
        verify_bundle(tmp_path)
    (tmp_path / "encoder.onnx").unlink()
    with pytest.raises(ModelError, match=r"missing encoder\.onnx"):
        verify_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match=r"Invalid manifest\.json"):
        verify_bundle(tmp_path)
