"""A Llama-family decoder at the size people deploy, side by side in one run: edgegen's fp32 and
int4 packages of an imported random 124M Llama against ONNX Runtime GenAI's own builder's fp32
and int4 models of the same checkpoint, optimum-onnx's fp32 export, and transformers eager, each
engine in its own process, rounds interleaved, 2 threads each, against the memory-bandwidth bound
measured in the same run: the bytes a decode step must read (each graph's weights less the tables
it looks rows up in, an untied embedding and rotary caches, plus the KV cache at the mean length
decoded; as `edgegen bench` counts them) over the best read bandwidth measured before and after
each round.

The model: LlamaForCausalLM, 12 layers x 768, 12 heads over 4 key/value heads, SwiGLU 2048,
vocab 32000, untied output (125M parameters), random weights, a stand-in word-level tokenizer
(GenAI's builder copies one). optimum-onnx's ORTModelForCausalLM runs in its own environment
(benchmarks/optimum_env.py). Prompt 128 random ids, 128 new tokens, greedy, batch 1; then the
time to the first token of a 1,024-token prompt (each engine's own way: edgegen's pipeline
prefills 256 tokens per call, computing only the last position's logits); then 4 prompts of 128
at once, tokens per second over the whole generation.

With --int4-block-size N, both engines' int4 are also made at blocks of N weights per scale (edgegen
`optimize --block-size N`, GenAI's builder `--extra_options block_size=N`) and run beside the
default block 32's, as "edgegen int4 bN" and "genai int4 bN" (results in llama_int4_bN).

Random weights have flat logits, so int4 changes many argmaxes: edgegen's int4 variant is written
here with its gate lowered (speed only; its quality gate is measured on trained models, see
docs/optimization.md), and the int4 engines' tokens are compared, not required to agree.

    python benchmarks/llama.py [--rounds 2] [--int4-block-size 128] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from optimum_env import optimum_python

PROMPT, NEW, THREADS = 128, 128, 2
LONG_PROMPT = 1024    # the prefill of a long prompt: time to its first token
BATCH = 4             # then 4 prompts at once: tokens per second over the whole generation
ENGINES = ("edgegen fp32", "edgegen int4", "genai fp32", "genai int4", "optimum fp32", "transformers eager")


def save_random_llama(folder: Path) -> Path:
    """The random 124M Llama these benchmarks run, saved with save_pretrained (seed 0)."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                      num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048,
                                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    transformers.LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder


def int4_package(root: Path) -> Path:
    """The random Llama imported into an edgegen package in root/edgegen, with its int4 variant:
    every weight at 4 bits, the gate lowered (random weights have flat logits; speed only)."""
    from edgegen.export import export_transformers
    from edgegen.optimize import optimize_package

    package = export_transformers("llama", save_random_llama(root / "hf"), root / "edgegen")
    optimize_package(package, "int4", gate_threshold=0.0, max_8bit_share=0, progress=lambda line: None)
    return package


def engines(int4_block_size: int | None = None) -> tuple[str, ...]:
    """The engines a run compares: ENGINES, and each int4 at int4_block_size too where one is given."""
    if not int4_block_size:
        return ENGINES
    return ENGINES[:4] + (f"edgegen int4 b{int4_block_size}", f"genai int4 b{int4_block_size}") + ENGINES[4:]


