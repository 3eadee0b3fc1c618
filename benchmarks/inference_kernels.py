"""Sentence-embedding throughput: our CPU kernels against onnxruntime, fastembed and PyTorch.

Run from the repository root after ``benchmarks/inference_peers_setup``::

    python3 benchmarks/inference_kernels.py                  # all engines, 2 threads (~7 min)
    python3 benchmarks/inference_kernels.py --quick          # smoke run, about a minute
    python3 benchmarks/inference_kernels.py --engines onnxruntime fastembed --rounds 2

The model is all-MiniLM-L6-v2 (mean pooling, L2 normalisation, 256-token truncation).
This script generates the workloads deterministically from a seeded word list (every word
one word piece, so token counts are exact by construction; they are checked with
``tokenizers`` when it is importable), writes them to a JSON file, and runs each engine in
its own process, one after another, through ``benchmarks/inference_engines.py``: ``ours``
under the project's ``.venv/bin/python``, the peers under ``.bench/venv/bin/python``.
With ``--rounds 2`` the engines run twice, the second time in reverse order, and the
median of the rounds is shown. CPU time that other processes used during each engine's
run is measured from ``/proc/stat``: such runs are flagged and, where a quiet round
exists, left out (``--wait-idle S`` waits for quiet CPUs before each engine).

Workloads: ``batch1`` (one 14-token sentence, single calls: p50/p99 latency and
sentences/s), ``b32_short`` (32 sentences of 20 tokens in one call), ``b32_long`` (32 of
128 tokens) and ``corpus`` (2,000 sentences of mixed length, about 4% of them past the
256-token limit, in batches of 32 after sorting by length; fastembed with its own
defaults). Tokens are counted with [CLS] and [SEP]. Peak RSS is that of each engine's
process. Results go to ``benchmarks/results/inference_kernels-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("ours", "onnxruntime", "fastembed", "sentence-transformers")
PEERS = ("onnxruntime", "fastembed", "sentence-transformers")
DEFAULT_MODEL_DIR = ROOT / ".noa" / "models" / "sentence-transformers" / "all-MiniLM-L6-v2"
DEFAULT_ONNX_DIR = ROOT / ".bench" / "onnx" / "all-MiniLM-L6-v2"
RESULTS_DIR = ROOT / "benchmarks" / "results"
WORKLOAD_ORDER = ("batch1", "b32_short", "b32_long", "corpus")
# Above this many CPUs' worth of other work during an engine's run, its figures are flagged.
OTHER_CPU_LIMIT = 0.1


def _words(text: str) -> list[str]:
    return text.split()


# Every word below is a single word piece in the model's uncased vocabulary.
NOUNS = _words("""time year people way day man thing woman life child world school state family
student group country problem hand part place case week company system program question
work government number night point home water room mother area money story fact month lot
right study book eye job word business issue side kind head house service friend father
power hour game line end member law car city community name president team minute idea
kid body information back parent face level office door health person art war history
party result change morning reason research girl guy moment air teacher force education
river garden bridge window table kitchen train station market letter paper music song
film picture colour light sound voice road street village island mountain forest field
farm animal dog cat horse bird fish tree flower bread cheese coffee tea dinner lunch
breakfast doctor nurse engineer driver writer painter farmer soldier king queen army ship
plane boat machine computer phone screen engine wheel stone glass metal wood fire rain
snow wind storm sun moon star sky sea lake beach hill valley""")
VERBS = _words("""makes made takes took gives gave finds found tells told asks asked works worked
seems seemed feels felt tries tried leaves left calls called keeps kept begins began shows
showed hears heard plays played runs ran moves moved lives lived believes believed brings
brought happens happened writes wrote sits sat stands stood loses lost pays paid meets met
includes included continues continued learns learned leads led understands understood
watches watched follows followed stops stopped speaks spoke reads spends spent grows grew
opens opened walks walked wins won offers offered remembers remembered loves loved
considers considered appears appeared buys bought waits waited serves served sends sent
expects expected builds built stays stayed falls fell reaches reached remains
remained""")
ADJECTIVES = _words("""new good high old great big small large long little young important public
bad same able early late hard major better best free sure clear full special easy strong
whole real certain personal open red blue green black white dark cold warm quiet loud
quick slow happy sad simple short wide deep heavy fresh clean""")
DETERMINERS = _words("the a this that every each some another no")
PREPOSITIONS = _words("""in on at by for with from into over under after before between through
during without about against along across behind near around""")
LINKS = _words("""and but or so because although while when if then also still just only even
often never always sometimes soon again already once now today yesterday
later""")
BATCH1_TEXT = "The old bridge was closed after engineers found cracks in it."


def _clause(rng: random.Random) -> list[str]:
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.5:
        words.append(rng.choice(ADJECTIVES))
    words += [rng.choice(NOUNS), rng.choice(VERBS)]
    if rng.random() < 0.7:
        words += [rng.choice(PREPOSITIONS), rng.choice(DETERMINERS)]
        if rng.random() < 0.4:
            words.append(rng.choice(ADJECTIVES))
        words.append(rng.choice(NOUNS))
    return words


def make_sentence(rng: random.Random, tokens: int) -> str:
    """A sentence of exactly ``tokens`` word pieces, [CLS] and [SEP] included."""
    body = max(1, tokens - 3)  # [CLS], the final full stop, [SEP]
    pieces: list[str] = []
    while len(pieces) < body:
        if pieces:
            if rng.random() < 0.3:
                pieces.append(",")
            pieces.append(rng.choice(LINKS))
        pieces += _clause(rng)
    pieces = pieces[:body]
    while pieces[-1] == "," and len(pieces) > 1:  # never end on a comma: swap it for a word
        pieces[-1] = rng.choice(NOUNS)
    text = ""
    for piece in pieces:
        text += piece if piece == "," or not text else " " + piece
    return text[0].upper() + text[1:] + "."


def corpus_lengths(rng: random.Random, n: int) -> list[int]:
    """Mixed lengths: half short, some medium, a few long, ~5% drawn past the 256 limit."""
    lengths = []
    for _ in range(n):
        u = rng.random()
        if u < 0.50:
            lengths.append(rng.randint(6, 24))
        elif u < 0.80:
            lengths.append(rng.randint(25, 64))
        elif u < 0.95:
            lengths.append(rng.randint(65, 200))
        else:
            lengths.append(rng.randint(257, 400))
    return lengths


def build_workloads(seed: int, quick: bool, corpus_size: int) -> dict[str, Any]:
    rng = random.Random(seed)
    if quick:
        corpus_size = min(corpus_size, 200)
    b32_short = [make_sentence(rng, 20) for _ in range(32)]
    b32_long = [make_sentence(rng, 128) for _ in range(32)]
    corpus = [make_sentence(rng, n) for n in corpus_lengths(rng, corpus_size)]
    check = [BATCH1_TEXT, b32_short[0], b32_long[0], max(corpus, key=len), "Hi", "café ☕ 東京"]

    def spec(kind: str, texts: list[str], budget: float, min_runs: int, warmup: int) -> Any:
        if quick:
            budget, min_runs, warmup = min(budget, 1.0), min(min_runs, 5), 1
        return {
            "kind": kind,
            "texts": texts,
            "budget_s": budget,
            "min_runs": min_runs,
            "warmup": warmup,
        }

    return {
        "seed": seed,
        "quick": quick,
        "check_texts": check,
        "workloads": {
            "batch1": spec("batch1", [BATCH1_TEXT], 8.0, 100, 20),
            "b32_short": spec("batch", b32_short, 10.0, 5, 2),
            "b32_long": spec("batch", b32_long, 15.0, 3, 1),
            "corpus": spec("corpus", corpus, 30.0, 1, 1),
        },
    }


def token_stats(workloads: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """Token counts per workload from the model's tokenizer, when ``tokenizers`` imports."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return {"verified": False, "why": "tokenizers is not importable here"}
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    stats: dict[str, Any] = {"verified": True}
    for name, spec in workloads["workloads"].items():
        counts = [len(e.ids) for e in tok.encode_batch(spec["texts"])]
        stats[name] = {
            "mean": statistics.fmean(counts),
            "min": min(counts),
            "max": max(counts),
            "over_256": sum(c > 256 for c in counts),
            "mean_after_truncation": statistics.fmean(min(c, 256) for c in counts),
        }
    return stats


