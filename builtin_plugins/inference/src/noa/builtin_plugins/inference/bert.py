"""BERT-family text encoders (BERT, MiniLM, sentence-transformers) from safetensors.

:class:`BertEncoder` is the forward pass, written once against the device port's
encoder kernels, so it runs unchanged on every device. :class:`BertEmbedder` adds the
model's own tokenizer and sentence-transformers' pooling and normalisation settings.

Activations live in buffers sized for the largest batch seen so far (capped by the
model's token budget); a batch allocates only its small token-id arrays.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from noa.builtin_plugins.inference.errors import ModelLoadError
from noa.builtin_plugins.inference.text import TextTokenizer, Tokenized
from noa.plugin_sdk.ports.device import DevicePort
from numpy.typing import NDArray

__all__ = ["BertConfig", "BertEmbedder", "BertEncoder", "load_bert"]

WEIGHTS_FILE = "model.safetensors"
# Rows of activation buffers are allocated in steps of this many tokens.
_GROWTH = 512


class BertConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What the forward pass needs from a Hugging Face ``config.json``."""

    hidden_size: int
    num_attention_heads: int
    num_hidden_layers: int
    intermediate_size: int
    max_position_embeddings: int
    vocab_size: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    model_type: str = "bert"

    @property
    def head_width(self) -> int:
        return self.hidden_size // self.num_attention_heads


def read_config(model_dir: Path) -> BertConfig:
    path = model_dir / "config.json"
    try:
        raw = json.loads(path.read_bytes())
        config = msgspec.convert(raw, BertConfig, strict=False)
    except FileNotFoundError:
        raise ModelLoadError(model_dir.name, f"{path} is missing") from None
    except (ValueError, msgspec.ValidationError) as exc:
        raise ModelLoadError(model_dir.name, f"{path} is not a usable config: {exc}") from None
    if config.hidden_size % config.num_attention_heads:
        raise ModelLoadError(
            model_dir.name,
            f"hidden_size {config.hidden_size} is not a multiple of "
            f"num_attention_heads {config.num_attention_heads}",
        )
    if config.hidden_act != "gelu":
        raise ModelLoadError(
            model_dir.name, f"hidden_act {config.hidden_act!r} is not supported (only 'gelu')"
        )
    return config


class _Layer(msgspec.Struct):
    qkv_t: Any
    qkv_bias: Any
    out_t: Any
    out_bias: Any
    ln1_weight: Any
    ln1_bias: Any
    up_t: Any
    up_bias: Any
    down_t: Any
    down_bias: Any
    ln2_weight: Any
    ln2_bias: Any


