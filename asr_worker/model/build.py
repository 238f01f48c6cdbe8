"""``oyez model build``: pinned CTranslate2 Whisper weights -> a verified ONNX bundle in the cache.

Bundles are cached by a content key (source file hashes, converter version, precision), so each
model is converted once per machine. Building happens in a temporary directory beside the target
under a file lock and is moved into place atomically: a crash never leaves a half bundle behind,
and two builders never convert the same model twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from oyez.constants import ENV_OYEZ_BUNDLED_MODELS_DIR, ENV_OYEZ_MODEL_CACHE_DIR
from oyez.errors import ModelError
from oyez.logs import get_logger

from .bundle import (
    BundleManifest,
    WhisperDims,
    describe_files,
    load_manifest,
    sha256_file,
    verify_bundle,
    write_manifest,
)
from .sources import (
    SPEAKER_SOURCE,
    VAD_SOURCE,
    WeightSource,
    locate_pinned_file,
    source_packages,
    stage_weights,
    weight_source,
)
from .vocabulary import is_multilingual, language_tokens, read_config, read_vocabulary, special_tokens

CONVERTER_VERSION = "2"  # 2: speaker.onnx (diarization) joined the bundle
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
VOCABULARY_FILE = "vocabulary.txt"
VAD_FILE = "vad.onnx"
SPEAKER_FILE = "speaker.onnx"
BUNDLE_FILES = [ENCODER_FILE, DECODER_FILE, VOCABULARY_FILE, VAD_FILE, SPEAKER_FILE]
_LOCK_TIMEOUT_S = 1800

log = get_logger(__name__)


def default_cache_dir() -> Path:
    configured = os.environ.get(ENV_OYEZ_MODEL_CACHE_DIR)
    if configured:
        return Path(configured)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("oyez")) / "models"


def bundle_key(source: WeightSource, precision: str) -> str:
    facts = {
        "model_bin": source.model_bin_sha256,
        "config": source.config.sha256,
        "vocabulary": source.vocabulary.sha256,
        "vad": VAD_SOURCE.sha256,
        "speaker": SPEAKER_SOURCE.sha256,
        "converter": CONVERTER_VERSION,
        "precision": precision,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def cached_bundle_path(name: str, *, int8: bool = False, cache_dir: Path | None = None) -> Path:
    precision = "int8" if int8 else "fp32"
    key = bundle_key(weight_source(name), precision)
    return (cache_dir or default_cache_dir()) / f"{name}-{precision}-{key}"


def bundled_model_path(name: str, *, int8: bool = False) -> Path | None:
    """The image's prebuilt bundle for ``name`` (verified), or None when the image has none."""
    directory = os.environ.get(ENV_OYEZ_BUNDLED_MODELS_DIR)
    if not directory:
        return None
    candidate = cached_bundle_path(name, int8=int8, cache_dir=Path(directory))
    return candidate if _is_complete(candidate) else None


def build_model(
    name: str,
    *,
    int8: bool = False,
    cache_dir: Path | None = None,
    out: Path | None = None,
    progress: bool = True,
) -> Path:
    """Return the path of a verified bundle for ``name``, converting it if not yet cached.

    Without ``out``, a bundle built into the container image (``$OYEZ_BUNDLED_MODELS_DIR``) is used
    as it is, so a worker image needs neither the cache volume nor the converter for its default model.
    """
    source = weight_source(name)
    if out is None:
        bundled = bundled_model_path(name, int8=int8)
        if bundled is not None:
            log.info("Model bundle found in the image", model=name, path=str(bundled))
            return bundled
    target = out or cached_bundle_path(name, int8=int8, cache_dir=cache_dir)
    if _is_complete(target):
        log.info("Model bundle found in cache", model=name, path=str(target))
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=_LOCK_TIMEOUT_S):
        if _is_complete(target):
            return target
        if target.exists() and any(target.iterdir()):
            raise ModelError(
                f"Output directory {target} exists and is not an Oyez bundle; choose an empty one"
            )
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
            staging = Path(tmp) / "bundle"
            staging.mkdir()
            _convert(source, "int8" if int8 else "fp32", staging, Path(tmp), progress)
            if target.exists():
                target.rmdir()
            os.replace(staging, target)
    log.info("Model bundle built", model=name, path=str(target))
    return target


def _is_complete(path: Path) -> bool:
    if not (path / "manifest.json").is_file():
        return False
    verify_bundle(path)
    return True


