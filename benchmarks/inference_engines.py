"""One sentence-embedding engine, timed over the workloads of ``inference_kernels.py``.

Runs ONE engine in this process and prints ONE JSON line on stdout (logs go to stderr)::

    python benchmarks/inference_engines.py ENGINE --threads N --model-dir DIR \\
        --onnx-dir DIR --workloads FILE.json

Engines, each embedding with mean pooling and L2 normalisation, truncating to 256 tokens:

``ours``
    ``noa.builtin_plugins.inference.bert.BertEmbedder`` on the ``cpu`` device driver;
    run it with the project's ``.venv/bin/python``.
``onnxruntime``
    ``ONNX_DIR/model.onnx`` in an ``InferenceSession`` with ``ORT_ENABLE_ALL`` graph
    optimisations, tokenised with ``tokenizers``, pooled in NumPy.
``fastembed``
    ``fastembed.TextEmbedding`` on the same local ONNX folder (no download).
``sentence-transformers``
    ``SentenceTransformer(MODEL_DIR)`` on PyTorch, CPU.

The last three run under ``.bench/venv/bin/python`` (``benchmarks/inference_peers_setup``).

The thread count goes to ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``,
``OPENBLAS_NUM_THREADS``, ``NUMBA_NUM_THREADS`` and ``RAYON_NUM_THREADS`` (the tokenizers
pool) before any of them is imported, and to the engine's own knob
(``intra_op_num_threads``, ``torch.set_num_threads``, fastembed's ``threads``,
``BertEmbedder.load(threads=)``).

Workloads (see ``inference_kernels.py`` for the file format): ``batch1`` times single-text
calls and reports p50/p99 latency; ``b32_short``, ``b32_long`` time one 32-text call;
``corpus`` embeds every text in batches of 32 after sorting by length (each engine's own
sorted path; fastembed runs with its defaults instead, batch size 256 without sorting, and
the result says so). Each workload is warmed up, then repeated until its wall budget is
spent (and at least ``min_runs`` times). Peak RSS is ``ru_maxrss`` of this process, read
after loading and after each workload.
"""

from __future__ import annotations

import abc
import argparse
import json
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    Embeddings = NDArray[np.float32]
else:
    Embeddings = Any

ENGINES = ("ours", "onnxruntime", "fastembed", "sentence-transformers")
MAX_LENGTH = 256
BATCH = 32
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "RAYON_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
FASTEMBED_MODEL = "local/all-MiniLM-L6-v2"


def set_thread_env(threads: int) -> None:
    """Pin every thread pool we know of; must run before NumPy and friends are imported."""
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _l2_normalise(x: Embeddings) -> Embeddings:
    import numpy as np

    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Engine(abc.ABC):
    """An engine: ``embed`` runs one batch as given, ``embed_corpus`` a whole corpus."""

    name = ""
    corpus_mode = f"sorted by length, batches of {BATCH}"

    @abc.abstractmethod
    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Embeddings of ``texts`` as one batch, in order."""

    @abc.abstractmethod
    def embed_corpus(self, texts: Sequence[str]) -> Embeddings:
        """Embeddings of a whole corpus, batched the engine's own way, in input order."""

    def versions(self) -> dict[str, str]:
        return {}


class Ours(Engine):
    name = "ours"
    corpus_mode = f"BertEmbedder.embed: sorted by token count, batches of {BATCH}"

    def __init__(self, model_dir: Path, threads: int) -> None:
        from noa.builtin_plugins.inference.bert import BertEmbedder

        self.embedder = BertEmbedder.load(
            model_dir, device=_cpu_device(), threads=threads, max_batch_size=BATCH
        )

    def embed(self, texts: Sequence[str]) -> Embeddings:
        return self.embedder.embed(list(texts), batch_size=BATCH)

    def embed_corpus(self, texts: Sequence[str]) -> Embeddings:
        return self.embedder.embed(list(texts), batch_size=BATCH)

    def versions(self) -> dict[str, str]:
        import numba
        import numpy

        return {"numpy": numpy.__version__, "numba": numba.__version__}