def cpu_busy_s() -> float | None:
    """CPU seconds spent busy by the whole machine since boot (Linux), else None."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_until_idle(max_wait_s: float, window_s: float = 10.0) -> float:
    """Wait (at most ``max_wait_s``) for ``window_s`` in which other processes used under
    10% of one CPU; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait_s:
        b0 = cpu_busy_s()
        if b0 is None:
            break
        time.sleep(window_s)
        b1 = cpu_busy_s() or b0
        if (b1 - b0) / window_s < 0.1:
            break
    return time.monotonic() - t0


def run_engine(
    engine: str, python: Path, args: argparse.Namespace, workloads_path: Path
) -> dict[str, Any]:
    if not python.exists():
        return {"engine": engine, "ok": False, "error": f"no interpreter at {python}"}
    cmd = [
        str(python),
        str(ROOT / "benchmarks" / "inference_engines.py"),
        engine,
        "--threads",
        str(args.threads),
        "--model-dir",
        str(args.model_dir),
        "--onnx-dir",
        str(args.onnx_dir),
        "--workloads",
        str(workloads_path),
    ]
    print(f"--- {engine} ({python})", file=sys.stderr, flush=True)
    if args.wait_idle > 0:
        waited = wait_until_idle(args.wait_idle)
        print(f"    waited {waited:.0f} s for idle CPUs", file=sys.stderr, flush=True)
    busy0, own0 = cpu_busy_s(), children_cpu_s()
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False, timeout=args.timeout
    )
    wall = time.perf_counter() - t0
    busy1, own1 = cpu_busy_s(), children_cpu_s()
    # Machine-wide busy CPU time that was not the engine's: other work sharing the cores.
    other = None
    if busy0 is not None and busy1 is not None:
        other = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                result: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            result["process_wall_s"] = wall
            result["returncode"] = proc.returncode
            result["other_cpu_per_wall"] = other
            return result
    tail = proc.stdout[-2000:]
    return {"engine": engine, "ok": False, "error": f"exit {proc.returncode}, no JSON: {tail}"}


