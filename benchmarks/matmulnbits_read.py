"""How fast ONNX Runtime's MatMulNBits reads 4-bit and 8-bit weights at a decode step, against
the read bandwidth of a float32 matrix-vector product, in one process, rounds interleaved,
2 threads.

The graph holds the MatMulNBits nodes of benchmarks/llama.py's 124M Llama after edgegen's fused
projections (per layer: q/k/v 768->1280, o 768->768, gate/up 768->4096, down 2048->768; then the
output head 768->32000), each over one token (M=1), with random packed weights: the kernel's time
does not depend on their values. For each form (bits, block size, accuracy_level) the run gives
the time of one pass over all of them, the bytes they read (packed weights and scales), and
those bytes over the time. Where that rate is below the matrix-vector product's, int4 decoding
is set by the kernel's unpacking arithmetic on these cores, not by memory.

    python benchmarks/matmulnbits_read.py [--rounds 6] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from llama import THREADS

LAYERS = 12
SHAPES = [(768, 1280), (768, 768), (768, 4096), (2048, 768)] * LAYERS + [(768, 32000)]   # (K, N)
# (bits, block size, accuracy_level): edgegen's int4 (and GenAI's builder's), then the same
# with float activations, larger blocks (fewer scales), and 8 bits
FORMS = [(4, 32, 4), (4, 32, 0), (4, 64, 4), (4, 128, 4), (8, 32, 4), (8, 128, 4)]
CALLS = 30   # passes per round; the round's figure is their median


def session(bits: int, block: int, accuracy_level: int):
    """(session, bytes its weights take) of one graph of SHAPES' MatMulNBits nodes."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, weights, outputs, size = [], [], [], 0
    for i, (k, n) in enumerate(SHAPES):
        packed = rng.integers(0, 256, (n, k // block, block * bits // 8), dtype=np.uint8)
        scales = rng.random(n * (k // block), dtype=np.float32) * 0.01
        weights += [numpy_helper.from_array(packed, f"w{i}"), numpy_helper.from_array(scales, f"s{i}")]
        size += packed.nbytes + scales.nbytes
        nodes.append(helper.make_node("MatMulNBits", [f"x{k}", f"w{i}", f"s{i}"], [f"y{i}"], domain="com.microsoft",
                                      K=k, N=n, bits=bits, block_size=block, accuracy_level=accuracy_level))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, n]))
    inputs = [helper.make_tensor_value_info(f"x{k}", TensorProto.FLOAT, [1, k]) for k in sorted({k for k, _ in SHAPES})]
    model = helper.make_model(helper.make_graph(nodes, "matmulnbits", inputs, outputs, weights),
                              opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]), size


def main() -> None:
    from edgegen.bench import read_bandwidth, write_results

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    feed = {f"x{k}": rng.random((1, k), dtype=np.float32) for k in sorted({k for k, _ in SHAPES})}
    sessions = {form: session(*form) for form in FORMS}
    times = {form: [] for form in FORMS}
    bandwidths = []
    for round_ in range(args.rounds):
        bandwidths.append(read_bandwidth(THREADS)[0])
        time.sleep(0.5)   # the BLAS threads spin a while after their work: not on ONNX Runtime's time
        order = FORMS[round_ % len(FORMS):] + FORMS[:round_ % len(FORMS)]   # each form first in some round
        for form in order:
            run, calls = sessions[form][0], []
            run.run(None, feed)
            for _ in range(CALLS):
                start = time.perf_counter()
                run.run(None, feed)
                calls.append(time.perf_counter() - start)
            times[form].append(float(np.median(calls)))
    bandwidth = float(np.median(bandwidths))
    rows = []
    for form, (_, size) in sessions.items():
        seconds = float(np.median(times[form]))
        rows.append({"bits": form[0], "block_size": form[1], "accuracy_level": form[2], "ms": seconds * 1e3,
                     "mb": size / 1e6, "gb_s": size / seconds / 1e9, "of_matvec": size / seconds / bandwidth})
    lines = [f"float32 matrix-vector product, {THREADS} threads: median {bandwidth / 1e9:.1f} GB/s "
             f"(rounds: {', '.join(f'{b / 1e9:.1f}' for b in bandwidths)})", "",
             "| bits | block | accuracy_level | ms per pass | MB read | GB/s | of the matrix-vector product's |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['bits']} | {r['block_size']} | {r['accuracy_level']} | {r['ms']:.2f} | {r['mb']:.1f} | "
              f"{r['gb_s']:.1f} | {r['of_matvec']:.2f} |" for r in rows]
    write_results(Path(args.out), "matmulnbits_read", {"bandwidth_gb_s": bandwidth / 1e9,
                                                       "bandwidths_gb_s": [b / 1e9 for b in bandwidths], "rows": rows},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
