"""What ONNX Runtime's NCHWc layout transformer is worth to fp16 variants on CPU: each shipped
conv net's fp16 graph (made by `edgegen optimize --precision fp16 --target tensorrt` on a copy of
its package) opened with it and without it, calls interleaved in one process, 2 threads. edgegen
opens an fp16 variant without it only where it crashes ONNX Runtime (docs/optimization.md,
microsoft/onnxruntime#28392).

    python benchmarks/fp16_layout.py [--models gan-digits,diffusion-digits,sr-photos-x4] [--calls 40]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from edgegen.bench import machine_info, write_results

THREADS = 2


def fp16_graphs(name: str, scratch: Path) -> list[tuple[str, Path, list]]:
    """(part, fp16 graph, its inputs) of the shipped model `name`, optimized on a copy."""
    from edgegen.export.shipped import export_shipped
    from edgegen.optimize import optimize_package
    from edgegen.package import Package

    copy = scratch / name
    shutil.copytree(export_shipped(name, report=lambda line: None), copy)
    optimize_package(copy, "fp16", target="tensorrt", progress=lambda *a, **k: None)
    package = Package(copy)
    return [(part, package.graph_path(part, "fp16"), package.graphs[part].inputs) for part in package.graphs]


def feed(inputs, rng: np.random.Generator, batch: int = 8, side: int = 64) -> dict:
    """Random inputs at batch 8; other named dims (a super-resolution tile's height and width) at 64."""
    shapes = {t.name: [(batch if i == 0 else side) if isinstance(d, str) else d for i, d in enumerate(t.shape)]
              for t in inputs}
    return {t.name: (rng.integers(0, 2, shapes[t.name]) if t.dtype.startswith("int") else rng.random(shapes[t.name]))
            .astype(t.dtype) for t in inputs}


def time_both(graph: Path, inputs, calls: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    sessions = {"with": ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"]),
                "without": ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"],
                                                disabled_optimizers=["NchwcTransformer"])}
    feeds = feed(inputs, np.random.default_rng(0))
    times = {name: [] for name in sessions}
    for _ in range(3):
        for session in sessions.values():
            session.run(None, feeds)
    for _ in range(calls):   # interleaved: the machine's noise falls on both
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds)
            times[name].append(time.perf_counter() - start)
    with_ms, without_ms = (float(np.median(times[k])) * 1e3 for k in ("with", "without"))
    return {"with_ms": round(with_ms, 3), "without_ms": round(without_ms, 3), "slowdown": round(without_ms / with_ms, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gan-digits,diffusion-digits,sr-photos-x4")
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgegen-fp16-layout-") as scratch:
        for name in args.models.split(","):
            for part, graph, inputs in fp16_graphs(name, Path(scratch)):
                rows.append({"model": name, "graph": part, **time_both(graph, inputs, args.calls)})
    lines = ["| model | graph | with NCHWc, ms (batch 8; a tile 64x64) | without, ms | without / with |", "|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['graph']} | {r['with_ms']} | {r['without_ms']} | {r['slowdown']}x |" for r in rows]
    write_results(args.out, "fp16_layout", {"machine": machine_info(), "threads": THREADS, "calls": args.calls,
                                            "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
