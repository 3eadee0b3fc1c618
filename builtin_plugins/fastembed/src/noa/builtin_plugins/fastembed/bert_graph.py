"""A BERT encoder as an ONNX graph, written node by node with ``onnx.helper``.

The graph computes what a BERT encoder computes: word + position + token-type
embeddings and LayerNorm, then per layer self-attention masked by ``attention_mask``,
residual + LayerNorm, an erf-GELU feed-forward block, residual + LayerNorm. Inputs
``input_ids``, ``attention_mask`` and ``token_type_ids`` are int64 ``(batch, sequence)``
with both dimensions dynamic; the output ``last_hidden_state`` is float32
``(batch, sequence, hidden)``. Opset 17 (its LayerNormalization).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["GRAPH_VERSION", "OPSET", "BertShape", "encoder_graph", "expected_shapes"]

OPSET = 17
# Raise it when the graph changes: conversions made by another version are redone.
GRAPH_VERSION = 1


@dataclass(frozen=True)
class BertShape:
    """The sizes a BERT config.json gives, and its LayerNorm epsilon."""

    hidden_size: int
    heads: int
    layers: int
    intermediate_size: int
    max_positions: int
    vocab_size: int
    type_vocab_size: int
    eps: float


def expected_shapes(c: BertShape) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor the graph needs (names without a ``bert.`` prefix) and its shape."""
    w, i = c.hidden_size, c.intermediate_size
    yield "embeddings.word_embeddings.weight", (c.vocab_size, w)
    yield "embeddings.position_embeddings.weight", (c.max_positions, w)
    yield "embeddings.token_type_embeddings.weight", (c.type_vocab_size, w)
    yield "embeddings.LayerNorm.weight", (w,)
    yield "embeddings.LayerNorm.bias", (w,)
    for n in range(c.layers):
        p = f"encoder.layer.{n}."
        for name, rows, columns in (
            ("attention.self.query", w, w),
            ("attention.self.key", w, w),
            ("attention.self.value", w, w),
            ("attention.output.dense", w, w),
            ("intermediate.dense", i, w),
            ("output.dense", w, i),
        ):
            yield f"{p}{name}.weight", (rows, columns)
            yield f"{p}{name}.bias", (rows,)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            yield f"{p}{norm}.weight", (w,)
            yield f"{p}{norm}.bias", (w,)


