"""The transcription engine: audio -> features -> tokens -> words. Pure logic plus ONNX sessions."""