def _convert(source: WeightSource, precision: str, staging: Path, workdir: Path, progress: bool) -> None:
    from .ct2 import read_ct2_model

    try:
        from .export import check_export, export_decoder, export_encoder, tie_output_projection
        from .torch_whisper import WhisperDecoder, WhisperEncoder
    except ImportError as exc:
        raise ModelError(
            f"Converting {source.name} needs torch and onnx ({exc.name} is missing): "
            "pip install 'oyez[convert]', or set MODEL_URL to a bundle URL (an image has only the "
            "models it was built with)"
        ) from exc

    steps = ["verify weights", "read weights", "export encoder", "export decoder", "check graphs"]
    steps += ["quantize int8"] if precision == "int8" else []
    steps += ["export speaker encoder"]
    steps += ["write manifest"]
    bar = tqdm(
        total=len(steps), desc=f"Building {source.name} ({precision})", disable=not progress, unit="step"
    )

    def advance(label: str) -> None:
        bar.set_postfix_str(label)
        bar.update(1)

    with bar:
        model_bin, config_path, vocab_path = stage_weights(source, workdir / "weights")
        advance(steps[0])
        ct2 = read_ct2_model(model_bin)
        config = read_config(config_path)
        tokens = read_vocabulary(vocab_path)
        heads = [(int(layer), int(head)) for layer, head in config.get("alignment_heads", [])]
        if not heads:
            raise ModelError("Model config has no alignment_heads; word timestamps need them")
        encoder, decoder = WhisperEncoder(ct2).eval(), WhisperDecoder(ct2, heads).eval()
        dims = WhisperDims(
            n_mels=int(ct2.get("encoder/conv1/weight").shape[1]),
            n_audio_ctx=int(ct2.get("encoder/position_encodings/encodings").shape[0]),
            n_text_ctx=int(ct2.get("decoder/position_encodings/encodings").shape[0]),
            n_layers=len(decoder.layers),
            d_model=int(ct2.get("decoder/embeddings/weight").shape[1]),
            n_heads=ct2.scalar("decoder/num_heads"),
            n_vocab=int(ct2.get("decoder/embeddings/weight").shape[0]),
        )
        if dims.n_vocab != len(tokens):
            raise ModelError(f"Vocabulary has {len(tokens)} tokens but the model has {dims.n_vocab}")
        advance(steps[1])
        fp32_dir = workdir / "fp32" if precision == "int8" else staging
        fp32_dir.mkdir(exist_ok=True)
        export_encoder(encoder, dims.n_mels, fp32_dir / ENCODER_FILE)
        advance(steps[2])
        export_decoder(decoder, dims.n_layers, dims.d_model, dims.n_audio_ctx, fp32_dir / DECODER_FILE)
        tie_output_projection(fp32_dir / DECODER_FILE)
        advance(steps[3])
        check_export(encoder, decoder, fp32_dir / ENCODER_FILE, fp32_dir / DECODER_FILE, dims.n_mels)
        advance(steps[4])
        if precision == "int8":
            from .quantize import quantize_int8

            for graph in (ENCODER_FILE, DECODER_FILE):
                quantize_int8(fp32_dir / graph, staging / graph)
            advance(steps[5])
        _export_speaker(staging / SPEAKER_FILE)
        advance("export speaker encoder")
        shutil.copyfile(vocab_path, staging / VOCABULARY_FILE)
        shutil.copyfile(locate_pinned_file(VAD_SOURCE), staging / VAD_FILE)
        manifest = BundleManifest(
            name=source.name,
            precision=precision,
            multilingual=is_multilingual(len(tokens)),
            dims=dims,
            special_tokens=special_tokens(tokens),
            languages=language_tokens(tokens, config),
            suppress_ids=[int(i) for i in config.get("suppress_ids", [])],
            suppress_ids_begin=[int(i) for i in config.get("suppress_ids_begin", [])],
            alignment_heads=heads,
            files=describe_files(staging, BUNDLE_FILES),
            sources=source_packages(source),
            converter_version=CONVERTER_VERSION,
        )
        write_manifest(staging, manifest)
        advance(steps[-1])


def _export_speaker(path: Path) -> None:
    """Resemblyzer's voice encoder to ONNX (fp32 at every precision: it is small), checked."""
    from .speaker_export import check_speaker_export, export_speaker_encoder, load_speaker_encoder

    encoder = load_speaker_encoder(locate_pinned_file(SPEAKER_SOURCE))
    export_speaker_encoder(encoder, path)
    check_speaker_export(encoder, path)


def pack_bundle(bundle_dir: Path, archive: Path) -> str:
    """Write ``bundle_dir`` as a ``.tar.gz`` (files at the root) for MODEL_URL; returns its sha256."""
    manifest: BundleManifest = load_manifest(bundle_dir)
    with tarfile.open(archive, "w:gz") as tar:
        for name in ["manifest.json", *manifest.files]:
            tar.add(bundle_dir / name, arcname=name)
    return sha256_file(archive)
