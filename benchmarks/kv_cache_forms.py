"""The GPT decoder's two KV-cache forms side by side on a random 124M Llama (benchmarks/llama.py's
model), int4 (MatMulNBits), 2 threads, in one process, rounds interleaved:

- exported: the decoder graph grows the cache by a Concat, so each call copies it into a second
  buffer (the form TensorRT and onnxruntime-genai without a shared buffer read);
- in place: what `edgegen optimize` writes for ONNX Runtime (edgegen/families/gpt/cache_in_place.py),
  one buffer per cache tensor, each call writing only its new keys and values.

The same int4 weights in both (the in-place variant is the exported one rewritten). Greedy
decoding of 128 new tokens after prompts of 128 and 1,024 random ids: time per output token
(p50), time to the first token, and the cache's memory.

    python benchmarks/kv_cache_forms.py [--rounds 5] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np

from edgegen.bench import NEW_TOKENS, machine_info, streamed_latency, write_results

THREADS = 2
PROMPTS = (128, 1024)   # then NEW_TOKENS (128) new tokens, as edgegen bench times a token package


def make_packages(root: Path) -> dict:
    """{form: package}: the checkpoint imported once, then its int4 variant in each form."""
    from llama import save_random_llama

    from edgegen.families import Family
    from edgegen.export import export_transformers
    from edgegen.optimize import optimize_package

    exported = export_transformers("llama", save_random_llama(root / "hf"), root / "exported")
    in_place = root / "in-place"
    shutil.copytree(exported, in_place)
    # random weights: flat logits, so the gate is lowered (speed only, as in benchmarks/llama.py)
    with mock.patch.object(Family, "ort_form_object", lambda self: None):   # the variant left in the exported form
        optimize_package(exported, "int4", gate_threshold=0.0, max_8bit_share=0, progress=lambda line: None)
    record = optimize_package(in_place, "int4", gate_threshold=0.0, max_8bit_share=0,
                              progress=lambda line: None)["decoder"]
    assert "not applied" not in record["ort_form"], record["ort_form"]
    return {"exported": exported, "in place": in_place}


def main() -> None:
    from edgegen.runtimes import load

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    prompts = {length: rng.integers(3, 32000, length).tolist() for length in PROMPTS}
    with tempfile.TemporaryDirectory(prefix="edgegen-kv-forms-") as scratch:
        pipes = {form: load(package, precision="int4", threads=THREADS)
                 for form, package in make_packages(Path(scratch)).items()}
        tokens = {(form, length): pipe.generate(prompts[length], max_new_tokens=NEW_TOKENS, do_sample=False)
                  for form, pipe in pipes.items() for length in PROMPTS}   # (and the warm-up)
        runs = {(form, length): [] for form in pipes for length in PROMPTS}
        for _ in range(args.rounds):
            for length in PROMPTS:
                for form, pipe in pipes.items():
                    runs[form, length].append(streamed_latency(pipe, prompts[length], runs=1))
    rows = []
    for (form, length), results in runs.items():
        rows.append({"form": form, "prompt": length,
                     "tpot_p50_ms": float(np.median([r["tpot_ms_p50"] for r in results])),
                     "ttft_ms": float(np.median([r["ttft_ms_p50"] for r in results])),
                     "cache_mb": pipes[form].cache_bytes(1, length + NEW_TOKENS) / 2**20,
                     "tokens_equal_exported": sum(a == b for a, b in zip(tokens[form, length],
                                                                         tokens["exported", length]))})
    exported = {r["prompt"]: r for r in rows if r["form"] == "exported"}
    lines = [f"`python benchmarks/kv_cache_forms.py`: a random 124M Llama, int4, {THREADS} threads, greedy, {NEW_TOKENS} new "
             f"tokens, median of {args.rounds} interleaved rounds", "",
             "| KV cache | prompt | TPOT p50 ms | decoding against exported | TTFT ms | cache MB | tokens equal to exported |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['form']} | {r['prompt']} | {r['tpot_p50_ms']:.2f} | "
              f"{exported[r['prompt']]['tpot_p50_ms'] / r['tpot_p50_ms']:.2f}x | {r['ttft_ms']:.0f} | "
              f"{r['cache_mb']:.1f} | {r['tokens_equal_exported']} / {NEW_TOKENS} |" for r in rows]
    write_results(args.out, "kv_cache_forms", {"machine": machine_info(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