def make_models(root: Path, optimum: bool = True, int4_block_size: int | None = None) -> dict:
    """The checkpoint, edgegen's packages and GenAI's builder models (and optimum-onnx's export),
    made once per run; with int4_block_size, both engines' int4 at that block size too (edgegen's in
    a copy of its package, root/edgegen-bN)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    import edgegen
    from edgegen.export import export_transformers
    from edgegen.optimize import optimize_package

    hf = save_random_llama(root / "hf")
    words = Tokenizer(models.WordLevel({f"t{i}": i for i in range(32000)}, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, bos_token="t1", eos_token="t2",
                                         unk_token="t0").save_pretrained(hf)
    package = export_transformers("llama", hf, root / "edgegen")
    # every weight at 4 bits, as GenAI's builder writes its int4 (no MatMul kept at 8 bits)
    if int4_block_size:   # before the default's variant: the copy holds fp32 only
        shutil.copytree(package, root / f"edgegen-b{int4_block_size}")
    record = optimize_package(package, "int4", gate_threshold=0.0, max_8bit_share=0,
                              progress=lambda line: None)["decoder"]
    graphs = {"edgegen fp32": [package / "decoder.onnx"], "edgegen int4": [package / record["file"]]}
    builds = [("fp32", "genai-fp32", []), ("int4", "genai-int4", [])]
    if int4_block_size:
        import edgegen.optimize

        # random weights' flat logits: at coarser blocks their perplexity moves past the gate's 5% too
        # (1.074x at block 128); speed only, its quality is measured on trained models
        edgegen.optimize.MAX_PERPLEXITY_RATIO = float("inf")
        copy = root / f"edgegen-b{int4_block_size}"
        blocked = optimize_package(copy, "int4", gate_threshold=0.0, max_8bit_share=0, block_size=int4_block_size,
                                   progress=lambda line: None)["decoder"]
        if "file" not in blocked:
            raise SystemExit(f"edgegen's int4 at block {int4_block_size}: {blocked['refused']}")
        graphs[f"edgegen int4 b{int4_block_size}"] = [copy / blocked["file"]]
        builds.append(("int4", f"genai-int4-b{int4_block_size}", ["--extra_options", f"block_size={int4_block_size}"]))
    for precision, folder, options in builds:
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o",
                        str(root / folder), "-p", precision, "-e", "cpu", "-c", str(root / "cache"), *options],
                       check=True, capture_output=True)
        config_path = root / folder / "genai_config.json"   # 2 threads, as the others
        config = json.loads(config_path.read_text())
        config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = THREADS
        config_path.write_text(json.dumps(config, indent=2))
        graphs[f"genai {folder[len('genai-'):].replace('-', ' ')}"] = [root / folder / "model.onnx"]
    if optimum:
        # optimum-onnx's export of the same checkpoint, in its own environment (an older transformers)
        code = ("import sys; from optimum.onnxruntime import ORTModelForCausalLM; "
                "ORTModelForCausalLM.from_pretrained(sys.argv[1], export=True).save_pretrained(sys.argv[2])")
        subprocess.run([optimum_python(), "-c", code, str(hf), str(root / "optimum-fp32")], check=True,
                       capture_output=True)
        graphs["optimum fp32"] = sorted((root / "optimum-fp32").glob("*.onnx"))
    weights = {engine: weight_bytes(paths) for engine, paths in graphs.items()}
    weights["transformers eager"] = weights["edgegen fp32"]   # the same checkpoint's tensors, in PyTorch
    # the KV cache a decode step reads, the same in every engine (float32), as edgegen bench counts it
    cache = edgegen.load(package, threads=1).kv_cache_read_bytes(1, PROMPT + (NEW - 1) / 2)
    return {"root": str(root), "weights": weights, "kv_cache_read": cache, "int4_gate": record["gate"]}


def weight_bytes(graphs: list) -> dict:
    """{"file": bytes of the graphs' weights, "read": the bytes of them a decode step reads}, as
    `edgegen bench` counts them (graph_summary: a table only looked rows up in is not read whole)."""
    from edgegen.graph_summary import read_graph_summary

    summaries = [read_graph_summary(path) for path in graphs]
    return {"file": sum(sum(s.initializer_bytes.values()) for s in summaries),
            "read": sum(s.weight_bytes_per_token() for s in summaries)}


# -- one engine, in its own process -------------------------------------------------------------

def worker(engine: str, root: Path) -> dict:
    prompt = np.random.default_rng(0).integers(3, 32000, PROMPT).tolist()
    generate, generate_batch = _engine(engine, root)
    generate(prompt[:8], 4)                       # warm-up
    start = time.perf_counter()
    stamps, tokens = [], []
    for token in generate(prompt, NEW):
        stamps.append(time.perf_counter())
        tokens.append(int(token))
    total = stamps[-1] - start
    gaps = np.diff(stamps) * 1e3
    long_prompt = np.random.default_rng(1).integers(3, 32000, LONG_PROMPT).tolist()
    begin = time.perf_counter()
    next(iter(generate(long_prompt, 1)))
    ttft_long = (time.perf_counter() - begin) * 1e3
    prompts = np.random.default_rng(2).integers(3, 32000, (BATCH, PROMPT)).tolist()
    begin = time.perf_counter()
    made = generate_batch(prompts, NEW)
    batch_rate = made / (time.perf_counter() - begin)
    rss = peak_rss_mb()   # before bandwidth_here's matrix
    return {"tokens_per_s": len(tokens) / total, "ttft_ms": (stamps[0] - start) * 1e3,
            "ttft_1024_ms": ttft_long, "batch4_tokens_per_s": batch_rate,
            "tpot_p50_ms": float(np.percentile(gaps, 50)), "tpot_p90_ms": float(np.percentile(gaps, 90)),
            "peak_rss_mb": rss, "tokens": tokens, "bandwidth": bandwidth_here(engine)}


def bandwidth_here(engine: str) -> float | None:
    """The read bandwidth in this engine's own process right after it decoded (after its peak RSS
    is read: the reading's matrix would add to it), or None in optimum's environment, which has
    no edgegen. A bound against it shares the engine's moment of this shared machine's load."""
    if engine.startswith("optimum"):
        return None
    from edgegen.bench import read_bandwidth   # which lets the engine's threads stop spinning first

    return read_bandwidth(THREADS)[0]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not carried over from the
    parent that started it)."""
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024


def _engine(engine: str, root: Path):
    if engine.startswith("edgegen"):
        import edgegen

        _, precision, *block = engine.split()
        pipe = edgegen.load(root / "-".join(["edgegen", *block]), threads=THREADS, precision=precision)
        return (lambda prompt, new: pipe.stream(prompt, max_new_tokens=new, do_sample=False),
                lambda prompts, new: sum(map(len, pipe.generate(prompts, max_new_tokens=new, do_sample=False))))
    if engine.startswith("genai"):
        import onnxruntime_genai as og

        config = og.Config(str(root / "-".join(engine.split())))
        config.clear_providers()
        model = og.Model(config)

        def generate(prompt, new):
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(prompt) + new, do_sample=False)
            generator = og.Generator(model, params)
            generator.append_tokens(np.array([prompt], dtype=np.int32))
            while not generator.is_done():
                generator.generate_next_token()
                yield int(generator.get_next_tokens()[0])

        def generate_batch(prompts, new):
            params = og.GeneratorParams(model)
            params.set_search_options(max_length=len(prompts[0]) + new, do_sample=False, batch_size=len(prompts))
            generator = og.Generator(model, params)
            generator.append_tokens(np.array(prompts, dtype=np.int32))
            while not generator.is_done():
                generator.generate_next_token()
            return sum(len(generator.get_sequence(i)) - len(prompts[0]) for i in range(len(prompts)))

        return generate, generate_batch
    if engine.startswith("optimum"):
        return _optimum(root)
    import torch
    import transformers

    torch.set_num_threads(THREADS)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(root / "hf"), dtype=torch.float32).eval()

    def eager(prompt, new):
        with torch.inference_mode():
            ids, past = torch.tensor([prompt]), None
            for _ in range(new):
                out = model(input_ids=ids, past_key_values=past, use_cache=True)
                past, ids = out.past_key_values, out.logits[:, -1:].argmax(-1)
                yield int(ids[0, 0])

    def eager_batch(prompts, new):
        with torch.inference_mode():
            out = model.generate(torch.tensor(prompts), max_new_tokens=new, do_sample=False, pad_token_id=0)
        return int((out[:, len(prompts[0]):] != 0).sum())

    return eager, eager_batch