def _cpu_device() -> Any:
    """The ``cpu`` driver of slot ``device``, found the way the kernel finds it."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="noa.drivers.device"):
        if ep.name == "cpu":
            return ep.load()()
    from noa.builtin_plugins.inference.cpu_device import CpuDevice

    return CpuDevice()


class OnnxRuntime(Engine):
    name = "onnxruntime"
    corpus_mode = f"sorted by token count, batches of {BATCH}"

    def __init__(self, onnx_dir: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            str(onnx_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(onnx_dir / "tokenizer.json"))
        # tokenizer.json itself truncates to 128 and pads every input to 128; batches are
        # padded here, to their longest member.
        self.tokenizer.enable_truncation(MAX_LENGTH)
        self.tokenizer.no_padding()

    def _run(self, token_ids: Sequence[Sequence[int]]) -> Embeddings:
        import numpy as np

        width = max(len(t) for t in token_ids)
        ids = np.zeros((len(token_ids), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, t in enumerate(token_ids):
            ids[row, : len(t)] = t
            mask[row, : len(t)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        (hidden,) = self.session.run(["last_hidden_state"], feeds)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return _l2_normalise(pooled)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        return self._run([e.ids for e in self.tokenizer.encode_batch(list(texts))])

    def embed_corpus(self, texts: Sequence[str]) -> Embeddings:
        import numpy as np

        token_ids = [e.ids for e in self.tokenizer.encode_batch(list(texts))]
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            chunk = order[start : start + BATCH]
            out[chunk] = self._run([token_ids[i] for i in chunk])
        return out

    def versions(self) -> dict[str, str]:
        import numpy
        import onnxruntime
        import tokenizers

        return {
            "onnxruntime": onnxruntime.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": numpy.__version__,
        }


class FastEmbed(Engine):
    name = "fastembed"
    corpus_mode = "fastembed defaults: batch_size 256, input order (no length sorting)"

    def __init__(self, onnx_dir: Path, threads: int) -> None:
        from fastembed import TextEmbedding
        from fastembed.common.model_description import ModelSource, PoolingType

        if not any(m["model"] == FASTEMBED_MODEL for m in TextEmbedding.list_supported_models()):
            TextEmbedding.add_custom_model(
                model=FASTEMBED_MODEL,
                pooling=PoolingType.MEAN,
                normalization=True,
                sources=ModelSource(hf=FASTEMBED_MODEL),
                dim=384,
                model_file="model.onnx",
            )
        self.model = TextEmbedding(
            FASTEMBED_MODEL, specific_model_path=str(onnx_dir), threads=threads
        )

    def embed(self, texts: Sequence[str]) -> Embeddings:
        import numpy as np

        return np.stack(list(self.model.embed(list(texts)))).astype(np.float32, copy=False)

    def embed_corpus(self, texts: Sequence[str]) -> Embeddings:
        return self.embed(texts)

    def versions(self) -> dict[str, str]:
        import fastembed
        import onnxruntime

        return {"fastembed": fastembed.__version__, "onnxruntime": onnxruntime.__version__}


class SentenceTransformers(Engine):
    name = "sentence-transformers"
    corpus_mode = f"SentenceTransformer.encode: sorted by character length, batches of {BATCH}"

    def __init__(self, model_dir: Path, threads: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        if self.model.max_seq_length != MAX_LENGTH:
            raise RuntimeError(f"max_seq_length is {self.model.max_seq_length}, not {MAX_LENGTH}")

    def embed(self, texts: Sequence[str]) -> Embeddings:
        return self.model.encode(
            list(texts), batch_size=BATCH, convert_to_numpy=True, show_progress_bar=False
        )

    def embed_corpus(self, texts: Sequence[str]) -> Embeddings:
        return self.embed(texts)

    def versions(self) -> dict[str, str]:
        import sentence_transformers
        import torch
        import transformers

        return {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__,
            "torch_threads": str(torch.get_num_threads()),
        }


def make_engine(name: str, model_dir: Path, onnx_dir: Path, threads: int) -> Engine:
    if name == "ours":
        return Ours(model_dir, threads)
    if name == "onnxruntime":
        return OnnxRuntime(onnx_dir, threads)
    if name == "fastembed":
        return FastEmbed(onnx_dir, threads)
    if name == "sentence-transformers":
        return SentenceTransformers(model_dir, threads)
    raise ValueError(f"unknown engine {name!r}; choose from {', '.join(ENGINES)}")


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(q / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def _repeat(fn: Callable[[], object], budget_s: float, min_runs: int, max_runs: int) -> list[float]:
    """Seconds per call of ``fn``, called until ``budget_s`` is spent (bounded by runs)."""
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= min_runs and time.perf_counter() - start >= budget_s:
            break
    return times


def run_workload(engine: Engine, spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["kind"]
    texts: list[str] = spec["texts"]
    budget = float(spec["budget_s"])
    min_runs = int(spec.get("min_runs", 1))
    max_runs = int(spec.get("max_runs", 1_000_000))
    warmup = int(spec.get("warmup", 1))
    result: dict[str, Any] = {"kind": kind, "texts": len(texts)}
    cpu0 = wall0 = 0.0  # set just before the timed loop

    def timed(fn: Callable[[], object]) -> list[float]:
        nonlocal cpu0, wall0
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        return _repeat(fn, budget, min_runs, max_runs)

    if kind == "batch1":
        text = texts[0]
        for _ in range(warmup):
            engine.embed([text])
        times = timed(lambda: engine.embed([text]))
        ordered = sorted(times)
        result.update(
            calls=len(times),
            p50_ms=_percentile(ordered, 50) * 1e3,
            p99_ms=_percentile(ordered, 99) * 1e3,
            mean_ms=sum(times) / len(times) * 1e3,
            sentences_per_s=len(times) / sum(times),
        )
    elif kind in ("batch", "corpus"):
        call = engine.embed if kind == "batch" else engine.embed_corpus
        warm = texts if kind == "batch" else texts[: spec.get("warmup_texts", 2 * BATCH)]
        for _ in range(warmup):
            call(warm)
        times = timed(lambda: call(texts))
        per_run = sorted(len(texts) / t for t in times)
        result.update(
            calls=len(times),
            sentences_per_s=len(texts) * len(times) / sum(times),
            run_s_min=min(times),
            run_s_median=sorted(times)[len(times) // 2],
            sentences_per_s_runs=[round(x, 2) for x in per_run],
        )
        if kind == "corpus":
            result["mode"] = engine.corpus_mode
    else:
        raise ValueError(f"unknown workload kind {kind!r}")
    result["wall_s"] = sum(times)
    # CPU seconds per wall second while timed: about the thread count when the engine
    # had the cores to itself; lower when something else was running.
    result["cpu_per_wall"] = (cpu_seconds() - cpu0) / (time.perf_counter() - wall0)
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--onnx-dir", type=Path, required=True)
    parser.add_argument("--workloads", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="run only these workloads")
    args = parser.parse_args(argv)
    set_thread_env(args.threads)

    spec = json.loads(args.workloads.read_text(encoding="utf-8"))
    result: dict[str, Any] = {
        "engine": args.engine,
        "threads": args.threads,
        "python": sys.executable,
        "platform": platform.platform(),
        "rss_before_load_mib": peak_rss_mib(),
    }
    try:
        t0 = time.perf_counter()
        engine = make_engine(
            args.engine, args.model_dir.resolve(), args.onnx_dir.resolve(), args.threads
        )
        result["load_s"] = time.perf_counter() - t0
        result["rss_after_load_mib"] = peak_rss_mib()
        result["versions"] = engine.versions()
        check_texts: list[str] = spec.get("check_texts", [])
        if check_texts:
            emb = engine.embed(check_texts)
            result["check_embeddings"] = [[round(float(v), 7) for v in row] for row in emb]
        result["workloads"] = {}
        for name, workload in spec["workloads"].items():
            if args.only and name not in args.only:
                continue
            print(f"[{args.engine}] {name} ...", file=sys.stderr, flush=True)
            result["workloads"][name] = run_workload(engine, workload)
            print(
                f"[{args.engine}] {name}: {result['workloads'][name]['sentences_per_s']:.1f} "
                "sentences/s",
                file=sys.stderr,
                flush=True,
            )
        result["ok"] = True
    except Exception as exc:
        traceback.print_exc()
        result["ok"] = False
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
