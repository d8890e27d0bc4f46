"""A large batch through the shipped diffusion-digits in calls of ROWS_PER_CALL rows against one
call: seconds and peak memory of guided sampling (docs/python-api.md).

Each setting runs in its own process (peak RSS is a process's), the settings interleaved over the
rounds, since this machine is shared and noisy; the table gives each round and the ratio of the
medians.

    python benchmarks/rows_per_call.py [--n 2048] [--steps 20] [--rounds 2] [--rows 256,1024,0]

--rows 0 is one call for the whole batch (the runtime before ROWS_PER_CALL).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from edgegen.bench import machine_info, write_results

ONE_CALL = 0


def measure(rows: int, n: int, steps: int) -> dict:
    """One setting, in this process: seconds for n guided samples (after a warm-up), peak RSS."""
    import resource
    import time

    import numpy as np

    import edgegen
    import edgegen.runtimes.session as session

    session.ROWS_PER_CALL = rows or 10**12
    pipe = edgegen.load("diffusion-digits", backend="ort-cpu", threads=2)
    labels = np.arange(n) % 10
    pipe.sample(min(n, 64), steps=steps, labels=labels[:64], seed=0)
    start = time.perf_counter()
    images = pipe.sample(n, steps=steps, labels=labels, seed=0)
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "mean_pixel": float(images.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2048, help="samples (guidance runs 2n rows through the UNet)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", default="256,1024,0", help="rows per call to compare; 0: the whole batch in one call")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)   # a child process's setting
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.n, args.steps)))
        return
    settings = [int(r) for r in args.rows.split(",")]
    runs: dict[int, list[dict]] = {rows: [] for rows in settings}
    for _ in range(args.rounds):
        for rows in settings:
            out = subprocess.run([sys.executable, __file__, "--one", str(rows), "--n", str(args.n), "--steps",
                                  str(args.steps)], check=True, capture_output=True, text=True).stdout
            runs[rows].append(json.loads(out.strip().splitlines()[-1]))
    base = statistics.median(r["seconds"] for r in runs[settings[-1]])
    lines = [f"{args.n} guided samples of diffusion-digits, {args.steps} steps, 2 threads, {args.rounds} rounds",
             "", "| rows per call | seconds (each round) | vs last setting | peak RSS MB | mean pixel |", "|---|---|---|---|---|"]
    for rows in settings:
        seconds = [r["seconds"] for r in runs[rows]]
        lines.append(f"| {rows or 'all (one call)'} | {', '.join(f'{s:.1f}' for s in seconds)} | "
                     f"{base / statistics.median(seconds):.2f}x | {max(r['peak_rss_mb'] for r in runs[rows]):.0f} | "
                     f"{runs[rows][0]['mean_pixel']:.6f} |")
    write_results(args.out, "rows_per_call", {"machine": machine_info(), "n": args.n, "steps": args.steps,
                                              "runs": {str(k): v for k, v in runs.items()}}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