def _median(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over rounds of each engine's figures (quiet rounds only, when there are
    any); the highest peak RSS."""
    out: dict[str, Any] = {}
    by_engine: dict[str, list[dict[str, Any]]] = {}
    for result in rounds:
        by_engine.setdefault(result["engine"], []).append(result)
    for engine, results in by_engine.items():
        good = [r for r in results if r.get("ok")]
        if not good:
            out[engine] = {"ok": False, "error": results[-1].get("error", "?")}
            continue
        # Rounds disturbed by other work are left out when a quiet one exists.
        quiet = [r for r in good if (r.get("other_cpu_per_wall") or 0.0) <= OTHER_CPU_LIMIT]
        noisy = len(good) - len(quiet)
        good = quiet or good
        summary: dict[str, Any] = {
            "ok": True,
            "rounds": len(good),
            "noisy_rounds_left_out": noisy if quiet else 0,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in good),
            "rss_after_load_mib": max(r["rss_after_load_mib"] for r in good),
            "load_s": _median([r["load_s"] for r in good]),
        }
        for name in WORKLOAD_ORDER:
            runs = [r["workloads"][name] for r in good if name in r.get("workloads", {})]
            if not runs:
                continue
            agg: dict[str, Any] = {"sentences_per_s": _median([w["sentences_per_s"] for w in runs])}
            agg["per_round"] = [round(w["sentences_per_s"], 2) for w in runs]
            if name == "batch1":
                agg["p50_ms"] = _median([w["p50_ms"] for w in runs])
                agg["p99_ms"] = _median([w["p99_ms"] for w in runs])
            if "mode" in runs[0]:
                agg["mode"] = runs[0]["mode"]
            agg["peak_rss_mib"] = max(w["peak_rss_mib"] for w in runs)
            agg["cpu_per_wall"] = [round(w.get("cpu_per_wall", math.nan), 2) for w in runs]
            summary[name] = agg
        out[engine] = summary
    return out


def agreement(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Lowest cosine between each engine's check embeddings and the reference engine's."""
    firsts: dict[str, list[list[float]]] = {}
    for r in rounds:
        if r.get("ok") and "check_embeddings" in r:
            firsts.setdefault(r["engine"], r["check_embeddings"])
    ref_name = next((e for e in ("sentence-transformers", "onnxruntime") if e in firsts), None)
    if ref_name is None:
        return {}
    ref = firsts[ref_name]
    out: dict[str, Any] = {"reference": ref_name}
    for engine, rows in firsts.items():
        cosines = []
        for a, b in zip(rows, ref, strict=True):
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            na = math.sqrt(sum(x * x for x in a))
            nb = math.sqrt(sum(y * y for y in b))
            cosines.append(dot / (na * nb))
        out[engine] = min(cosines)
    return out


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def print_table(summary: dict[str, Any], stats: dict[str, Any], threads: int) -> None:
    print(f"\nall-MiniLM-L6-v2, {threads} threads; sentences/s (median of rounds)")
    if stats.get("verified"):
        lens = ", ".join(f"{n} {stats[n]['mean']:.0f} tok" for n in WORKLOAD_ORDER if n in stats)
        print(f"mean tokens incl. [CLS]/[SEP]: {lens}")
    head = (
        "| engine | batch1 /s | p50 ms | p99 ms | b32 x20 /s | b32 x128 /s | corpus /s "
        "| peak RSS MiB |"
    )
    print(head)
    print("|" + "---|" * 8)
    for engine in ENGINES:
        s = summary.get(engine)
        if s is None:
            continue
        if not s["ok"]:
            print(f"| {engine} | failed: {s['error'][:80]} |")
            continue

        def rate(name: str, s: dict[str, Any] = s) -> float | None:
            return s[name]["sentences_per_s"] if name in s else None

        b1 = s.get("batch1", {})
        print(
            f"| {engine} | {_fmt(rate('batch1'))} | {_fmt(b1.get('p50_ms'), 2)} "
            f"| {_fmt(b1.get('p99_ms'), 2)} | {_fmt(rate('b32_short'))} "
            f"| {_fmt(rate('b32_long'))} | {_fmt(rate('corpus'))} | {_fmt(s['peak_rss_mib'], 0)} |"
        )
    for engine in ENGINES:
        mode = summary.get(engine, {}).get("corpus", {}).get("mode")
        if mode:
            print(f"  corpus, {engine}: {mode}")
    ours = summary.get("ours", {})
    if not ours.get("ok"):
        return
    print("\nratios ours/peer, sentences/s (above 1: ours is faster)")
    print("| peer | batch1 | b32 x20 | b32 x128 | corpus |")
    print("|---|---|---|---|---|")
    for peer in PEERS:
        p = summary.get(peer, {})
        if not p.get("ok"):
            continue
        cells = []
        for name in WORKLOAD_ORDER:
            if peer == "fastembed" and name != "corpus":
                cells.append("-")
            elif name in ours and name in p:
                cells.append(f"{ours[name]['sentences_per_s'] / p[name]['sentences_per_s']:.2f}")
            else:
                cells.append("-")
        print(f"| {peer} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument("--rounds", type=int, default=1, help="2: run again in reverse order")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--corpus-size", type=int, default=2000)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--onnx-dir", type=Path, default=DEFAULT_ONNX_DIR)
    parser.add_argument("--ours-python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    parser.add_argument(
        "--peers-python", type=Path, default=ROOT / ".bench" / "venv" / "bin" / "python"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per engine run")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="before each engine, wait up to S seconds for 10 s of idle CPUs",
    )
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args(argv)
    args.model_dir = args.model_dir.resolve()
    args.onnx_dir = args.onnx_dir.resolve()

    workloads = build_workloads(args.seed, args.quick, args.corpus_size)
    stats = token_stats(workloads, args.model_dir)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="noa-inference-bench-") as tmp:
        workloads_path = Path(tmp) / "workloads.json"
        workloads_path.write_text(json.dumps(workloads, ensure_ascii=False), encoding="utf-8")
        for r in range(args.rounds):
            order = list(args.engines) if r % 2 == 0 else list(reversed(args.engines))
            for engine in order:
                python = args.ours_python if engine == "ours" else args.peers_python
                result = run_engine(engine, python, args, workloads_path)
                result["round"] = r
                if not result.get("ok"):
                    print(f"!!! {engine}: {result.get('error')}", file=sys.stderr)
                results.append(result)

    summary = aggregate(results)
    agree = agreement(results)
    print_table(summary, stats, args.threads)
    noisy = [
        f"{r['engine']} (round {r['round'] + 1}: {r['other_cpu_per_wall']:.2f})"
        for r in results
        if (r.get("other_cpu_per_wall") or 0.0) > OTHER_CPU_LIMIT
    ]
    if noisy:
        print(
            "\nWARNING: other processes kept the CPUs busy during "
            + ", ".join(noisy)
            + " (CPUs' worth, on average); those figures are low and uneven. Run again on a "
            "quiet machine, or with --wait-idle."
        )
    if agree:
        ref = agree["reference"]
        cos = ", ".join(f"{e} {c:.6f}" for e, c in agree.items() if e != "reference")
        print(f"\nlowest cosine against {ref} on the check texts: {cos}")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = (
        args.json or RESULTS_DIR / f"inference_kernels-{stamp}{'-quick' if args.quick else ''}.json"
    )
    for result in results:
        result.pop("check_embeddings", None)
    document = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "token_stats": stats,
        "summary": summary,
        "agreement": agree,
        "runs": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
    return 0 if all(s.get("ok") for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
