"""The ASR worker: Whisper on ONNX Runtime (engine) behind gRPC :2233 (service)."""
