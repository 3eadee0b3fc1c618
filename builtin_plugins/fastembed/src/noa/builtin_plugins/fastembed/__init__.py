"""NOA fastembed plugin: local ONNX embedders for retrieval (no side effects on import)."""
