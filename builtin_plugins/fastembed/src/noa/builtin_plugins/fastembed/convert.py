"""Builds a fastembed model folder (``model.onnx`` + tokenizer files) from a BERT-family
sentence-transformers folder (``config.json``, ``model.safetensors``, ``tokenizer.json``).

The encoder graph comes from :mod:`~noa.builtin_plugins.fastembed.bert_graph`, straight
from the safetensors tensors: no PyTorch, no exporter, no download. fastembed does the
pooling and normalisation the plugin config names; the sentence-transformers files say
which (the command prints them).

The output folder carries a marker file (``noa_convert.json``), so a later conversion
replaces only a folder this module wrote, and :func:`is_fresh` can tell whether it is
older than its source.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from noa.builtin_plugins.fastembed.bert_graph import (
    GRAPH_VERSION,
    OPSET,
    BertShape,
    encoder_graph,
    expected_shapes,
)
from numpy.typing import NDArray

__all__ = ["ConversionError", "Converted", "convert", "is_fresh"]

MARKER = "noa_convert.json"
MODEL_FILE = "model.onnx"
# Read from the source; the first three are required.
_WEIGHTS = "model.safetensors"
_INPUTS = (
    "config.json",
    _WEIGHTS,
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
)
# Copied unchanged when present; tokenizer_config.json is rewritten (see _tokenizer_config).
_COPIED = ("config.json", "tokenizer.json", "special_tokens_map.json", "vocab.txt")


class ConversionError(ValueError):
    """The source folder can't be converted (names the file and the cause), or the
    output folder can't be written."""


@dataclass(frozen=True)
class Converted:
    """What a conversion wrote, and the plugin settings the model wants."""

    path: Path
    hidden_size: int
    layers: int
    max_length: int
    pooling: str
    normalize: bool


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path} can't be read as JSON: {exc}") from None


