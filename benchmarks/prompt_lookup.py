"""Prompt lookup decoding side by side in one run: edgegen's generate(prompt_lookup_num_tokens=4)
against the same engine without it, and against ONNX Runtime GenAI's n-gram speculative decoding
(0.18: speculative options ngram_size 3, max_draft_tokens 4, chained lookup: its fastest settings
here) on its builder's models of the same checkpoint. Each engine in its own process, rounds
interleaved, 2 threads each.

The model is benchmarks/llama.py's random 124M Llama, fp32 and int4. Three workloads, 128 new
tokens each, first token included:
- greedy, batch 1, a prompt of 128 random ids: the issue's setting. A random-weight model's greedy
  output soon repeats itself, which is the case drafts copied from the sequence are made for;
- sampled (top-k 50, seeded), batch 1: output that never repeats, so drafts are rarely found and
  this measures what looking for them costs;
- greedy, batch 4 (GenAI 0.18 refuses speculation at batch > 1).
Then edgegen fp32 on the shipped gpt-stdlib, a model trained on real text (Python source):
greedy continuations of 8 held-out windows of the standard library, with and without drafts.

    python benchmarks/prompt_lookup.py [--rounds 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from llama import NEW, PROMPT, THREADS, make_models

DRAFTS = 4
BATCH = 4
TOP_K = 50
ENGINES = ("edgegen fp32", "edgegen fp32 lookup", "edgegen int4", "edgegen int4 lookup",
           "genai fp32", "genai fp32 ngram", "genai int4", "genai int4 ngram")
WORKLOADS = ("greedy", "sampled", "batch 4")


def worker(engine: str, root: Path) -> dict:
    run = _edgegen(engine, root) if engine.startswith("edgegen") else _genai(engine, root)
    prompt = np.random.default_rng(0).integers(3, 32000, PROMPT).tolist()
    prompts = np.random.default_rng(2).integers(3, 32000, (BATCH, PROMPT)).tolist()
    run("greedy", [prompt[:8]], 4)   # warm-up
    results = {}
    for workload, batch in (("greedy", [prompt]), ("sampled", [prompt]), ("batch 4", prompts)):
        start = time.perf_counter()
        made = run(workload, batch, NEW)
        if made is None:
            results[workload] = None
            continue
        seconds = time.perf_counter() - start
        tokens, calls = made
        results[workload] = {"tokens_per_s": sum(map(len, tokens)) / seconds, "tokens": tokens, "calls": calls}
    return results


def _edgegen(engine: str, root: Path):
    import edgegen

    pipe = edgegen.load(root / "edgegen", threads=THREADS, precision=engine.split()[1])
    drafts = DRAFTS if engine.endswith("lookup") else 0
    calls = _count_calls(pipe)

    def run(workload, prompts, new):
        calls.clear()
        options = {"top_k": TOP_K, "seed": 1} if workload == "sampled" else {"do_sample": False}
        return pipe.generate(prompts, max_new_tokens=new, prompt_lookup_num_tokens=drafts, **options), len(calls)
    return run


def _count_calls(pipe) -> list:
    """A list that grows by one per decoder call of the pipeline's generation loop."""
    calls, real_binding = [], pipe._binding

    def binding():
        bound = real_binding()
        run = bound.run
        bound.run = lambda: (calls.append(1), run())[1]
        return bound
    pipe._binding = binding
    return calls


def _genai(engine: str, root: Path):
    import onnxruntime_genai as og

    config = og.Config(str(root / f"genai-{engine.split()[1]}"))
    config.clear_providers()
    model = og.Model(config)
    speculative = engine.endswith("ngram")

    def run(workload, prompts, new):
        if speculative and len(prompts) > 1:
            return None   # "Speculative decoding does not support batch_size > 1 in this release"
        params = og.GeneratorParams(model)
        sampling = {"do_sample": True, "top_k": TOP_K, "random_seed": 1} if workload == "sampled" else {"do_sample": False}
        params.set_search_options(max_length=len(prompts[0]) + new, batch_size=len(prompts), **sampling)
        if speculative:
            params.set_speculative_options(ngram_size=3, max_draft_tokens=DRAFTS, ngram_chained_lookup=True)
        generator = og.Generator(model, params)
        generator.append_tokens(np.array(prompts, dtype=np.int32))
        steps = 0
        while not generator.is_done():
            generator.generate_next_token()
            steps += 1
        if speculative:   # its verifying and re-anchoring passes, steps without drafts, and the prompt's
            stats = generator.get_speculative_stats()
            calls = int(stats["target_forward_passes"] + stats["standard_fallback_steps"]) + 1
        else:
            calls = steps
        return [list(map(int, generator.get_sequence(i)))[len(prompts[0]):] for i in range(len(prompts))], calls
    return run


