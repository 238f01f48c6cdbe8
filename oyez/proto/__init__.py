"""The gRPC wire contract (``asr_v1.proto``) and the stubs generated from it."""