def _expected_shapes(c: BertConfig) -> dict[str, tuple[int, ...]]:
    w, i = c.hidden_size, c.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (c.vocab_size, w),
        "embeddings.position_embeddings.weight": (c.max_position_embeddings, w),
        "embeddings.token_type_embeddings.weight": (c.type_vocab_size, w),
        "embeddings.LayerNorm.weight": (w,),
        "embeddings.LayerNorm.bias": (w,),
    }
    for n in range(c.num_hidden_layers):
        p = f"encoder.layer.{n}."
        for part in ("query", "key", "value"):
            shapes[f"{p}attention.self.{part}.weight"] = (w, w)
            shapes[f"{p}attention.self.{part}.bias"] = (w,)
        shapes[f"{p}attention.output.dense.weight"] = (w, w)
        shapes[f"{p}attention.output.dense.bias"] = (w,)
        shapes[f"{p}intermediate.dense.weight"] = (i, w)
        shapes[f"{p}intermediate.dense.bias"] = (i,)
        shapes[f"{p}output.dense.weight"] = (w, i)
        shapes[f"{p}output.dense.bias"] = (w,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[f"{p}{norm}.weight"] = (w,)
            shapes[f"{p}{norm}.bias"] = (w,)
    return shapes


def read_weights(model_dir: Path, config: BertConfig) -> dict[str, NDArray[np.float32]]:
    """The tensors the encoder needs, checked for presence, shape and dtype.

    float16 tensors are widened to float32; any other dtype is refused.
    """
    from safetensors import SafetensorError, safe_open

    name = model_dir.name
    path = model_dir / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(name, f"{path} is missing")
    expected = _expected_shapes(config)
    tensors: dict[str, NDArray[np.float32]] = {}
    try:
        with safe_open(str(path), framework="numpy") as handle:
            keys = set(handle.keys())
            prefix = "bert." if "bert.embeddings.word_embeddings.weight" in keys else ""
            for key, shape in expected.items():
                if prefix + key not in keys:
                    raise ModelLoadError(name, f"tensor {key!r} is missing from {path.name}")
                tensor = handle.get_tensor(prefix + key)
                if tensor.dtype not in (np.float32, np.float16):
                    raise ModelLoadError(
                        name, f"tensor {key!r} has dtype {tensor.dtype}; float32 or float16 needed"
                    )
                if tensor.shape != shape:
                    raise ModelLoadError(
                        name,
                        f"tensor {key!r} has shape {list(tensor.shape)}; "
                        f"config.json implies {list(shape)}",
                    )
                tensors[key] = tensor.astype(np.float32, copy=False)
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        # ValueError/TypeError: safetensors' NumPy path on dtypes NumPy lacks (bf16).
        raise ModelLoadError(name, f"{path.name} cannot be read: {exc}") from None
    return tensors


class BertEncoder:
    """The encoder stack and mean pooling, on one device."""

    def __init__(
        self,
        config: BertConfig,
        weights: dict[str, NDArray[np.float32]],
        device: DevicePort,
        *,
        max_tokens: int,
    ) -> None:
        self.config = config
        self.device = device
        self.max_tokens = max_tokens
        d = device.to_device
        prepared = device.prepare_weight
        self._word = d(weights["embeddings.word_embeddings.weight"])
        self._position = d(weights["embeddings.position_embeddings.weight"])
        self._token_type = d(weights["embeddings.token_type_embeddings.weight"][0])
        self._ln_weight = d(weights["embeddings.LayerNorm.weight"])
        self._ln_bias = d(weights["embeddings.LayerNorm.bias"])
        # Queries are pre-scaled by 1/sqrt(head width), so attention needs no extra pass.
        scale = np.float32(1.0 / math.sqrt(config.head_width))
        self._layers: list[_Layer] = []
        for n in range(config.num_hidden_layers):
            p = f"encoder.layer.{n}."

            def w(key: str, prefix: str = p) -> NDArray[np.float32]:
                return weights[prefix + key]

            qkv = np.concatenate(
                [
                    w("attention.self.query.weight") * scale,
                    w("attention.self.key.weight"),
                    w("attention.self.value.weight"),
                ]
            )
            qkv_bias = np.concatenate(
                [
                    w("attention.self.query.bias") * scale,
                    w("attention.self.key.bias"),
                    w("attention.self.value.bias"),
                ]
            )
            # Handed to the device as (in, out) matrices; it keeps them in its preferred layout.
            self._layers.append(
                _Layer(
                    qkv_t=prepared(qkv.T),
                    qkv_bias=d(qkv_bias),
                    out_t=prepared(w("attention.output.dense.weight").T),
                    out_bias=d(w("attention.output.dense.bias")),
                    ln1_weight=d(w("attention.output.LayerNorm.weight")),
                    ln1_bias=d(w("attention.output.LayerNorm.bias")),
                    up_t=prepared(w("intermediate.dense.weight").T),
                    up_bias=d(w("intermediate.dense.bias")),
                    down_t=prepared(w("output.dense.weight").T),
                    down_bias=d(w("output.dense.bias")),
                    ln2_weight=d(w("output.LayerNorm.weight")),
                    ln2_bias=d(w("output.LayerNorm.bias")),
                )
            )
        self._rows = 0
        self._buffers: dict[str, Any] = {}

    def _reserve(self, tokens: int) -> None:
        if tokens <= self._rows:
            return
        rows = min(self.max_tokens, -(-tokens // _GROWTH) * _GROWTH)
        width, inner = self.config.hidden_size, self.config.intermediate_size
        empty = self.device.empty
        self._buffers = {}  # drop the old ones first: peak memory is one set, not two
        self._buffers = {
            "hidden": empty((rows, width)),
            "qkv": empty((rows, 3 * width)),
            "context": empty((rows, width)),
            "projected": empty((rows, width)),
            "inner": empty((rows, inner)),
        }
        self._rows = rows

    def encode(
        self, ids: NDArray[np.int32], lengths: NDArray[np.int32], *, normalize: bool
    ) -> NDArray[np.float32]:
        """Pooled embeddings of packed sequences: ``ids`` holds every sequence's token ids
        back to back, ``lengths`` how many belong to each. Returns ``(sequences, width)``."""
        tokens = int(ids.shape[0])
        if tokens > self.max_tokens:
            raise ValueError(f"{tokens} tokens exceed this encoder's budget of {self.max_tokens}")
        if int(lengths.max(initial=0)) > self.config.max_position_embeddings:
            raise ValueError("a sequence is longer than the model's position embeddings")
        self._reserve(tokens)
        dev = self.device
        offsets = np.zeros(lengths.shape[0], np.int32)
        np.cumsum(lengths[:-1], out=offsets[1:])
        positions = np.arange(tokens, dtype=np.int32) - np.repeat(offsets, lengths)
        b = self._buffers
        hidden = b["hidden"][:tokens]
        qkv = b["qkv"][:tokens]
        context = b["context"][:tokens]
        projected = b["projected"][:tokens]
        inner = b["inner"][:tokens]
        eps = self.config.layer_norm_eps
        dev.embed(
            dev.to_device(ids, "int32"),
            dev.to_device(positions, "int32"),
            self._word,
            self._position,
            self._token_type,
            self._ln_weight,
            self._ln_bias,
            eps,
            hidden,
        )
        heads = self.config.num_attention_heads
        for layer in self._layers:
            dev.gemm(hidden, layer.qkv_t, qkv)
            dev.add_bias(qkv, layer.qkv_bias)
            dev.attention(qkv, offsets, lengths, heads, context)
            dev.gemm(context, layer.out_t, projected)
            dev.bias_residual_layer_norm(
                projected, layer.out_bias, hidden, layer.ln1_weight, layer.ln1_bias, eps, hidden
            )
            dev.gemm(hidden, layer.up_t, inner)
            dev.bias_gelu(inner, layer.up_bias)
            dev.gemm(inner, layer.down_t, projected)
            dev.bias_residual_layer_norm(
                projected, layer.down_bias, hidden, layer.ln2_weight, layer.ln2_bias, eps, hidden
            )
        pooled = dev.empty((int(lengths.shape[0]), self.config.hidden_size))
        dev.mean_pool(hidden, offsets, lengths, normalize, pooled)
        return dev.to_host(pooled)

    def release(self) -> None:
        """Drop weights and buffers (the model is being unloaded)."""
        self._layers = []
        self._buffers = {}
        self._rows = 0
        self._word = self._position = self._token_type = None
        self._ln_weight = self._ln_bias = None


class _SentenceSettings(msgspec.Struct, kw_only=True):
    max_seq_length: int | None = None


class _Pooling(msgspec.Struct, kw_only=True):
    pooling_mode_mean_tokens: bool = True
    pooling_mode_cls_token: bool = False
    pooling_mode_max_tokens: bool = False


def _read_json(path: Path, kind: type[Any], model: str) -> Any:
    if not path.is_file():
        return kind()
    try:
        return msgspec.convert(json.loads(path.read_bytes()), kind, strict=False)
    except (ValueError, msgspec.ValidationError) as exc:
        raise ModelLoadError(model, f"{path} is not usable: {exc}") from None


class BertEmbedder:
    """A sentence-embedding model: tokenizer, encoder, mean pooling, optional L2 norm."""

    def __init__(
        self,
        name: str,
        config: BertConfig,
        encoder: BertEncoder,
        tokenizer: TextTokenizer,
        *,
        normalize: bool,
    ) -> None:
        self.name = name
        self.config = config
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.normalize = normalize
        self.dimension = config.hidden_size
        self.max_length = tokenizer.max_length
        self.vocab_size = config.vocab_size

    @classmethod
    def load(
        cls,
        model_dir: Path,
        device: DevicePort,
        *,
        name: str | None = None,
        max_batch_size: int = 32,
        threads: int = 0,
    ) -> BertEmbedder:
        """Read a sentence-transformers style folder (``config.json``,
        ``model.safetensors``, ``tokenizer.json``, optional ``sentence_bert_config.json``,
        ``1_Pooling/config.json`` and ``modules.json``)."""
        name = name or model_dir.name
        config = read_config(model_dir)
        settings = _read_json(model_dir / "sentence_bert_config.json", _SentenceSettings, name)
        max_length = min(
            settings.max_seq_length or config.max_position_embeddings,
            config.max_position_embeddings,
        )
        pooling = _read_json(model_dir / "1_Pooling" / "config.json", _Pooling, name)
        if pooling.pooling_mode_cls_token or pooling.pooling_mode_max_tokens:
            raise ModelLoadError(name, "only mean pooling is supported")
        normalize = _has_normalize_module(model_dir, name)
        tokenizer = TextTokenizer.load(model_dir, name=name, max_length=max_length)
        weights = read_weights(model_dir, config)
        device.set_threads(threads)
        encoder = BertEncoder(config, weights, device, max_tokens=max_batch_size * max_length)
        return cls(name, config, encoder, tokenizer, normalize=normalize)

    def tokenize(
        self, texts: Sequence[str], *, truncate: bool, param: str = "input"
    ) -> list[Tokenized]:
        return self.tokenizer.encode(texts, truncate=truncate, param=param)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.spans(text)

    def encode(self, batch: Sequence[Tokenized], *, normalize: bool | None = None) -> Any:
        """Embeddings of tokenized texts, one row each, in order."""
        ids = np.fromiter(
            (t for item in batch for t in item.ids), np.int32, sum(len(i.ids) for i in batch)
        )
        lengths = np.fromiter((len(item.ids) for item in batch), np.int32, len(batch))
        return self.encoder.encode(
            ids, lengths, normalize=self.normalize if normalize is None else normalize
        )

    def embed(
        self, texts: Sequence[str], *, batch_size: int = 32, normalize: bool | None = None
    ) -> NDArray[np.float32]:
        """Embed texts directly (no batcher): sorted by length, run in batches, returned
        in input order. For scripts and benchmarks; the server goes through the batcher."""
        tokenized = self.tokenizer.encode(texts, truncate=True)
        order = sorted(range(len(texts)), key=lambda i: len(tokenized[i].ids))
        out = np.empty((len(texts), self.dimension), np.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            out[chunk] = self.encode([tokenized[i] for i in chunk], normalize=normalize)
        return out

    def release(self) -> None:
        self.encoder.release()
        self.encoder.device.close()


def load_bert(folder: Path, name: str, device: DevicePort, config: Any) -> BertEmbedder:
    """The ``bert`` family's loader (``noa_register_model_families``)."""
    return BertEmbedder.load(
        folder, device, name=name, max_batch_size=config.max_batch_size, threads=config.threads
    )


def _has_normalize_module(model_dir: Path, name: str) -> bool:
    path = model_dir / "modules.json"
    if not path.is_file():
        return False
    try:
        modules = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ModelLoadError(name, f"{path} is not valid JSON: {exc}") from None
    return any(
        isinstance(m, dict) and str(m.get("type", "")).endswith(".Normalize") for m in modules
    )
