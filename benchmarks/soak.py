"""A soak run: 10,000 generate calls through the runtime across three families (the shipped VAE
and GAN sampling batches of 8, the shipped GPT continuing a prompt by 8 tokens), taking turns,
with the process's resident memory and open file descriptors read every 1,000 calls. A runtime
that leaks shows it as a climb; what is measured is the start (after 100 warm-up calls) against
the end.

    python benchmarks/soak.py [--calls 10000] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from edgegen.bench import machine_info, rss_mb, write_results
from edgegen.demo import PRETRAINED
from edgegen.export import export_checkpoint
from edgegen.runtimes import load

MODELS = ("vae-digits", "gan-digits", "gpt-stdlib")
WARMUP = 100


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        pipes = {name: load(export_checkpoint(PRETRAINED / name, Path(scratch) / name), backend="ort-cpu")
                 for name in MODELS}
        calls = {
            "vae-digits": lambda i: pipes["vae-digits"].sample(8, seed=i),
            "gan-digits": lambda i: pipes["gan-digits"].sample(8, seed=i),
            "gpt-stdlib": lambda i: pipes["gpt-stdlib"].generate("def main(", max_new_tokens=8, seed=i),
        }
        order = list(calls)
        samples, start = [], time.perf_counter()
        for i in range(args.calls + WARMUP):
            calls[order[i % len(order)]](i)
            done = i + 1 - WARMUP
            if done >= 0 and done % 1000 == 0:
                samples.append({"calls": done, "rss_mb": round(rss_mb(), 1), "open_fds": open_fds(),
                                "seconds": round(time.perf_counter() - start, 1)})
                print(samples[-1], flush=True)
    first, last = samples[0], samples[-1]
    report = {"machine": machine_info(), "models": MODELS, "calls": args.calls, "samples": samples,
              "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 1), "fd_growth": last["open_fds"] - first["open_fds"]}
    write_results(args.out, "soak", report, markdown(report))


def markdown(r: dict) -> str:
    lines = ["# Soak: generate calls through the runtime (`python benchmarks/soak.py`)", "",
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores. {r['calls']:,} calls taking turns over "
             f"{', '.join(r['models'])} (after {WARMUP} warm-up calls).", "",
             f"Resident memory {r['samples'][0]['rss_mb']} MB at the start, {r['samples'][-1]['rss_mb']} MB at the end "
             f"({r['rss_growth_mb']:+} MB); open file descriptors {r['samples'][0]['open_fds']} and "
             f"{r['samples'][-1]['open_fds']} ({r['fd_growth']:+}).", "",
             "| calls | resident MB | open fds | seconds |", "|---|---|---|---|"]
    lines += [f"| {s['calls']:,} | {s['rss_mb']} | {s['open_fds']} | {s['seconds']} |" for s in r["samples"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
