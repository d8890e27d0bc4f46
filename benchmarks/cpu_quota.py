"""Decoding in a container's CPU quota: ONNX Runtime's default thread pool against edgegen's
default (edgegen/cpus.py), on benchmarks/llama.py's random 124M Llama, int4, batch 1.

`docker run --cpus=N` and Kubernetes CPU limits are a cgroup CPU quota: N CPUs' worth of time
per 100 ms period. ONNX Runtime sizes its default pool by the host's physical cores, which a
quota does not change, so its threads use the period's time up early and then wait, all of
them, for the next period. edgegen's default is one thread per core the quota allows.

The script makes a cgroup with the quota (needs root and a writable cgroup cpu controller: v1
at /sys/fs/cgroup/cpu, or v2 with the cpu controller enabled at the root), and runs each
engine in its own process inside it, rounds interleaved; then edgegen's default outside it, for
reference. Each process decodes 128 tokens after a 128-token prompt, greedy, three times; the
table has the median of the rounds: tokens per second over the whole generation, time per
output token p50 and p90, and how many periods the cgroup throttled during the run.

    python benchmarks/cpu_quota.py [--cpus 1] [--rounds 3] [--out benchmarks/results]   # as root
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from llama import int4_package

from edgegen.bench import cores_text, machine_info, write_results

PERIOD_US = 100_000
MIN_QUOTA_US = 1_000   # the least quota the kernel takes
PROMPT, NEW, REPEATS = 128, 128, 3
POOLS = {"ONNX Runtime's default pool": "ort", "edgegen's default": "edgegen"}


def quota_cgroup(cpus: float) -> tuple[Path, Path]:
    """A new cgroup allowed `cpus` CPUs of time per period: (its folder, the file a process joins by)."""
    name, quota = f"edgegen-quota-{os.getpid()}", int(cpus * PERIOD_US)
    if quota < MIN_QUOTA_US:
        sys.exit(f"cpu_quota: expected --cpus of at least {MIN_QUOTA_US / PERIOD_US:g} (the kernel's least quota), "
                 f"found {cpus:g}")
    v1, v2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
    folder = None
    try:
        if (v1 / "cpu.cfs_quota_us").exists():
            folder = v1 / name
            folder.mkdir()
            (folder / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (folder / "cpu.cfs_quota_us").write_text(str(quota))
            return folder, folder / "tasks"
        if "cpu" in (v2 / "cgroup.subtree_control").read_text().split():
            folder = v2 / name
            folder.mkdir()
            (folder / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            return folder, folder / "cgroup.procs"
    except OSError as exc:
        if folder is not None and folder.is_dir():
            folder.rmdir()   # made, but its quota refused: not left behind
        sys.exit(f"cpu_quota: expected to make a cgroup with a CPU quota (root, a writable cgroup file system), "
                 f"found: {exc}")
    sys.exit("cpu_quota: expected a cgroup cpu controller (v1 at /sys/fs/cgroup/cpu, or v2 with cpu in the "
             "root's cgroup.subtree_control), found neither")


def throttled(folder: Path) -> int:
    stat = dict(line.split() for line in (folder / "cpu.stat").read_text().splitlines())
    return int(stat["nr_throttled"])


def run_worker(package: Path, pool: str, join: Path | None) -> dict:
    command = [sys.executable, __file__, "--worker", pool, str(package)]
    if join is not None:   # the shell joins the cgroup, then becomes the worker (exec keeps its pid)
        command = ["sh", "-c", f'echo $$ > "{join}" && exec "$@"', "sh", *command]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def worker(pool: str, package: str) -> None:
    from edgegen.runtimes import load, ort

    if pool == "ort":   # no thread count: ONNX Runtime sizes its pool itself
        ort.default_threads = lambda: None
    llm = load(package, precision="int4")
    prompt = np.random.default_rng(0).integers(3, 32000, PROMPT).tolist()
    llm.generate(prompt[:8], max_new_tokens=4, do_sample=False)   # warm-up
    rates, gaps = [], []
    for _ in range(REPEATS):
        start = time.perf_counter()
        stamps = [time.perf_counter() for _ in llm.stream(prompt, max_new_tokens=NEW, do_sample=False)]
        rates.append(NEW / (stamps[-1] - start))
        gaps.extend(np.diff(stamps) * 1e3)
    print(json.dumps({"threads": None if pool == "ort" else llm.decoder.threads, "tokens_per_s": float(np.median(rates)),
                      "tpot_p50_ms": float(np.percentile(gaps, 50)), "tpot_p90_ms": float(np.percentile(gaps, 90))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", type=float, default=1.0, help="the quota, in CPUs (docker run --cpus)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(*args.worker)
    folder, join = quota_cgroup(args.cpus)
    try:
        with tempfile.TemporaryDirectory(prefix="edgegen-cpu-quota-") as scratch:
            package = int4_package(Path(scratch))
            runs = {name: [] for name in (*POOLS, "edgegen's default, no quota")}
            for _ in range(args.rounds):
                for name, pool in POOLS.items():
                    before = throttled(folder)
                    runs[name].append({**run_worker(package, pool, join), "throttled": throttled(folder) - before})
                runs["edgegen's default, no quota"].append({**run_worker(package, "edgegen", None), "throttled": None})
    finally:
        try:
            folder.rmdir()
        except OSError as exc:   # not over an error of the run's own
            print(f"cpu_quota: could not remove the cgroup {folder}: {exc}", file=sys.stderr)
    rows = [{"pool": name, "threads": results[0]["threads"],
             **{key: float(np.median([r[key] for r in results])) for key in ("tokens_per_s", "tpot_p50_ms", "tpot_p90_ms")},
             "throttled": None if results[0]["throttled"] is None else int(np.median([r["throttled"] for r in results]))}
            for name, results in runs.items()]
    machine = machine_info()
    lines = [f"`python benchmarks/cpu_quota.py --cpus {args.cpus:g}`: a random 124M Llama, int4, greedy, prompt {PROMPT}, "
             f"{NEW} new tokens, in a cgroup with a CPU quota of {args.cpus:g} on {machine['cpu']} ({cores_text(machine)}); "
             f"median of {args.rounds} interleaved rounds (periods throttled: while the process loaded, warmed up "
             f"and decoded)", "",
             "| threads | pool | tokens/s | TPOT p50 ms | TPOT p90 ms | periods throttled |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['threads'] or 'ONNX Runtime default'} | {r['pool']} | {r['tokens_per_s']:.1f} | {r['tpot_p50_ms']:.2f} | "
              f"{r['tpot_p90_ms']:.2f} | {'-' if r['throttled'] is None else r['throttled']} |" for r in rows]
    write_results(args.out, "cpu_quota", {"machine": machine, "cpus": args.cpus, "rounds": args.rounds, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
