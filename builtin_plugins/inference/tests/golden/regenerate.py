"""Regenerate ``minilm_golden.npz``: sentence-transformers' embeddings of ``sentences.json``.

The parity tests of our BERT encoder compare against these figures, so they come from the
reference implementation: sentence-transformers on PyTorch (CPU), run over the same
all-MiniLM-L6-v2 folder (safetensors, tokenizer.json, modules.json, 1_Pooling/) that NOA
serves. PyTorch is never a dependency of the project, so this script builds its own
environment::

    python3 builtin_plugins/inference/tests/golden/regenerate.py
        # a throwaway venv in a temporary folder, removed afterwards (~1-2 minutes)
    python3 builtin_plugins/inference/tests/golden/regenerate.py --venv .bench/venv
        # reuse (and if need be complete) a venv, e.g. the benchmark one
    python3 builtin_plugins/inference/tests/golden/regenerate.py /path/to/all-MiniLM-L6-v2

Run it with any Python 3.11+ from anywhere; the model folder defaults to
``.noa/models/sentence-transformers/all-MiniLM-L6-v2`` under the repository root. The venv
is made with ``python3 -m venv`` and filled with plain pip: ``torch==2.13.0`` first (a
local CPU wheel on the development machines; uv would fetch a multi-GB CUDA build), then
``sentence-transformers``, and the script stops if pip replaced torch on the way.

The model is loaded with ``HF_HUB_OFFLINE=1`` and encoded with sentence-transformers'
defaults: batch size 32, ``max_seq_length`` 256 from ``sentence_bert_config.json`` (longer
inputs are truncated), mean pooling and the Normalize module from ``modules.json``.

The archive (``np.savez_compressed``) holds:

``embeddings``
    float32, ``(n, 384)``: exactly what ``SentenceTransformer.encode`` returned.
``token_counts``
    int32, ``(n,)``: tokens per sentence after truncation to 256, [CLS] and [SEP] included,
    from the model's own tokenizer.
``untruncated_token_counts``
    int32, ``(n,)``: the same without truncation.
``meta``
    a 0-d string array holding JSON: the sha256 of ``sentences.json`` the figures belong
    to, the library versions, ``max_seq_length``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[3]
DEFAULT_MODEL_DIR = REPO_ROOT / ".noa" / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
SENTENCES = HERE / "sentences.json"
OUTPUT = HERE / "minilm_golden.npz"
TORCH_PIN = "torch==2.13.0"
TORCH_VERSION_PREFIX = "2.13.0"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _has_modules(python: Path, *modules: str) -> bool:
    code = "import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None "
    code += f"for m in {list(modules)!r}))"
    return subprocess.run([str(python), "-c", code], check=False).returncode == 0


def _torch_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__version__)"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def prepare_venv(venv: Path) -> Path:
    """Make ``venv`` if missing and install torch, then sentence-transformers, with pip."""
    python = _venv_python(venv)
    if not python.exists():
        print(f"creating venv {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if not _has_modules(python, "torch"):
        print(f"installing {TORCH_PIN}", flush=True)
        subprocess.run([*pip, TORCH_PIN], check=True)
    before = _torch_version(python)
    if not _has_modules(python, "sentence_transformers"):
        print("installing sentence-transformers", flush=True)
        subprocess.run([*pip, "sentence-transformers"], check=True)
    after = _torch_version(python)
    if after != before:
        raise SystemExit(f"pip replaced torch {before} with {after}; install it by hand first")
    if not after.startswith(TORCH_VERSION_PREFIX):
        print(f"warning: torch {after} in {venv}, not {TORCH_PIN}", file=sys.stderr)
    return python


def generate(model_dir: Path, sentences_path: Path, output: Path) -> None:
    """Run inside the venv: encode the sentences and write the archive."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import numpy as np
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    raw = sentences_path.read_bytes()
    sentences: list[str] = json.loads(raw)
    if not all(isinstance(s, str) and s for s in sentences):
        raise SystemExit(f"{sentences_path}: expected a JSON list of non-empty strings")

    model = SentenceTransformer(str(model_dir), device="cpu")
    max_len = int(model.max_seq_length)
    embeddings = model.encode(sentences, convert_to_numpy=True, show_progress_bar=False)
    embeddings = np.asarray(embeddings)
    if embeddings.dtype != np.float32 or embeddings.shape != (len(sentences), 384):
        raise SystemExit(f"unexpected embeddings {embeddings.dtype} {embeddings.shape}")

    tokenizer = model.tokenizer
    truncated = tokenizer(sentences, truncation=True, max_length=max_len)["input_ids"]
    full = tokenizer(sentences, truncation=False, verbose=False)["input_ids"]
    token_counts = np.array([len(ids) for ids in truncated], dtype=np.int32)
    untruncated = np.array([len(ids) for ids in full], dtype=np.int32)

    meta = {
        "sentences_sha256": hashlib.sha256(raw).hexdigest(),
        "count": len(sentences),
        "max_seq_length": max_len,
        "model_dir": model_dir.name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "numpy": np.__version__,
    }
    np.savez_compressed(
        output,
        embeddings=embeddings,
        token_counts=token_counts,
        untruncated_token_counts=untruncated,
        meta=np.array(json.dumps(meta, sort_keys=True)),
    )
    norms = np.linalg.norm(embeddings, axis=1)
    print(
        f"wrote {output} ({output.stat().st_size:,} bytes): {len(sentences)} sentences, "
        f"{int((untruncated > max_len).sum())} truncated to {max_len}, "
        f"norms {norms.min():.7f}..{norms.max():.7f}; {json.dumps(meta, sort_keys=True)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model_dir", nargs="?", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--venv", type=Path, help="reuse this venv instead of a throwaway one")
    parser.add_argument("--sentences", type=Path, default=SENTENCES)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--in-venv", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    model_dir: Path = args.model_dir.resolve()
    sentences: Path = args.sentences.resolve()
    output: Path = args.output.resolve()

    if args.in_venv:
        generate(model_dir, sentences, output)
        return 0

    if not (model_dir / "model.safetensors").is_file():
        parser.error(f"no model.safetensors in {model_dir}")

    tmp: str | None = None
    if args.venv is not None:
        venv = args.venv.resolve()
    else:
        tmp = tempfile.mkdtemp(prefix="noa-golden-")
        venv = Path(tmp) / "venv"
    try:
        python = prepare_venv(venv)
        cmd = [str(python), str(Path(__file__).resolve()), str(model_dir), "--in-venv"]
        cmd += ["--sentences", str(sentences), "--output", str(output)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        return subprocess.run(cmd, check=False, env=env).returncode
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
