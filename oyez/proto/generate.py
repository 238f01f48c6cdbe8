"""Regenerate the Python stubs from ``asr_v1.proto``; ``--check`` fails when they are stale.

Run ``python -m oyez.proto.generate`` after editing the proto. CI runs it with ``--check``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
REPO_ROOT = PROTO_DIR.parent.parent
PROTO_FILE = PROTO_DIR / "asr_v1.proto"
GENERATED = ("asr_v1_pb2.py", "asr_v1_pb2.pyi", "asr_v1_pb2_grpc.py", "asr_v1_pb2_grpc.pyi")


def _plugin(name: str) -> str:
    """mypy-protobuf's plugins live beside the interpreter (a venv need not be on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install mypy-protobuf (the dev extra)")
    return found


def generate(out_root: Path) -> None:
    from grpc_tools import protoc  # dev-only dependency

    rel = PROTO_FILE.relative_to(REPO_ROOT)
    plugins = [f"--plugin={name}={_plugin(name)}" for name in ("protoc-gen-mypy", "protoc-gen-mypy_grpc")]
    args = [
        "protoc",
        *plugins,
        f"-I{REPO_ROOT}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        str(rel),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    args = parser.parse_args(argv)
    if not args.check:
        generate(REPO_ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / PROTO_DIR.relative_to(REPO_ROOT)
        stale = [name for name in GENERATED if not filecmp.cmp(fresh / name, PROTO_DIR / name, shallow=False)]
    if stale:
        print(
            f"Stale generated stubs: {', '.join(stale)}; run python -m oyez.proto.generate", file=sys.stderr
        )
        return 1
    print("gRPC stubs are current")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
