"""Sampled decoding side by side: edgegen against ONNX Runtime GenAI on benchmarks/llama.py's random
124M Llama (vocabulary 32000), fp32 and int4, each engine in its own process, rounds interleaved,
2 threads each. 128 new tokens after a 128-token prompt, at batch 1 and 4, greedy and with the two
sampling settings models ship with:
- top-p 0.9 at temperature 0.6 (Llama's generation_config.json; GenAI: top_k 0, its top-p alone);
- top-k 50 and top-p 0.9 (transformers' top-k default with a nucleus).
A sampled token costs its engine the decode step plus the choice over the vocabulary: GenAI's in
C++, edgegen's in numpy (runtimes/token_sampling.py). What sampling adds per token is the TPOT
against the same engine's greedy TPOT in the same round. Random weights give flat logits, so
top-p keeps thousands of tokens: the most work a nucleus asks for.

    python benchmarks/sampled_decoding.py [--rounds 2] [--out benchmarks/results]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from llama import THREADS, command_line, interleaved_rounds, make_models

PROMPT, NEW, BATCH = 128, 128, 4
ENGINES = ("edgegen fp32", "genai fp32", "edgegen int4", "genai int4")
SETTINGS = {"greedy": {"do_sample": False},
            "top-p 0.9, temperature 0.6": {"do_sample": True, "temperature": 0.6, "top_p": 0.9},
            "top-k 50, top-p 0.9": {"do_sample": True, "temperature": 1.0, "top_k": 50, "top_p": 0.9}}


def worker(engine: str, root: Path) -> dict:
    """Per setting: batch 1's tokens/s and TPOT p50 (ms), and batch 4's tokens/s."""
    stream, generate_batch = _engine(engine, root)
    prompt = np.random.default_rng(0).integers(3, 32000, PROMPT).tolist()
    prompts = np.random.default_rng(2).integers(3, 32000, (BATCH, PROMPT)).tolist()
    for setting in SETTINGS.values():   # warm-up: each setting's path, at the full length (buffers grown)
        list(stream(prompt, NEW, setting))
        generate_batch(prompts, NEW, setting)
    results = {}
    for name, setting in SETTINGS.items():
        start = time.perf_counter()
        stamps = [time.perf_counter() for _ in stream(prompt, NEW, setting)]
        begin = time.perf_counter()
        made = generate_batch(prompts, NEW, setting)
        results[name] = {"tokens_per_s": len(stamps) / (stamps[-1] - start),
                         "tpot_p50_ms": float(np.median(np.diff(stamps))) * 1e3,
                         "batch4_tokens_per_s": made / (time.perf_counter() - begin)}
    return results


def _engine(engine: str, root: Path):
    """(stream(prompt, new, setting): yields each new token, generate_batch(prompts, new, setting):
    the count of new tokens), in one engine."""
    if engine.startswith("edgegen"):
        import edgegen

        pipe = edgegen.load(root / "edgegen", threads=THREADS, precision=engine.split()[1])
        return (lambda prompt, new, setting: pipe.stream(prompt, max_new_tokens=new, seed=0, **setting),
                lambda prompts, new, setting: sum(map(len, pipe.generate(prompts, max_new_tokens=new, seed=0, **setting))))
    import onnxruntime_genai as og

    config = og.Config(str(root / "-".join(engine.split())))
    config.clear_providers()
    model = og.Model(config)

    def generator(prompts, new, setting):
        params = og.GeneratorParams(model)
        options = {"top_k": 0, **setting} if setting.get("do_sample") else setting   # top_k 0: its top-p alone
        # min_length: every row decodes all its tokens (edgegen's count the end-of-text ids it stops at)
        params.set_search_options(max_length=len(prompts[0]) + new, min_length=len(prompts[0]) + new,
                                  batch_size=len(prompts), **options)
        made = og.Generator(model, params)
        made.append_tokens(np.array(prompts, dtype=np.int32))
        return made

    def stream(prompt, new, setting):
        made = generator([prompt], new, setting)
        while not made.is_done():
            made.generate_next_token()
            yield int(made.get_next_tokens()[0])

    def generate_batch(prompts, new, setting):
        made = generator(prompts, new, setting)
        while not made.is_done():
            made.generate_next_token()
        return new * len(prompts)
    return stream, generate_batch


def main() -> None:
    args = command_line(__doc__.splitlines()[0], worker, rounds=2)
    if args is None:
        return
    if args.int4_block_size:
        raise SystemExit("--int4-block-size: not taken here (benchmarks/llama.py runs int4 at other block sizes)")
    with tempfile.TemporaryDirectory(prefix="edgegen-sampled-") as scratch:
        make_models(Path(scratch), optimum=False)
        runs = interleaved_rounds(__file__, ENGINES, args.rounds, scratch,
                                  lambda result: {s: round(r["tokens_per_s"], 1) for s, r in result.items()})
    from edgegen.bench import machine_info, write_results

    rows = {engine: {setting: {measure: float(np.median([run[setting][measure] for run in results]))
                               for measure in ("tokens_per_s", "tpot_p50_ms", "batch4_tokens_per_s")}
                     for setting in SETTINGS} for engine, results in runs.items()}
    # what sampling adds to a token, against the same engine's greedy step in the same round
    added = {engine: {setting: float(np.median([run[setting]["tpot_p50_ms"] - run["greedy"]["tpot_p50_ms"]
                                                for run in results])) for setting in SETTINGS if setting != "greedy"}
             for engine, results in runs.items()}
    paired = {f"{precision}, {setting}": {
        measure: [ours[setting][measure] / theirs[setting][measure] for ours, theirs
                  in zip(runs[f"edgegen {precision}"], runs[f"genai {precision}"])]
        for measure in ("tokens_per_s", "batch4_tokens_per_s")} for precision in ("fp32", "int4") for setting in SETTINGS}
    lines = [f"`python benchmarks/sampled_decoding.py --rounds {args.rounds}`: a random 124M Llama (vocabulary 32000), "
             f"{THREADS} threads, prompt {PROMPT}, {NEW} new tokens; medians of {args.rounds} interleaved rounds", "",
             "| engine | setting | tokens/s | TPOT p50 ms | sampling's ms per token (over greedy) | batch 4: tokens/s |",
             "|---|---|---|---|---|---|"]
    for engine, settings in rows.items():
        for setting, r in settings.items():
            extra = f"{added[engine][setting]:.2f}" if setting in added[engine] else "-"
            lines.append(f"| {engine} | {setting} | {r['tokens_per_s']:.1f} | {r['tpot_p50_ms']:.2f} | {extra} | "
                         f"{r['batch4_tokens_per_s']:.1f} |")
    lines += ["", "edgegen over GenAI round by round (how many times faster): median (range)", "",
              "| precision, setting | tokens/s | batch 4: tokens/s |", "|---|---|---|"]
    for name, ratios in paired.items():
        lines.append(f"| {name} | " + " | ".join(f"{np.median(r):.2f}x ({min(r):.2f}x-{max(r):.2f}x)"
                                                for r in ratios.values()) + " |")
    results = {"machine": machine_info(), "rows": rows, "sampling_added_ms": added, "paired": paired}
    write_results(args.out, "sampled_decoding", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
