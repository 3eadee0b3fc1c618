"""Embeddings per second: the fastembed plugin's embedder against the project's own
runtime, on the same 256 short sentences and the same model, in one run::

    .venv/bin/python benchmarks/embedders_fastembed.py [--threads 2] [--rounds 5] [--json FILE]

Engines (all-MiniLM-L6-v2, mean pooling, L2 normalisation):

``runtime``
    ``noa.builtin_plugins.inference.bert.BertEmbedder`` on the ``cpu`` device driver
    (``.noa/models/sentence-transformers/all-MiniLM-L6-v2``), ``embed(texts,
    batch_size=32)``: its own length-sorted path.
``fastembed``
    the plugin's path, ``noa.builtin_plugins.fastembed.embedder.load_model`` on the ONNX
    folder ``scripts/setup`` converts (``.noa/models-onnx/all-MiniLM-L6-v2``): texts
    sorted by length, ``batch_size=32`` (the config default), fastembed's ``threads``.
``fastembed-defaults``
    the same fastembed model called as fastembed's README does: ``embed(texts)``
    with its default batch size (256), no sorting.

Each round times every engine once over all 256 texts, in turn, so a slow patch of a
shared machine hits all alike; after one warm-up call each, the median of ``--rounds``
rounds is reported, with the ratio fastembed / runtime (of the medians, and the range
and median of the ratios within each round). The thread count goes to the
engines and, before NumPy loads, to ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and
``RAYON_NUM_THREADS`` (the tokenizers' pool).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / ".noa" / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
CONVERTED = ROOT / ".noa" / "models-onnx" / "all-MiniLM-L6-v2"

_SUBJECTS = (
    "The cat",
    "A young engineer",
    "Our team",
    "The old bridge",
    "My neighbour",
    "The committee",
    "A small robot",
    "The river",
    "This recipe",
    "The new library",
)
_VERBS = (
    "quietly watches",
    "repaired",
    "will discuss",
    "crosses",
    "painted",
    "approved",
    "follows",
    "floods",
    "needs",
    "opened",
)
_OBJECTS = (
    "the morning train.",
    "a broken bicycle.",
    "the quarterly budget.",
    "the valley below.",
    "a blue fence.",
    "the revised plan.",
    "its owner home.",
    "the lower fields.",
    "fresh basil.",
    "on Monday.",
)
_TAILS = ("", " Nobody expected it.", " It rained all day.", " Prices went up again.")


def sentences(count: int = 256) -> list[str]:
    """Short, varied, deterministic sentences (6 to 14 words)."""
    out = []
    for i in range(count):
        out.append(
            f"{_SUBJECTS[i % 10]} {_VERBS[(i // 10) % 10]} {_OBJECTS[(i * 7 + i // 3) % 10]}"
            f"{_TAILS[(i // 100 + i) % 4]}"
        )
    return out


def measure(rounds: int, engines: dict[str, Callable[[], Any]], count: int) -> dict[str, Any]:
    for run in engines.values():
        run()  # warm-up: first-call allocations, graph optimisation, JIT
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, run in engines.items():
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    return {
        name: {
            "median_s": statistics.median(times),
            "embeddings_per_s": count / statistics.median(times),
            "rounds_per_s": [round(count / t, 1) for t in times],
        }
        for name, times in seconds.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    for folder, fix in ((SOURCE, "./scripts/setup"), (CONVERTED, "./scripts/setup")):
        if not folder.is_dir():
            print(f"{folder} is missing: run {fix}", file=sys.stderr)
            return 2

    import numpy as np
    from noa.builtin_plugins.fastembed.config import ModelSpec
    from noa.builtin_plugins.fastembed.embedder import load_model
    from noa.builtin_plugins.inference.bert import BertEmbedder
    from noa.builtin_plugins.inference.cpu_device import CpuDevice

    texts = sentences()
    runtime = BertEmbedder.load(SOURCE, CpuDevice(), threads=args.threads)
    fastembed = load_model("minilm", ModelSpec(path=str(CONVERTED)), threads=args.threads)
    engines: dict[str, Callable[[], Any]] = {
        "runtime": lambda: runtime.embed(texts, batch_size=32),
        "fastembed": lambda: fastembed.embed(texts, batch_size=32),
        "fastembed-defaults": lambda: list(fastembed.engine.embed(texts)),
    }
    a, b = runtime.embed(texts), fastembed.embed(texts, batch_size=32)
    agreement = float(np.min((a * b).sum(axis=1)))  # both unit vectors
    results = measure(args.rounds, engines, len(texts))
    ratio = results["fastembed"]["embeddings_per_s"] / results["runtime"]["embeddings_per_s"]
    # Both engines ran back to back in each round: the ratio within a round is the fairer
    # figure when the machine is shared.
    per_round = [
        f / r
        for f, r in zip(
            results["fastembed"]["rounds_per_s"], results["runtime"]["rounds_per_s"], strict=True
        )
    ]
    report = {
        "texts": len(texts),
        "mean_words": round(float(np.mean([len(t.split()) for t in texts])), 1),
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "min_cosine_fastembed_vs_runtime": agreement,
        "engines": results,
        "ratio_fastembed_over_runtime": ratio,
        "ratio_per_round": [round(r, 3) for r in per_round],
    }
    width = max(map(len, results))
    print(f"{len(texts)} short sentences, threads={args.threads}, median of {args.rounds} rounds")
    for name, result in results.items():
        print(f"  {name:<{width}}  {result['embeddings_per_s']:8.1f} embeddings/s")
    print(
        f"  fastembed / runtime = {ratio:.2f}x (per round {min(per_round):.2f}-"
        f"{max(per_round):.2f}, median {statistics.median(per_round):.2f}); "
        f"min cosine between them {agreement:.7f}"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    runtime.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
