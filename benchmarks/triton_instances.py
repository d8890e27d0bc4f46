"""Triton model instances and ONNX Runtime threads: gpt-stdlib served through its pipeline (32
greedy tokens streamed per request over gRPC) by a real server on loopback (the nvidia-pytriton
wheel's tritonserver on CPU, from .venv-triton: docs/serving.md), under 4 concurrent clients.

Each Python-backend instance is its own process. Three repositories, rounds interleaved:
- one instance, the default threads (one per core this process may use);
- two instances, each running that whole count, passed as --threads (before an instance took its
  share, each ran ONNX Runtime's own pool of as many threads, also pinned: on 2 cores, 4 threads
  that spin between runs);
- two instances at the default now: each its share of the cores (cpus.shared_threads).

    python benchmarks/triton_instances.py [--rounds 3] [--seconds 8] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from triton_load import load, shipped_package

from edgegen.bench import write_results
from edgegen.cpus import session_threads
from edgegen.serving.local_server import local_server
from edgegen.serving.triton import RepositoryOptions, write_repository

MODEL = "gpt-stdlib"
CONCURRENCY = 4


ONE = "1 instance, default threads"
WHOLE = "2 instances, each the whole count"
SHARE = "2 instances, default threads (each its share)"


def setups() -> dict[str, RepositoryOptions]:
    return {ONE: RepositoryOptions(instances=1), WHOLE: RepositoryOptions(instances=2, threads=session_threads()),
            SHARE: RepositoryOptions(instances=2)}


def one_round(package: Path, options: RepositoryOptions, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgegen-instances-") as scratch:
        repository = Path(scratch) / "models"
        write_repository([str(package)], repository, options, report=lambda line: None)
        with local_server(repository) as server:
            load(server, MODEL, 1, 1.0)   # warm every instance's sessions before timing
            return load(server, MODEL, CONCURRENCY, seconds)


def run(rounds: int, seconds: float) -> dict:
    package = shipped_package(MODEL)
    results = {name: [] for name in setups()}
    for r in range(rounds):
        for name, options in setups().items():
            row = one_round(package, options, seconds)
            results[name].append(row)
            print(f"round {r + 1} {name:48s} {row['per_s']:6.1f} requests/s p50 {row['p50_ms']:7.1f} ms "
                  f"p99 {row['p99_ms']:7.1f} ms failed {row['failures']}", flush=True)
    return {"threads_one_session": session_threads(), "concurrency": CONCURRENCY, "rounds": results}


def table(results: dict) -> str:
    baseline = np.array([row["per_s"] for row in results["rounds"][ONE]])
    lines = [f"{MODEL}, {CONCURRENCY} concurrent clients; one session's default: {results['threads_one_session']} "
             "threads. Median (range) over the rounds; the last column divides each round's requests/s "
             "by the one instance's in the same round.", "",
             "| served as | requests/s | p50 ms | p99 ms | failed | against 1 instance |", "|---|---|---|---|---|---|"]
    for name, rows in results["rounds"].items():
        per_s = np.array([row["per_s"] for row in rows])
        ratios = per_s / baseline

        def spread(values, digits=1, suffix=""):
            return f"{np.median(values):.{digits}f}{suffix} ({min(values):.{digits}f}-{max(values):.{digits}f})"

        lines.append(f"| {name} | {spread(per_s)} | {spread([r['p50_ms'] for r in rows], 0)} | "
                     f"{spread([r['p99_ms'] for r in rows], 0)} | {sum(r['failures'] for r in rows)} | "
                     f"{spread(ratios, 2, 'x')} |")
    whole, share = (np.array([row["per_s"] for row in results["rounds"][name]]) for name in (WHOLE, SHARE))
    lines += ["", f"Two instances, each its share against each the whole count, round by round: "
                  f"{np.median(share / whole):.2f}x ({min(share / whole):.2f}x-{max(share / whole):.2f}x) the requests/s."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per repository and round")
    parser.add_argument("--out", default="benchmarks/results", help="folder for triton_instances.json and .md")
    args = parser.parse_args()
    results = run(args.rounds, args.seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_results(out, "triton_instances", results, table(results) + "\n")


if __name__ == "__main__":
    main()