def _optimum(root: Path):
    """optimum-onnx's ORTModelForCausalLM (run in its own environment): transformers' generate over
    ONNX Runtime, the tokens taken from its streamer as they come."""
    import queue
    import threading

    import onnxruntime
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(THREADS)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    model = ORTModelForCausalLM.from_pretrained(str(root / "optimum-fp32"), session_options=options)

    class Tokens(BaseStreamer):
        def __init__(self):
            self.queue, self.prompt_seen = queue.Queue(), False

        def put(self, value):
            if self.prompt_seen:
                self.queue.put(int(value.reshape(-1)[0]))
            self.prompt_seen = True   # the first put is the prompt itself

        def end(self):
            self.queue.put(None)

    def run(prompts, new, streamer=None):
        ids = torch.tensor(prompts)
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                              do_sample=False, streamer=streamer, pad_token_id=0)

    def generate(prompt, new):
        streamer = Tokens()
        thread = threading.Thread(target=run, args=([prompt], new, streamer))
        thread.start()
        while (token := streamer.queue.get()) is not None:
            yield token
        thread.join()

    def generate_batch(prompts, new):
        return int(run(prompts, new)[:, len(prompts[0]):].numel())

    return generate, generate_batch


def command_line(description: str, worker, rounds: int) -> argparse.Namespace | None:
    """A benchmark whose engines each run in a process of their own: its options (--rounds, --out),
    or, in such a process (--worker ENGINE --root DIR), None once worker's result is printed as JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--int4-block-size", type=int, default=None, help="also run both engines' int4 at this block")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--root", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, Path(args.root))))
        return None
    return args


def interleaved_rounds(script: str, engines, rounds: int, root: str, shown) -> dict:
    """{engine: [each round's result]}: each engine's `script --worker` in a process of its own (this
    environment's Python), one engine after another, round after round; shown(result) is what is
    printed of each as it comes."""
    runs = {engine: [] for engine in engines}
    for _ in range(rounds):
        for engine in engines:
            runs[engine].append(run_worker(sys.executable, script, engine, root))
            print(engine, shown(runs[engine][-1]), flush=True)
    return runs


def run_worker(python: str, script: str, engine: str, root: str) -> dict:
    """One engine's result, from `script --worker` in a process of its own."""
    out = subprocess.run([python, script, "--worker", engine, "--root", root],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    args = command_line(__doc__.splitlines()[0], worker, rounds=2)
    if args is None:
        return
    from edgegen.bench import read_bandwidth   # the bandwidth `edgegen bench` measures: 8 readings, the best

    with tempfile.TemporaryDirectory(prefix="edgegen-llama-") as scratch:
        made = make_models(Path(scratch), int4_block_size=args.int4_block_size)
        first, how = read_bandwidth(THREADS)
        bandwidths = [first]
        runs = {engine: [] for engine in engines(args.int4_block_size)}
        for _ in range(args.rounds):
            for engine in runs:
                python = optimum_python() if engine.startswith("optimum") else sys.executable
                runs[engine].append(run_worker(python, __file__, engine, scratch))
                print(engine, {k: round(v, 2) for k, v in runs[engine][-1].items() if k != "tokens" and v is not None},
                      flush=True)
            bandwidths.append(read_bandwidth(THREADS)[0])
    bandwidth = max(bandwidths)
    cache = made["kv_cache_read"]   # decode steps read after 128 to 255 tokens: the middle
    reference = runs["transformers eager"][0]["tokens"]
    rows = {}
    for engine, results in runs.items():
        best = max(results, key=lambda r: r["tokens_per_s"])
        weights = made["weights"][engine]
        bound_ms = (weights["read"] + cache) / bandwidth * 1e3
        rows[engine] = {**{k: v for k, v in best.items() if k != "tokens"},
                        "weight_mb": weights["file"] / 1e6, "read_mb": (weights["read"] + cache) / 1e6,
                        "bound_ms": bound_ms, "tpot_over_bound": best["tpot_p50_ms"] / bound_ms,
                        "tokens_equal_transformers": sum(a == b for a, b in zip(best["tokens"], reference))}
    from edgegen.bench import machine_info, write_results   # here: a worker may run in another environment's Python

    results = {"machine": machine_info(), "bandwidth_gb_s": bandwidth / 1e9, "bandwidths_gb_s": [b / 1e9 for b in bandwidths], "rows": rows,
               "int4_gate_on_random_weights": made["int4_gate"]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"read bandwidth ({how}), best of "
             f"{', '.join(f'{b / 1e9:.1f}' for b in bandwidths)} GB/s (before and after each round): "
             f"{bandwidth / 1e9:.1f} GB/s", "",
             "read per token: the weights less the tables decoding looks rows up in (the embedding, the rotary caches), plus the KV cache "
             f"after {PROMPT + (NEW - 1) / 2:.1f} tokens ({cache / 1e6:.1f} MB)", "",
             "| engine | tokens/s | batch 4: tokens/s | TTFT ms | TTFT, 1024-token prompt, ms | TPOT p50 ms | TPOT p90 ms | "
             "peak RSS MB | weights MB | read per token MB | bound ms | TPOT / bound | tokens equal to transformers (of 128) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for engine, r in rows.items():
        lines.append(f"| {engine} | {r['tokens_per_s']:.1f} | {r['batch4_tokens_per_s']:.1f} | {r['ttft_ms']:.0f} | {r['ttft_1024_ms']:.0f} | {r['tpot_p50_ms']:.2f} | "
                     f"{r['tpot_p90_ms']:.2f} | {r['peak_rss_mb']:.0f} | {r['weight_mb']:.0f} | {r['read_mb']:.0f} | "
                     f"{r['bound_ms']:.2f} | {r['tpot_over_bound']:.2f} | {r['tokens_equal_transformers']} |")
    results["paired"] = paired_ratios(runs, args.int4_block_size)
    lines += ["", "edgegen against GenAI round by round (each round runs the engines one after another, so a ratio "
              "within a round is less exposed to this shared machine's load than the best rounds above): median (range)",
              "", "| precision | tokens/s | batch 4: tokens/s | TPOT p50 | TTFT, 1024-token prompt |", "|---|---|---|---|---|"]
    for precision, ratios in results["paired"].items():
        lines.append(f"| {precision} | " + " | ".join(f"{np.median(r):.2f}x ({min(r):.2f}x-{max(r):.2f}x)"
                                                      for r in ratios.values()) + " |")
    results["bound_in_process"] = {engine: [r["tpot_p50_ms"] / ((made["weights"][engine]["read"] + cache)
                                                              / r["bandwidth"] * 1e3) for r in results_]
                                   for engine, results_ in runs.items() if results_[0]["bandwidth"]}
    lines += ["", "TPOT p50 over the bound, each round against the bandwidth read in the engine's own process right "
              "after it decoded: median (range)", "", "| engine | TPOT / bound | bandwidth GB/s |", "|---|---|---|"]
    for engine, ratios in results["bound_in_process"].items():
        readings = [r["bandwidth"] / 1e9 for r in runs[engine]]
        lines.append(f"| {engine} | {np.median(ratios):.2f}x ({min(ratios):.2f}x-{max(ratios):.2f}x) | "
                     f"{np.median(readings):.1f} ({min(readings):.1f}-{max(readings):.1f}) |")
    name = f"llama_int4_b{args.int4_block_size}" if args.int4_block_size else "llama"
    write_results(out, name, results, "\n".join(lines) + "\n")


def paired_ratios(runs: dict, int4_block_size: int | None = None) -> dict:
    """{precision: {measure: [edgegen over GenAI in each round]}}, each ratio 'how many times faster';
    with int4_block_size, also its int4 against GenAI's at the same block and against GenAI's default."""
    pairs = {"fp32": ("edgegen fp32", "genai fp32"), "int4": ("edgegen int4", "genai int4")}
    if int4_block_size:
        blocked = f"int4 b{int4_block_size}"
        pairs[blocked] = (f"edgegen {blocked}", f"genai {blocked}")
        pairs[f"edgegen {blocked} against GenAI's int4 b32"] = (f"edgegen {blocked}", "genai int4")
    paired = {}
    for precision, (ours, theirs) in pairs.items():
        ours, theirs = runs[ours], runs[theirs]
        paired[precision] = {
            "tokens_per_s": [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(ours, theirs)],
            "batch4_tokens_per_s": [a["batch4_tokens_per_s"] / b["batch4_tokens_per_s"] for a, b in zip(ours, theirs)],
            "tpot_p50": [b["tpot_p50_ms"] / a["tpot_p50_ms"] for a, b in zip(ours, theirs)],
            "ttft_1024": [b["ttft_1024_ms"] / a["ttft_1024_ms"] for a, b in zip(ours, theirs)]}
    return paired


if __name__ == "__main__":
    main()
