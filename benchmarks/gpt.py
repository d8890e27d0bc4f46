"""The GPT issue's numbers, side by side in one run, on the issue's reference model: a random
GPT-2 (vocab 512, 4 layers, 256 wide, 4 heads), prompt 32 tokens, 128 new tokens, greedy,
batch 1, 2 threads, three engines interleaved round by round:

- edgegen: the model imported with `export gpt2 --from-transformers`, ONNX Runtime CPU;
- transformers: `GPT2LMHeadModel.generate` in PyTorch eager;
- optimum: `ORTModelForCausalLM` (optimum-onnx's ONNX Runtime export), in its own virtual
  environment because optimum-onnx pins an older transformers; created on first use at
  benchmarks/.venv-optimum (pip install optimum-onnx[onnxruntime]) unless --optimum-python
  names an interpreter that has it.

Tokens per second over the whole generate call, time to first token and time per output
token (p50, p90, from per-token timestamps), and whether the three produced the same tokens.
Then the KV-cache loop against re-running the whole sequence for every token at 512 total
tokens (32 + 480), both through edgegen's runtime.

    python benchmarks/gpt.py [--rounds 5] [--optimum-python PATH] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from optimum_env import optimum_python

PROMPT, NEW, THREADS = 32, 128, 2
REFERENCE = dict(vocab_size=512, n_layer=4, n_embd=256, n_head=4, n_positions=1024)

# Runs inside the optimum environment: one generate per "run" line on stdin, timings out.
OPTIMUM_WORKER = r"""
import json, sys, time
import numpy as np, onnxruntime, torch
from optimum.onnxruntime import ORTModelForCausalLM
from transformers.generation.streamers import BaseStreamer
folder, threads, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = threads
model = ORTModelForCausalLM.from_pretrained(folder, export=True, session_options=options, provider="CPUExecutionProvider")
class Stamps(BaseStreamer):
    def __init__(self): self.times = []
    def put(self, value): self.times.append(time.perf_counter())
    def end(self): pass
from importlib.metadata import version
print(json.dumps({"ready": True, "optimum_onnx": version("optimum-onnx"), "transformers": version("transformers")}), flush=True)
for line in sys.stdin:
    ids = torch.tensor([json.loads(line)])
    stamps = Stamps()
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False, streamer=stamps, pad_token_id=0)
    end = time.perf_counter()
    print(json.dumps({"seconds": end - start, "stamps": [t - start for t in stamps.times[1:]],
                      "tokens": out[0, ids.shape[1]:].tolist()}), flush=True)