class _GraphBuilder:
    """Nodes and initializers of one graph, with generated names for intermediates."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def constant(self, name: str, value: NDArray[Any]) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, *inputs: str, **attributes: Any) -> str:
        from onnx import helper

        self._count += 1
        output = f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attributes))
        return output

    def linear(
        self, x: str, weight: NDArray[np.float32], bias: NDArray[np.float32], name: str
    ) -> str:
        # Stored as (in, out): x @ W^T without a Transpose node.
        w = self.constant(f"{name}.weight_t", np.ascontiguousarray(weight.T))
        b = self.constant(f"{name}.bias", bias)
        return self.op("Add", self.op("MatMul", x, w), b)

    def layer_norm(self, x: str, name: str, weights: dict[str, Any], eps: float) -> str:
        scale = self.constant(f"{name}.weight", weights[f"{name}.weight"])
        bias = self.constant(f"{name}.bias", weights[f"{name}.bias"])
        return self.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)


def encoder_graph(config: BertShape, weights: dict[str, NDArray[np.float32]]) -> Any:
    """The ``onnx.ModelProto`` of the encoder with ``weights`` as initializers."""
    from onnx import TensorProto, helper

    g = _GraphBuilder()
    heads, width = config.heads, config.hidden_size
    head_width = width // heads
    i64 = np.int64

    # Embeddings: positions are 0..seq-1, taken from the runtime shape of input_ids.
    zero, one = g.constant("zero", np.array(0, i64)), g.constant("one", np.array(1, i64))
    seq_len = g.op("Gather", g.op("Shape", "input_ids"), one, axis=0)
    positions = g.op("Range", zero, seq_len, one)
    embedded = g.op(
        "Add",
        g.op(
            "Add",
            g.op(
                "Gather",
                g.constant("word_embeddings", weights["embeddings.word_embeddings.weight"]),
                "input_ids",
            ),
            g.op(
                "Gather",
                g.constant("position_embeddings", weights["embeddings.position_embeddings.weight"]),
                positions,
            ),
        ),
        g.op(
            "Gather",
            g.constant("token_type_embeddings", weights["embeddings.token_type_embeddings.weight"]),
            "token_type_ids",
        ),
    )
    hidden = g.layer_norm(embedded, "embeddings.LayerNorm", weights, config.eps)

    # (batch, 1, 1, seq): 0 where a key is a real token, -10000 where it is padding (its
    # softmax weight underflows to exactly 0), added to every head's scores.
    one_f = g.constant("one_f", np.array(1.0, np.float32))
    keep = g.op(
        "Cast",
        g.op(
            "Unsqueeze",
            g.op("Unsqueeze", "attention_mask", g.constant("axis_1", np.array([1], i64))),
            g.constant("axis_2", np.array([2], i64)),
        ),
        to=TensorProto.FLOAT,
    )
    mask_bias = g.op(
        "Mul",
        g.op("Sub", one_f, keep),
        g.constant("masked", np.array(-10000.0, np.float32)),
    )

    split_heads = g.constant("split_heads", np.array([0, 0, heads, head_width], i64))
    merge_heads = g.constant("merge_heads", np.array([0, 0, width], i64))
    root_width = g.constant("root_width", np.array(math.sqrt(head_width), np.float32))
    sqrt2 = g.constant("sqrt2", np.array(math.sqrt(2.0), np.float32))
    half = g.constant("half", np.array(0.5, np.float32))

    for n in range(config.layers):
        p = f"encoder.layer.{n}."

        def w(key: str, prefix: str = p) -> NDArray[np.float32]:
            return weights[prefix + key]

        q = g.linear(
            hidden, w("attention.self.query.weight"), w("attention.self.query.bias"), f"{p}query"
        )
        k = g.linear(
            hidden, w("attention.self.key.weight"), w("attention.self.key.bias"), f"{p}key"
        )
        v = g.linear(
            hidden, w("attention.self.value.weight"), w("attention.self.value.bias"), f"{p}value"
        )
        q_h = g.op("Transpose", g.op("Reshape", q, split_heads), perm=[0, 2, 1, 3])
        k_t = g.op("Transpose", g.op("Reshape", k, split_heads), perm=[0, 2, 3, 1])
        v_h = g.op("Transpose", g.op("Reshape", v, split_heads), perm=[0, 2, 1, 3])
        scores = g.op("Div", g.op("MatMul", q_h, k_t), root_width)
        probs = g.op("Softmax", g.op("Add", scores, mask_bias), axis=-1)
        context = g.op(
            "Reshape", g.op("Transpose", g.op("MatMul", probs, v_h), perm=[0, 2, 1, 3]), merge_heads
        )
        attended = g.linear(
            context,
            w("attention.output.dense.weight"),
            w("attention.output.dense.bias"),
            f"{p}attention.output.dense",
        )
        hidden = g.layer_norm(
            g.op("Add", attended, hidden), f"{p}attention.output.LayerNorm", weights, config.eps
        )

        up = g.linear(
            hidden,
            w("intermediate.dense.weight"),
            w("intermediate.dense.bias"),
            f"{p}intermediate.dense",
        )
        # GELU with erf, as BERT defines it: 0.5 * x * (1 + erf(x / sqrt(2))). Written
        # with Div, onnxruntime fuses it and the bias before it into one BiasGelu kernel.
        gelu = g.op(
            "Mul",
            g.op("Mul", up, g.op("Add", g.op("Erf", g.op("Div", up, sqrt2)), one_f)),
            half,
        )
        down = g.linear(gelu, w("output.dense.weight"), w("output.dense.bias"), f"{p}output.dense")
        hidden = g.layer_norm(
            g.op("Add", down, hidden), f"{p}output.LayerNorm", weights, config.eps
        )

    g.nodes.append(helper.make_node("Identity", [hidden], ["last_hidden_state"]))
    batch_seq = ["batch", "sequence"]
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.INT64, batch_seq)
        for name in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info(
        "last_hidden_state", TensorProto.FLOAT, [*batch_seq, width]
    )
    graph = helper.make_graph(g.nodes, "bert_encoder", inputs, [output], g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="noa fastembed convert"
    )
    # onnxruntime reads IR versions up to what it was built for; opset 17 needs only 8.
    model.ir_version = 8
    return model
