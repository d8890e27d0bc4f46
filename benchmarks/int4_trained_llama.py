"""The weight-only gate on a Llama-shaped model trained here, wider than the shipped gpt-stdlib:
4 layers x 256, 8 query heads over 2 key/value heads, SwiGLU 768, byte-level, trained on the
standard library's source (edgegen train gpt --architecture llama). Its int4 and int8-weights
variants for ort-cpu are gated as `edgegen optimize` gates weight-only variants: top-1 agreement
with fp32 on held-out text of at least 0.95, perplexity within 5% (int4 keeps MatMuls at 8 bits
where every weight at 4 bits misses the search's bar on windows of its own, and the result says
how many). int4 is gated at blocks of 32 weights per scale (the default), 64 and 128: coarser blocks
read fewer scale bytes and ONNX Runtime's MatMulNBits runs them faster on CPU
(benchmarks/matmulnbits_read.py), at some cost in quality, which this measures.

    python benchmarks/int4_trained_llama.py [--steps 2000] [--checkpoint DIR] [--block-sizes 32,64,128]
                                            [--out benchmarks/results]

--checkpoint reuses a checkpoint trained before (the run writes it to a scratch folder otherwise).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from edgegen.bench import machine_info, write_results

SHAPE = dict(architecture="llama", n_layer=4, n_embd=256, n_head=8, n_kv_head=2, intermediate_size=768,
             block_size=256, train_context=128)


def main() -> None:
    from edgegen.export import export_checkpoint
    from edgegen.optimize import DEFAULT_BLOCK_SIZE, optimize_package, spared_text
    from edgegen.training.checkpoint import load_checkpoint
    from edgegen.training.train import train

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--block-sizes", default="32,64,128", help="int4's blocks to gate, comma-separated")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    block_sizes = [int(size) for size in args.block_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="edgegen-int4-llama-") as scratch:
        started = time.perf_counter()
        checkpoint = args.checkpoint or train("gpt", Path(scratch) / "ckpt", steps=args.steps, batch_size=32,
                                              progress=False, **SHAPE)
        trained_s = time.perf_counter() - started
        ckpt = load_checkpoint(checkpoint)
        parameters = sum(p.numel() for p in ckpt.model.parameters())
        package = export_checkpoint(checkpoint, Path(scratch) / "pkg")
        rows = []
        for precision, block_size in [("int8-weights", DEFAULT_BLOCK_SIZE)] + [("int4", size) for size in block_sizes]:
            record = optimize_package(package, precision, block_size=block_size, progress=lambda line: None)["decoder"]
            gate = record["gate"]
            rows.append({"precision": precision, "block_size": block_size, "top1": gate["value"], "perplexity": gate["perplexity"],
                         "fp32_perplexity": gate["fp32_perplexity"], "perplexity_ratio": gate["perplexity_ratio"],
                         "passed": gate["passed"], "written": "file" in record,
                         "spared": {k: record.get(k) for k in ("spared_matmuls", "spared_share", "search")},
                         "result": _result(record, spared_text)})
    lines = [f"`python benchmarks/int4_trained_llama.py`: a Llama-shaped byte model trained here "
             f"({parameters / 1e6:.2f}M parameters, {ckpt.training['steps']} steps, training loss "
             f"{ckpt.training['final_losses']['loss']:.3f}), gated on held-out standard-library text", "",
             "| precision | block | top-1 agreement | perplexity (fp32) | ratio | result |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['precision']} | {r['block_size']} | {r['top1']:.3f} | {r['perplexity']:.3f} ({r['fp32_perplexity']:.3f}) | "
              f"{r['perplexity_ratio']:.3f}x | {r['result']} |" for r in rows]
    write_results(args.out, "int4_trained_llama",
                  {"machine": machine_info(), "shape": SHAPE, "parameters": parameters, "training": ckpt.training,
                   "training_seconds_this_run": round(trained_s, 1), "rows": rows}, "\n".join(lines) + "\n")


def _result(record: dict, spared_text) -> str:
    """Written or why not, and for int4 what its search kept at 8 bits."""
    if "file" not in record:
        return record["refused"]
    search = record.get("search")
    if not search:
        return "written"
    kept = spared_text(record) if record["spared_matmuls"] else "every weight at 4 bits"
    return f"written, {kept} (the search's windows: top-1 {search['top1']:.3f}, bar {search['bar']:g})"


if __name__ == "__main__":
    main()
