"""Choosing a sampled token, alone: edgegen's next_tokens (runtimes/token_sampling.py) against the
same function at an earlier commit (by default c4ce91f, the last whose top-p sorted the whole
vocabulary and whose draw summed all of it), loaded from git into this process, the two timed in
turn on the same logits, three times: microseconds per call (the least of the three medians of 7
repeats, each the mean of many calls), for vocabularies of 256 (gpt-stdlib), 32000 (Llama), 50257 (GPT-2) and 151936 (Qwen2), at
batch 1 and 4, with the settings people use. Logits are N(0, 3): flat enough that top-p 0.9 keeps
thousands of tokens at the large vocabularies.

    python benchmarks/token_sampling.py [--against REV] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import timeit
import types
from pathlib import Path

import numpy as np

from edgegen.bench import machine_info, write_results
from edgegen.runtimes import token_sampling

VOCABULARIES = (256, 32000, 50257, 151936)
SETTINGS = {"temperature 0.8": {"temperature": 0.8}, "top-k 50": {"top_k": 50}, "top-p 0.9": {"top_p": 0.9},
            "top-p 0.9, temperature 0.6": {"top_p": 0.9, "temperature": 0.6},
            "top-k 50, top-p 0.9": {"top_k": 50, "top_p": 0.9},
            "top-k 50, top-p 0.9, repetition penalty 1.2": {"top_k": 50, "top_p": 0.9, "repetition_penalty": 1.2}}


def module_at(revision: str) -> types.ModuleType:
    """runtimes/token_sampling.py as it was at `revision`, as a module of its own (its relative
    imports made absolute: errors and the checks it takes are today's)."""
    shown = subprocess.run(["git", "show", f"{revision}:edgegen/runtimes/token_sampling.py"],
                           capture_output=True, text=True, cwd=Path(__file__).resolve().parent)
    if shown.returncode:   # a shallow clone lacks it
        raise SystemExit(f"--against {revision}: expected a commit this clone has, found git's "
                         f"{shown.stderr.strip()!r} (git fetch --unshallow, or name another)")
    source = shown.stdout
    source = source.replace("from ..errors import", "from edgegen.errors import").replace(
        "from .pipeline import", "from edgegen.runtimes.pipeline import")
    module = types.ModuleType(f"token_sampling_{revision}")
    sys.modules[module.__name__] = module   # where dataclasses look its annotations up
    exec(compile(source, f"{revision}:token_sampling.py", "exec"), module.__dict__)
    return module


def per_call_us(call, calls: int) -> float:
    call()   # the first call of a path pays for numpy's first use of its functions
    return float(np.median(timeit.repeat(call, number=calls, repeat=7))) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="c4ce91f")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    earlier = module_at(args.against)
    rng = np.random.default_rng(0)
    rows = []
    for vocab in VOCABULARIES:
        for batch in (1, 4):
            logits = (rng.standard_normal((batch, vocab)) * 3).astype(np.float32)
            seen = np.zeros((batch, vocab), bool)
            seen[:, rng.integers(0, vocab, 300)] = True
            uniforms = rng.random(batch)
            calls = 400 if vocab <= 256 else 20
            for name, options in SETTINGS.items():
                times = {"now": float("inf"), "earlier": float("inf")}
                for _ in range(3):   # in turn, the least of three: this shared machine's load comes and goes
                    for label, module in (("now", token_sampling), ("earlier", earlier)):
                        sampling = module.Sampling(**options)
                        times[label] = min(times[label], per_call_us(
                            lambda: module.next_tokens(logits, seen, sampling, None, uniforms), calls))
                rows.append({"vocabulary": vocab, "batch": batch, "setting": name, "now_us": times["now"],
                             "earlier_us": times["earlier"], "faster": times["earlier"] / times["now"]})
                print(rows[-1], flush=True)
    lines = [f"`python benchmarks/token_sampling.py --against {args.against}`: microseconds per next_tokens call, "
             "the least of 3 medians of 7 repeats, the two in turn, logits N(0, 3), one process", "",
             f"| vocabulary | batch | setting | now µs | at {args.against} µs | how many times faster |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['vocabulary']} | {r['batch']} | {r['setting']} | {r['now_us']:.1f} | {r['earlier_us']:.1f} | "
              f"{r['faster']:.2f}x |" for r in rows]
    write_results(args.out, "token_sampling", {"machine": machine_info(), "against": args.against, "rows": rows},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