"""


class Optimum:
    def __init__(self, python: str, folder: Path):
        self.process = subprocess.Popen([python, "-c", OPTIMUM_WORKER, str(folder), str(THREADS), str(NEW)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
        ready = json.loads(self.process.stdout.readline())
        self.version, self.transformers_version = ready["optimum_onnx"], ready["transformers"]

    def __call__(self, prompt: list[int]) -> dict:
        self.process.stdin.write(json.dumps(prompt) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def edgegen_runner(pipe):
    def run(prompt):
        stamps, start = [], time.perf_counter()
        tokens = []
        for token in pipe.stream(prompt, max_new_tokens=NEW, do_sample=False):
            stamps.append(time.perf_counter() - start)
            tokens.append(token)
        return {"seconds": time.perf_counter() - start, "stamps": stamps, "tokens": tokens}
    return run


def transformers_runner(model):
    import torch
    from transformers.generation.streamers import BaseStreamer

    class Stamps(BaseStreamer):
        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    def run(prompt):
        ids = torch.tensor([prompt])
        stamps, start = Stamps(), time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW, min_new_tokens=NEW,
                                 do_sample=False, streamer=stamps, pad_token_id=0)
        end = time.perf_counter()
        return {"seconds": end - start, "stamps": [t - start for t in stamps.times[1:]], "tokens": out[0, len(prompt):].tolist()}
    return run


def summarize(runs: list[dict]) -> dict:
    seconds = np.array([r["seconds"] for r in runs])
    first = np.array([r["stamps"][0] for r in runs])
    gaps = np.concatenate([np.diff(r["stamps"]) for r in runs])
    return {"tokens_per_s": NEW / float(np.median(seconds)), "generate_s_p50": float(np.median(seconds)),
            "ttft_ms_p50": float(np.median(first) * 1e3), "ttft_ms_p90": float(np.percentile(first, 90) * 1e3),
            "tpot_ms_p50": float(np.median(gaps) * 1e3), "tpot_ms_p90": float(np.percentile(gaps, 90) * 1e3),
            "runs": len(runs)}


def cache_versus_recompute(pipe, prompt: list[int], rounds: int) -> dict:
    """Both loops through the same graph, 32 + 480 = 512 tokens, alternating."""
    new = 512 - PROMPT
    times = {"kv_cache": [], "recompute": []}
    tokens = {}
    for _ in range(rounds):
        for name, use_cache in (("kv_cache", True), ("recompute", False)):
            start = time.perf_counter()
            tokens[name] = pipe.generate(prompt, max_new_tokens=new, do_sample=False, use_cache=use_cache)
            times[name].append(time.perf_counter() - start)
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    return {"total_tokens": 512, "new_tokens": new, "seconds_p50": p50,
            "tokens_per_s": {k: new / v for k, v in p50.items()},
            "speedup": p50["recompute"] / p50["kv_cache"], "same_tokens": tokens["kv_cache"] == tokens["recompute"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each engine generates 3 times per round")
    parser.add_argument("--optimum-python", default=None, help="a Python that has optimum-onnx installed")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    import torch
    import transformers

    import edgegen
    from edgegen.bench import machine_info, write_results
    from edgegen.export import export_transformers

    torch.set_num_threads(THREADS)
    scratch = Path(tempfile.mkdtemp(prefix="edgegen-gpt-bench-"))
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**REFERENCE)).eval()
    model.save_pretrained(scratch / "gpt2")
    export_transformers("gpt2", scratch / "gpt2", scratch / "pkg")
    pipe = edgegen.load(scratch / "pkg", backend="ort-cpu", threads=THREADS)
    optimum = Optimum(optimum_python(args.optimum_python), scratch / "gpt2")
    engines = {"edgegen": edgegen_runner(pipe), "optimum (ORTModelForCausalLM)": optimum,
               "transformers (PyTorch eager)": transformers_runner(model)}
    prompt = np.random.default_rng(0).integers(0, REFERENCE["vocab_size"], PROMPT).tolist()
    runs = {name: [] for name in engines}
    for engine in engines.values():
        engine(prompt)  # warm-up: sessions, allocators, first-call compilation
    for _ in range(args.rounds):
        for name, engine in engines.items():
            runs[name] += [engine(prompt) for _ in range(3)]
    optimum.close()
    results = {name: summarize(r) for name, r in runs.items()}
    reference_tokens = runs["transformers (PyTorch eager)"][0]["tokens"]
    for name, r in runs.items():
        results[name]["same_tokens_as_transformers"] = r[0]["tokens"] == reference_tokens
    base = results["optimum (ORTModelForCausalLM)"]["tokens_per_s"]
    for r in results.values():
        r["vs_optimum"] = r["tokens_per_s"] / base
    recompute = cache_versus_recompute(pipe, prompt, rounds=2)
    import onnx

    decoder_nodes = len(onnx.load(str(scratch / "pkg" / "decoder.onnx")).graph.node)
    report = {"benchmark": "gpt", "reference_model": REFERENCE, "decoder_nodes": decoder_nodes, "prompt_tokens": PROMPT, "new_tokens": NEW,
              "threads": THREADS, "rounds": args.rounds, "results": results, "kv_cache_vs_recompute": recompute,
              "versions": {"transformers": transformers.__version__, "optimum_onnx": optimum.version,
                           "transformers_in_optimum_env": optimum.transformers_version,
                           "onnxruntime": __import__("onnxruntime").__version__, "torch": torch.__version__},
              "machine": machine_info()}
    lines = [f"GPT-2 reference (vocab 512, 4 layers, 256 wide, 4 heads), prompt {PROMPT}, {NEW} new tokens, greedy, "
             f"batch 1, {THREADS} threads, {args.rounds} rounds x 3 generations per engine, interleaved",
             "", "| engine | tokens/s | vs optimum | TTFT p50 ms | TTFT p90 ms | TPOT p50 ms | TPOT p90 ms | same tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['tokens_per_s']:.0f} | {r['vs_optimum']:.2f}x | {r['ttft_ms_p50']:.2f} | "
                     f"{r['ttft_ms_p90']:.2f} | {r['tpot_ms_p50']:.3f} | {r['tpot_ms_p90']:.3f} | "
                     f"{'yes' if r['same_tokens_as_transformers'] else 'NO'} |")
    lines += ["", f"edgegen's decoder graph: {decoder_nodes} nodes (opset 23). Versions: transformers "
              f"{transformers.__version__} here, {optimum.transformers_version} with optimum-onnx {optimum.version}."]
    lines += ["", f"KV cache vs re-running the sequence per token, {PROMPT} + {recompute['new_tokens']} = 512 tokens: "
              f"{recompute['tokens_per_s']['kv_cache']:.0f} vs {recompute['tokens_per_s']['recompute']:.0f} tokens/s, "
              f"**{recompute['speedup']:.1f}x** (same tokens: {'yes' if recompute['same_tokens'] else 'NO'})", ""]
    write_results(args.out, "gpt", report, "\n".join(lines))


if __name__ == "__main__":
    main()
