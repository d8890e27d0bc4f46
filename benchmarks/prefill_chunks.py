"""Time to the first token of a 1,024-token prompt on a random 124M Llama (benchmarks/llama.py's
model), prefilled in one decoder call or in chunks of 512, 256 and 128 tokens (each chunk's
cache fed to the next), with only the last position's logits (logits_to_keep 1) and, for the
one call, with every position's (what the graph computed before logits_to_keep). 2 threads,
rounds interleaved, median of 5.

    python benchmarks/prefill_chunks.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from edgegen.bench import machine_info, write_results

PROMPT, THREADS, ROUNDS = 1024, 2, 5
CHUNKS = (1024, 512, 256, 128)


def prefill(session, config, ids: np.ndarray, chunk: int, keep: int) -> float:
    """Seconds to run the prompt through the decoder in chunks of `chunk` tokens."""
    from edgegen.families.gpt.pipeline import LOGITS_TO_KEEP

    heads, dim = config.cache_heads, config.head_dim
    past = {f"past_key_values.{i}.{kv}": np.zeros((1, heads, 0, dim), np.float32)
            for i in range(config.n_layer) for kv in ("key", "value")}
    outputs = ["logits"] + [f"present.{i}.{kv}" for i in range(config.n_layer) for kv in ("key", "value")]
    start = time.perf_counter()
    for begin in range(0, len(ids), chunk):
        end = begin + chunk
        feeds = {"input_ids": ids[None, begin:end], "position_ids": np.arange(begin, end)[None],
                 "attention_mask": np.ones((1, end), np.int64), LOGITS_TO_KEEP: np.array([keep], np.int64), **past}
        logits, *present = session.run(outputs, feeds)
        past = dict(zip(past, present))
    return time.perf_counter() - start


def main() -> None:
    from llama import save_random_llama

    from edgegen.export import export_transformers
    from edgegen.runtimes import load

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgegen-prefill-") as scratch:
        hf = save_random_llama(Path(scratch) / "hf")
        pipe = load(export_transformers("llama", hf, Path(scratch) / "edgegen"), backend="ort-cpu",
                    threads=THREADS)
        session = pipe.decoder.inference_session
        ids = np.random.default_rng(0).integers(3, 32000, PROMPT).astype(np.int64)
        cases = [(chunk, 1) for chunk in CHUNKS] + [(PROMPT, 0)]
        for case in cases:   # warm-up
            prefill(session, pipe.config, ids, *case)
        times = {case: [] for case in cases}
        for _ in range(ROUNDS):
            for case in cases:
                times[case].append(prefill(session, pipe.config, ids, *case))
    rows = [{"chunk": chunk, "logits": "last position" if keep else "every position",
             "ttft_ms": round(1000 * float(np.median(t)), 1)} for (chunk, keep), t in times.items()]
    one_call = rows[0]["ttft_ms"]
    lines = ["`python benchmarks/prefill_chunks.py`: a 1,024-token prompt through a random 124M Llama, 2 threads, "
             f"median of {ROUNDS}", "", "| prefill | logits computed | TTFT ms | against one call |", "|---|---|---|---|"]
    lines += [f"| {'one call' if r['chunk'] == PROMPT else 'chunks of %d' % r['chunk']} | {r['logits']} | "
              f"{r['ttft_ms']:.0f} | {r['ttft_ms'] / one_call:.2f}x |" for r in rows]
    write_results(args.out, "prefill_chunks", {"machine": machine_info(), "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
