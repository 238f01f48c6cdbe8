"""Benchmarks: the worker over gRPC, the bare ONNX graphs and faster-whisper, side by side.

Run ``python -m bench.run --help``; results and method notes are in ``bench/RESULTS.md``.
"""
