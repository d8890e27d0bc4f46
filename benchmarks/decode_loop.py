"""What edgegen's Python generation loop costs per token, beside the decode call itself, on
benchmarks/llama.py's random 124M Llama, int4 (KV cache in place), 2 threads, one process,
rounds interleaved.

ONNX Runtime GenAI's loop is C++; edgegen's is Python and numpy around one ONNX Runtime run per
token (families/gpt/pipeline.py). The run times, for greedy decoding of 128 tokens after a
128-token prompt:
- the pipeline: each decode run (OrtBinding.run), and the time from the end of one run to the
  start of the next, which is all the loop's own work per token (choosing the token, the
  bookkeeping of rows, stop ids and the cache, the bindings);
- the least a Python loop can do on the same session and buffers: take the argmax, write the
  token and its position, bind the mask, run. Its time between runs is the floor of a loop in
  Python here;
- the pipeline again with its decode runs stubbed out: the same loop's work without the runs.
A decode run streams every weight through the caches, so the loop's code and data are read back
from memory after each one: its time between runs is several times what the same work takes in
a loop without the runs.

    python benchmarks/decode_loop.py [--rounds 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from llama import int4_package

from edgegen.bench import machine_info, write_results
from edgegen.runtimes.ort import OrtBinding

THREADS, PROMPT, NEW = 2, 128, 128


def pipeline_times(llm, prompt: list[int], stubbed: bool = False) -> dict:
    """Each decode run's time and the time between runs, in the pipeline's own loop (µs, p50).
    stubbed: the decode runs do nothing (the prefill runs), so the loop's work is timed with its
    code and data left in the caches (the tokens repeat the prefill's logits)."""
    marks, run = [], OrtBinding.run

    def timed(self):
        marks.append(time.perf_counter_ns())
        if not (stubbed and marks[2:]):
            run(self)
        marks.append(time.perf_counter_ns())

    with mock.patch.object(OrtBinding, "run", timed):
        tokens = list(llm.stream(prompt, max_new_tokens=NEW, do_sample=False))
    starts, ends = np.array(marks[2::2]), np.array(marks[3::2])   # the decode runs, after the prefill's
    return {"run_us": float(np.median(ends - starts)) / 1e3,
            "between_us": float(np.median(starts[1:] - ends[:-1])) / 1e3, "tokens": tokens}


def least_loop_times(llm, prompt_tokens: int) -> dict:
    """The least loop on the same session: argmax, token, position, mask, run (µs, p50). The cache
    buffers start empty; decoding reads them whole either way."""
    assert llm._in_place, "the int4 variant in the in-place form"
    binding = OrtBinding(llm.decoder)
    capacity = prompt_tokens + NEW
    buffers = []
    for past_name, present_name in llm._cache_names:   # in place: one buffer is both past and present
        buffer = np.zeros((1, llm.cache_heads, capacity, llm.head_dim), np.float32)
        binding.input(past_name, buffer)
        binding.output(present_name, buffer)
        buffers.append(buffer)
    ids, position = np.zeros((1, 1), np.int64), np.zeros((1, 1), np.int64)
    ones, logits = np.ones(capacity, np.int64), np.empty((1, 1, llm.vocab_size), np.float32)
    binding.input("input_ids", ids)
    binding.input("position_ids", position)
    binding.output("logits", logits)
    if llm._last_logits_only:   # the graph's overridable logits_to_keep: one position, as the pipeline binds it
        binding.input("logits_to_keep", np.ones(1, np.int64))
    starts, ends = [], []
    for t in range(prompt_tokens, capacity):
        position[0, 0] = t
        binding.bind_input("attention_mask", ones.dtype, [1, t + 1], ones.ctypes.data)
        starts.append(time.perf_counter_ns())
        binding.run()
        ends.append(time.perf_counter_ns())
        ids[0, 0] = logits[0, 0].argmax()
    starts, ends = np.array(starts), np.array(ends)
    return {"run_us": float(np.median(ends - starts)) / 1e3,
            "between_us": float(np.median(starts[1:] - ends[:-1])) / 1e3}


def main() -> None:
    from edgegen.runtimes import load

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    prompt = np.random.default_rng(0).integers(3, 32000, PROMPT).tolist()
    with tempfile.TemporaryDirectory(prefix="edgegen-decode-loop-") as scratch:
        llm = load(int4_package(Path(scratch)), precision="int4", threads=THREADS)
        llm.generate(prompt, max_new_tokens=8, do_sample=False)   # warm-up
        runs = {"pipeline": [], "least loop": [], "pipeline, decode runs stubbed out": []}
        for _ in range(args.rounds):
            runs["pipeline"].append(pipeline_times(llm, prompt))
            runs["least loop"].append(least_loop_times(llm, PROMPT))
            runs["pipeline, decode runs stubbed out"].append(pipeline_times(llm, prompt, stubbed=True))
    rows = {loop: {key: float(np.median([r[key] for r in results])) for key in ("run_us", "between_us")}
            for loop, results in runs.items()}
    pipe = rows["pipeline"]
    lines = [f"`python benchmarks/decode_loop.py`: a random 124M Llama, int4, KV cache in place, {THREADS} threads, "
             f"greedy, prompt {PROMPT}, {NEW} new tokens; per token, p50, median of {args.rounds} interleaved rounds", "",
             "| loop | decode run µs | between runs µs | between runs / (run + between) |", "|---|---|---|---|"]
    for loop, r in rows.items():
        stubbed = "stubbed" in loop   # its runs do nothing: only the time between them means anything
        run = "-" if stubbed else f"{r['run_us']:.0f}"
        share = "-" if stubbed else f"{r['between_us'] / (r['run_us'] + r['between_us']):.1%}"
        lines.append(f"| {loop} | {run} | {r['between_us']:.0f} | {share} |")
    beyond = pipe["between_us"] - rows["least loop"]["between_us"]
    lines += ["", f"The pipeline's loop beyond the least loop: {beyond:.0f} µs per token, "
              f"{beyond / (pipe['run_us'] + pipe['between_us']):.1%} of its time per token."]
    write_results(args.out, "decode_loop", {"machine": machine_info(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