def trained_text(rounds: int) -> dict:
    """edgegen fp32 on gpt-stdlib: greedy continuations of held-out standard-library windows."""
    import edgegen
    from edgegen.training.text import read_corpus

    pipe = edgegen.load("gpt-stdlib", threads=THREADS)
    calls = _count_calls(pipe)
    text = read_corpus("stdlib")[1][:1 << 20].decode("utf-8", errors="replace")
    ids = pipe.tokenizer.encode(text)
    starts = np.random.default_rng(3).integers(0, len(ids) - PROMPT, 8)
    prompts = [ids[s:s + PROMPT] for s in starts]
    new = pipe.context - PROMPT
    seconds, counted, outputs = {0: [], DRAFTS: []}, {}, {}
    for _ in range(rounds):
        for drafts in (0, DRAFTS):
            calls.clear()
            start = time.perf_counter()
            outputs[drafts] = [pipe.generate(p, max_new_tokens=new, do_sample=False, prompt_lookup_num_tokens=drafts)
                               for p in prompts]
            seconds[drafts].append(time.perf_counter() - start)
            counted[drafts] = len(calls)
    tokens = sum(map(len, outputs[0]))
    return {"windows": len(prompts), "new_tokens": tokens, "same_tokens": outputs[0] == outputs[DRAFTS],
            "tokens_per_call": {d: tokens / (counted[d] - len(prompts)) for d in counted},   # decoding calls
            "speedup": min(seconds[0]) / min(seconds[DRAFTS])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.root))))
        return
    with tempfile.TemporaryDirectory(prefix="edgegen-lookup-") as scratch:
        make_models(Path(scratch), optimum=False)
        runs = {engine: [] for engine in ENGINES}
        for _ in range(args.rounds):
            for engine in ENGINES:
                out = subprocess.run([sys.executable, __file__, "--worker", engine, "--root", scratch],
                                     check=True, capture_output=True, text=True).stdout
                runs[engine].append(json.loads(out.strip().splitlines()[-1]))
                print(engine, {w: r and round(r["tokens_per_s"], 1) for w, r in runs[engine][-1].items()}, flush=True)
    rows = {engine: {w: _best(results, w) for w in WORKLOADS} for engine, results in runs.items()}
    stdlib = trained_text(args.rounds)
    report = {"drafts": DRAFTS, "rounds": args.rounds, "rows": rows, "gpt_stdlib": stdlib}
    lines = [f"tokens per second, first token included (best of {args.rounds} rounds); in brackets: against the same "
             "engine without drafts; a row's tokens per decoder call (the prompt's call counted); whether the tokens equal "
             "those without drafts", "",
             "| engine | " + " | ".join(WORKLOADS) + " |", "|---|" + "---|" * len(WORKLOADS)]
    for engine, row in rows.items():
        plain = rows[engine.rsplit(" ", 1)[0]] if engine.endswith(("lookup", "ngram")) else None
        lines.append(f"| {engine} | " + " | ".join(_cell(row[w], plain and plain[w]) for w in WORKLOADS) + " |")
    lines += ["", f"gpt-stdlib (trained on Python source), {stdlib['windows']} held-out windows of {PROMPT} tokens, "
              f"greedy to the context's end ({stdlib['new_tokens']} tokens): {stdlib['speedup']:.2f}x with "
              f"{DRAFTS} drafts, {stdlib['tokens_per_call'][DRAFTS]:.2f} tokens per decoding call, "
              f"tokens {'the same' if stdlib['same_tokens'] else 'DIFFERENT'}"]
    from edgegen.bench import write_results

    write_results(Path(args.out), "prompt_lookup", report, "\n".join(lines) + "\n")


def _best(results: list[dict], workload: str) -> dict | None:
    done = [r[workload] for r in results if r[workload] is not None]
    return max(done, key=lambda r: r["tokens_per_s"]) if done else None


def _cell(result: dict | None, plain: dict | None) -> str:
    if result is None:
        return "refused"
    tokens = sum(map(len, result["tokens"]))
    cell = f"{result['tokens_per_s']:.1f}"
    if plain is not None:
        same = "same tokens" if result["tokens"] == plain["tokens"] else "tokens differ"
        per_call = tokens / len(result["tokens"]) / result["calls"]   # a row's tokens per call
        cell += f" ({result['tokens_per_s'] / plain['tokens_per_s']:.2f}x, {per_call:.2f}/call, {same})"
    return cell


if __name__ == "__main__":
    main()
