"""NOA inference plugin: models, encoder kernels, batching and APIs (no import side effects)."""
