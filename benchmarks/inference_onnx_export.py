"""Export all-MiniLM-L6-v2 from its safetensors weights to ONNX, for the inference peers.

Run by ``benchmarks/inference_peers_setup`` under ``.bench/venv/bin/python`` (it needs
PyTorch, transformers, onnx, onnxscript and onnxruntime)::

    .bench/venv/bin/python benchmarks/inference_onnx_export.py MODEL_DIR OUT_DIR

``OUT_DIR/model.onnx`` takes ``input_ids``, ``attention_mask`` and ``token_type_ids``
(int64, ``(batch, sequence)``, both axes dynamic) and gives ``last_hidden_state``
(float32, ``(batch, sequence, 384)``); pooling and normalisation stay outside, as in
sentence-transformers. The weights are stored inside the file, not as external data.
The tokenizer files are copied beside it so that fastembed loads the folder with no
download; ``tokenizer_config.json`` gets ``model_max_length`` from
``sentence_bert_config.json`` (256), the length sentence-transformers truncates to, since
fastembed truncates to ``model_max_length`` (512 in the original file).

The export is checked before it is moved into place: onnxruntime must reproduce PyTorch's
``last_hidden_state`` to 1e-4 at two different batch and sequence shapes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "special_tokens_map.json", "config.json")
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
OPSET = 17


def _export(model: Any, example: tuple[Any, ...], path: Path) -> str:
    """Export with the TorchScript exporter, else the dynamo one; returns which was used.

    TorchScript first: onnxruntime runs its graph faster here (at 2 threads, 32 x 128
    tokens: ~62 sentences/s against ~51 for the dynamo graph, whose GELU it does not fuse).
    """
    import torch

    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    try:
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=INPUT_NAMES,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
        return "torchscript"
    except Exception as exc:
        print(f"TorchScript export failed ({type(exc).__name__}: {exc}); trying dynamo")
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("sequence", min=1, max=512)
    program = torch.onnx.export(
        model,
        example,
        input_names=INPUT_NAMES,
        output_names=["last_hidden_state"],
        dynamic_shapes={name: {0: batch, 1: seq} for name in INPUT_NAMES},
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
    )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
    return "dynamo"


def _check(model: Any, path: Path) -> float:
    """Largest |onnxruntime - torch| over two shapes; raises if the graph is not dynamic."""
    import numpy as np
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if sorted(names) != sorted(INPUT_NAMES):
        raise RuntimeError(f"unexpected inputs {names}")
    if session.get_outputs()[0].name != "last_hidden_state":
        raise RuntimeError("first output is not last_hidden_state")
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch, seq in ((1, 7), (5, 33)):
        ids = rng.integers(1000, 30000, size=(batch, seq), dtype=np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = np.ones_like(ids)
        mask[-1, seq // 2 :] = 0  # one padded row
        types = np.zeros_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        (got,) = session.run(["last_hidden_state"], feeds)
        with torch.inference_mode():
            want = model(*(torch.from_numpy(feeds[n]) for n in INPUT_NAMES)).numpy()
        worst = max(worst, float(np.abs(got - want).max()))
    if worst > 1e-4:
        raise RuntimeError(f"onnxruntime differs from torch by {worst}")
    return worst


def export(model_dir: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModel

    class LastHidden(torch.nn.Module):
        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            out = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return out.last_hidden_state

    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager")
    model = LastHidden(bert).eval()
    example = tuple(torch.ones((2, 16), dtype=torch.int64) for _ in INPUT_NAMES)

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        tmp_path = Path(tmp) / "model.onnx"
        with torch.inference_mode():
            how = _export(model, example, tmp_path)
        worst = _check(model, tmp_path)
        size = tmp_path.stat().st_size
        tmp_path.replace(out_dir / "model.onnx")
    print(
        f"exported {out_dir / 'model.onnx'} ({size:,} bytes, {how}, max |ort - torch| {worst:.2e})"
    )

    for name in TOKENIZER_FILES:
        shutil.copy2(model_dir / name, out_dir / name)
    max_len = json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"]
    tok_cfg = json.loads((model_dir / "tokenizer_config.json").read_text())
    tok_cfg["model_max_length"] = int(max_len)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    print(f"copied tokenizer files; tokenizer_config.json model_max_length={max_len}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    export(args.model_dir.resolve(), args.out_dir.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