def _read_config(source: Path) -> BertShape:
    path = source / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path} is missing")
    raw = _read_json(path)
    try:
        config = BertShape(
            hidden_size=int(raw["hidden_size"]),
            heads=int(raw["num_attention_heads"]),
            layers=int(raw["num_hidden_layers"]),
            intermediate_size=int(raw["intermediate_size"]),
            max_positions=int(raw["max_position_embeddings"]),
            vocab_size=int(raw["vocab_size"]),
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
            eps=float(raw.get("layer_norm_eps", 1e-12)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(f"{path} is not a BERT config: {type(exc).__name__}: {exc}") from None
    if raw.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"{path}: hidden_act {raw['hidden_act']!r} is not supported (gelu)")
    if config.hidden_size % config.heads:
        raise ConversionError(f"{path}: hidden_size is not a multiple of num_attention_heads")
    return config


def _read_weights(source: Path, config: BertShape) -> dict[str, NDArray[np.float32]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = source / _WEIGHTS
    if not path.is_file():
        raise ConversionError(f"{path} is missing")
    try:
        raw = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ConversionError(f"{path} can't be read: {exc}") from None
    # Checkpoints saved from a task model (BertForX) prefix every encoder tensor.
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""
    weights: dict[str, NDArray[np.float32]] = {}
    for key, shape in expected_shapes(config):
        tensor = raw.get(prefix + key)
        if tensor is None:
            raise ConversionError(f"{path}: tensor {key!r} is missing")
        if tensor.dtype not in (np.float32, np.float16):
            raise ConversionError(f"{path}: tensor {key!r} is {tensor.dtype}; float32 or float16")
        if tensor.shape != shape:
            raise ConversionError(
                f"{path}: tensor {key!r} has shape {list(tensor.shape)}; "
                f"config.json implies {list(shape)}"
            )
        weights[key] = tensor.astype(np.float32)
    return weights


def _sentence_settings(source: Path, config: BertShape) -> tuple[int, str, bool]:
    """Max length, pooling and normalisation from the sentence-transformers files."""
    max_length = config.max_positions
    settings = source / "sentence_bert_config.json"
    if settings.is_file():
        max_length = min(int(_read_json(settings).get("max_seq_length") or max_length), max_length)
    pooling = "mean"
    pooling_file = source / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        raw = _read_json(pooling_file)
        if raw.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not raw.get("pooling_mode_mean_tokens", True) or raw.get("pooling_mode_max_tokens"):
            raise ConversionError(f"{pooling_file}: only mean or CLS pooling is supported")
    normalize = False
    modules = source / "modules.json"
    if modules.is_file():
        entries = _read_json(modules)
        normalize = isinstance(entries, list) and any(
            isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in entries
        )
    return max_length, pooling, normalize


def _tokenizer_config(source: Path, max_length: int) -> dict[str, Any]:
    # fastembed truncates at model_max_length: the sentence model's length (MiniLM: 256),
    # not the tokenizer's 512 nor tokenizer.json's own 128.
    path = source / "tokenizer_config.json"
    raw: dict[str, Any] = _read_json(path) if path.is_file() else {}
    raw["model_max_length"] = min(int(raw.get("model_max_length") or max_length), max_length)
    raw.pop("max_length", None)
    if "pad_token" not in raw:
        raw["pad_token"] = "[PAD]"
    return raw


def _source_files(source: Path) -> list[Path]:
    return [source / name for name in _INPUTS if (source / name).is_file()]


def _signature(source: Path) -> dict[str, list[int]]:
    """Size and modification time of each source file a conversion reads."""
    found: dict[str, list[int]] = {}
    for path in _source_files(source):
        stat = path.stat()
        found[str(path.relative_to(source))] = [stat.st_size, stat.st_mtime_ns]
    return found


def is_fresh(source: Path, target: Path) -> bool:
    """True when ``target`` holds a finished conversion of ``source`` that is newer than
    every source file, was made from these very files (the same sizes and times: a model
    fetched again with its old timestamps is converted again too) and by this version of
    the graph."""
    source, target = Path(source), Path(target)
    model, marker = target / MODEL_FILE, target / MARKER
    if not (model.is_file() and marker.is_file()):
        return False
    try:
        recorded = json.loads(marker.read_bytes())
    except (OSError, ValueError):
        return False
    files = _source_files(source)
    built = model.stat().st_mtime_ns
    return (
        isinstance(recorded, dict)
        and recorded.get("graph_version") == GRAPH_VERSION
        and recorded.get("source") == str(source.resolve())
        and recorded.get("inputs") == _signature(source)
        and all(path.stat().st_mtime_ns <= built for path in files)
    )


def _replaceable(target: Path) -> bool:
    return not target.exists() or (target / MARKER).is_file() or not any(target.iterdir())


def convert(source: Path, target: Path) -> Converted:
    """Write ``target`` (a folder) from the model folder ``source``.

    The folder is built beside ``target`` and moved into place, so a failed or
    interrupted conversion never leaves a half-written model behind. An existing
    ``target`` is replaced only when an earlier conversion wrote it (or it is empty).
    """
    import onnx

    source, target = Path(source), Path(target)
    if not _replaceable(target):
        raise ConversionError(
            f"{target} exists and was not written by `noa fastembed convert`; "
            "choose another output folder"
        )
    config = _read_config(source)
    if not (source / "tokenizer.json").is_file():
        raise ConversionError(f"{source / 'tokenizer.json'} is missing")
    max_length, pooling, normalize = _sentence_settings(source, config)
    model = encoder_graph(config, _read_weights(source, config))
    onnx.checker.check_model(model)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        onnx.save_model(model, str(staging / MODEL_FILE))
        for name in _COPIED:
            if (source / name).is_file():
                shutil.copyfile(source / name, staging / name)
        (staging / "tokenizer_config.json").write_text(
            json.dumps(_tokenizer_config(source, max_length), indent=2) + "\n"
        )
        marker = {
            "source": str(source.resolve()),
            "opset": OPSET,
            "graph_version": GRAPH_VERSION,
            "max_length": max_length,
            "pooling": pooling,
            "normalize": normalize,
            "inputs": _signature(source),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the model from other users
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ConversionError(f"can't write {target}: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Converted(target, config.hidden_size, config.layers, max_length, pooling, normalize)
