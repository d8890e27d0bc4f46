"""Prompt lookup decoding side by side in one run: edgegen's generate(prompt_lookup_num_tokens=4)
against the same engine without it, and ONNX Runtime GenAI's n-gram speculative decoding (0.18:
speculative options ngram_size 3, max_draft_tokens 4, chained lookup: its fastest settings here)
against GenAI without it, on its builder's models of the same checkpoint. Each engine in its own
process, with and without drafts alternating inside it; rounds interleaved, 2 threads each.

The model is benchmarks/llama.py's random 124M Llama, fp32 and int4. Three workloads, 128 new
tokens each, first token included:
- greedy, batch 1, a prompt of 128 random ids: the issue's setting. A random-weight model's greedy
  output soon repeats itself, which is the case drafts copied from the sequence are made for;
- sampled (top-k 50, seeded), batch 1: output that never repeats, so drafts are rarely found and
  this measures what looking for them costs;
- greedy, batch 4 (GenAI 0.18 refuses speculation at batch > 1).
Then edgegen fp32 on the shipped gpt-stdlib, a model trained on real text (Python source):
greedy continuations of 8 held-out windows of the standard library, with and without drafts,
one at a time and as one batch.

    python benchmarks/prompt_lookup.py [--rounds 3] [--out benchmarks/results]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from llama import NEW, PROMPT, THREADS, command_line, interleaved_rounds, make_models

DRAFTS = 4
BATCH = 4
TOP_K = 50
ENGINES = ("edgegen fp32", "edgegen int4", "genai fp32", "genai int4")
WORKLOADS = ("greedy", "sampled", "batch 4")


def worker(engine: str, root: Path, repeats: int = 2) -> dict:
    """Each workload without and with drafts, alternating in this one process (the same engine's
    two ways side by side), best of `repeats` each."""
    run = _edgegen(engine, root) if engine.startswith("edgegen") else _genai(engine, root)
    prompt = np.random.default_rng(0).integers(3, 32000, PROMPT).tolist()
    prompts = np.random.default_rng(2).integers(3, 32000, (BATCH, PROMPT)).tolist()
    run("greedy", [prompt[:8]], 4, False)   # warm-up
    results = {"call_ms": run.costs() if engine.startswith("edgegen") else None}
    for workload, batch in (("greedy", [prompt]), ("sampled", [prompt]), ("batch 4", prompts)):
        for _ in range(repeats):
            for drafts in (False, True):
                start = time.perf_counter()
                made = run(workload, batch, NEW, drafts)
                if made is None:
                    results[f"{workload}, drafts" if drafts else workload] = None
                    continue
                seconds = time.perf_counter() - start
                tokens, calls = made
                key = f"{workload}, drafts" if drafts else workload
                rate = sum(map(len, tokens)) / seconds
                if results.get(key) is None or rate > results[key]["tokens_per_s"]:
                    results[key] = {"tokens_per_s": rate, "tokens": tokens, "calls": calls}
    return results


def _edgegen(engine: str, root: Path):
    import edgegen

    pipe = edgegen.load(root / "edgegen", threads=THREADS, precision=engine.split()[1])
    calls = _count_calls(pipe)

    def run(workload, prompts, new, drafts):
        calls.clear()
        options = {"do_sample": True, "top_k": TOP_K, "seed": 1} if workload == "sampled" else {"do_sample": False}
        return pipe.generate(prompts, max_new_tokens=new, prompt_lookup_num_tokens=DRAFTS if drafts else 0,
                             **options), len(calls)
    run.costs = lambda: call_costs(pipe)
    return run


def call_costs(pipe, past: int = 256, widths=(1, 2, 5), repeats: int = 50) -> dict:
    """Median ms of one decoder call carrying 1, 2 or 5 tokens after `past` cached ones (a token and
    its drafts), through the pipeline's own session and cache form, bound by address as the loop binds."""
    from edgegen.families.gpt.pipeline import LOGITS_TO_KEEP

    session, b = pipe.decoder.inference_session, 1
    names = [(f"past_key_values.{i}.{kv}", f"present.{i}.{kv}") for i in range(pipe.n_layer) for kv in ("key", "value")]
    inputs = {i.name for i in session.get_inputs()}
    costs = {}
    for width in widths:
        binding, keep = session.io_binding(), []
        feeds = {"input_ids": np.full((b, width), 5, np.int64), "attention_mask": np.ones((b, past + width), np.int64),
                 "position_ids": (past + np.arange(width))[None].astype(np.int64)}
        if LOGITS_TO_KEEP in inputs:
            feeds[LOGITS_TO_KEEP] = np.array([width], np.int64)
        for name, array in feeds.items():
            keep.append(array)
            binding.bind_cpu_input(name, array)
        shape = (b, pipe.cache_heads, past + width, pipe.head_dim)
        for past_name, present_name in names:
            if pipe._in_place:   # one buffer, past and present
                buffer = np.zeros(shape, np.float32)
                binding.bind_input(past_name, "cpu", 0, np.float32, shape, buffer.ctypes.data)
                binding.bind_output(present_name, "cpu", 0, np.float32, shape, buffer.ctypes.data)
            else:
                buffer = np.zeros((b, pipe.cache_heads, past, pipe.head_dim), np.float32)
                grown = np.zeros(shape, np.float32)
                binding.bind_input(past_name, "cpu", 0, np.float32, buffer.shape, buffer.ctypes.data)
                binding.bind_output(present_name, "cpu", 0, np.float32, shape, grown.ctypes.data)
                keep.append(grown)
            keep.append(buffer)
        logits = np.empty((b, width, pipe.vocab_size), np.float32)
        binding.bind_output("logits", "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
        times = []
        for _ in range(repeats + 5):
            start = time.perf_counter()
            session.run_with_iobinding(binding)
            times.append(time.perf_counter() - start)
        costs[width] = float(np.median(times[5:])) * 1e3
    return costs


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

    def run(workload, prompts, new, speculative):
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
    # the same windows as one batch: each row keeps its own drafts, a call carries them only
    # where every row has some
    batch_seconds, batch_calls, batch_outputs = {0: [], DRAFTS: []}, {}, {}
    for _ in range(rounds):
        for drafts in (0, DRAFTS):
            calls.clear()
            start = time.perf_counter()
            batch_outputs[drafts] = pipe.generate(prompts, max_new_tokens=new, do_sample=False,
                                                  prompt_lookup_num_tokens=drafts)
            batch_seconds[drafts].append(time.perf_counter() - start)
            batch_calls[drafts] = len(calls)
    return {"windows": len(prompts), "new_tokens": tokens, "same_tokens": outputs[0] == outputs[DRAFTS],
            "tokens_per_call": {d: tokens / counted[d] for d in counted},   # the prompts' calls counted, as above
            "speedup": min(seconds[0]) / min(seconds[DRAFTS]),
            "batch": {"same_tokens": batch_outputs[0] == batch_outputs[DRAFTS] == outputs[0],
                      "tokens_per_call": {d: tokens / len(prompts) / batch_calls[d] for d in batch_calls},   # a row's
                      "speedup": min(batch_seconds[0]) / min(batch_seconds[DRAFTS])}}


def main() -> None:
    args = command_line(__doc__.splitlines()[0], worker, rounds=3)
    if args is None:
        return
    with tempfile.TemporaryDirectory(prefix="edgegen-lookup-") as scratch:
        make_models(Path(scratch), optimum=False)
        runs = interleaved_rounds(__file__, ENGINES, args.rounds, scratch,
                                  lambda result: {k: r and round(r["tokens_per_s"], 1) for k, r in result.items()
                                                  if k != "call_ms"})
    call_ms = {engine: {w: float(np.median([r["call_ms"][w] for r in results])) for w in results[0]["call_ms"]}
               for engine, results in runs.items() if results[0]["call_ms"]}
    rows = {engine: {key: _best(results, key) for key in results[0] if key != "call_ms"}
            for engine, results in runs.items()}
    for engine, results in runs.items():   # drafts against none, within each process, the median over processes
        for w in WORKLOADS:
            ratios = [r[f"{w}, drafts"]["tokens_per_s"] / r[w]["tokens_per_s"] for r in results if r[f"{w}, drafts"]]
            if ratios:
                rows[engine][f"{w}, drafts"]["ratio"] = float(np.median(ratios))
    stdlib = trained_text(args.rounds)
    report = {"drafts": DRAFTS, "rounds": args.rounds, "rows": rows, "gpt_stdlib": stdlib, "call_ms": call_ms}
    lines = [f"tokens per second, first token included (best of {args.rounds} processes x 2 runs); with drafts: "
             "the ratio to the same engine without them in the same process (the median over processes), a row's "
             "tokens per decoder call (the "
             "prompt's call counted), and whether the tokens equal those without drafts", "",
             "| engine | " + " | ".join(WORKLOADS) + " |", "|---|" + "---|" * len(WORKLOADS)]
    for engine, row in rows.items():
        drafted = f"{engine}, prompt lookup {DRAFTS}" if engine.startswith("edgegen") else \
            f"{engine}, n-gram speculation {DRAFTS}"
        lines.append(f"| {engine} | " + " | ".join(_cell(row[w], None) for w in WORKLOADS) + " |")
        lines.append(f"| {drafted} | " + " | ".join(_cell(row[f"{w}, drafts"], row[w]) for w in WORKLOADS) + " |")
    lines += ["", f"gpt-stdlib (trained on Python source), {stdlib['windows']} held-out windows of {PROMPT} tokens, "
              f"greedy to the context's end ({stdlib['new_tokens']} tokens): {stdlib['speedup']:.2f}x with "
              f"{DRAFTS} drafts, {stdlib['tokens_per_call'][DRAFTS]:.2f} tokens per decoder call, "
              f"tokens {'the same' if stdlib['same_tokens'] else 'DIFFERENT'}; the {stdlib['windows']} windows as one "
              f"batch: {stdlib['batch']['speedup']:.2f}x, {stdlib['batch']['tokens_per_call'][DRAFTS]:.2f} tokens per "
              f"decoder call per row, tokens {'the same' if stdlib['batch']['same_tokens'] else 'DIFFERENT'}", "",
              "one decoder call after 256 cached tokens, ms (median; against a call of 1 token):", ""]
    for engine, costs in call_ms.items():
        lines.append(f"- {engine}: " + ", ".join(f"{w} token{'s' * (w != '1')} {ms:.2f} ({ms / costs['1']:.2f}x)"
                                                 for w, ms in costs.items()))
    from edgegen.bench import write_results

    write_results(Path(args.out), "prompt_lookup", report, "\n".join(lines) + "\n")


def _best(results: list[dict], key: str) -> dict | None:
    done = [r[key] for r in results if r[key] is not None]
    return max(done, key=lambda r: r["tokens_per_s"]) if done else None


def _cell(result: dict | None, plain: dict | None) -> str:
    if result is None:
        return "refused"
    tokens = sum(map(len, result["tokens"]))
    cell = f"{result['tokens_per_s']:.1f}"
    if plain is not None:
        same = "same tokens" if result["tokens"] == plain["tokens"] else "tokens differ"
        per_call = tokens / len(result["tokens"]) / result["calls"]   # a row's tokens per call
        cell += f" ({result['ratio']:.2f}x, {per_call:.2f}/call, {same})"
    return cell


if __name__ == "__main__":
    main()
