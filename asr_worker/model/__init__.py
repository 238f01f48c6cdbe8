"""Model bundles: build (CTranslate2 weights -> ONNX), fetch (MODEL_URL), verify and load."""
