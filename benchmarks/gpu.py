"""GPU figures for every shipped model, in one run, into one JSON file: each graph at batch 8
on ONNX Runtime's CUDA and TensorRT execution providers (where onnxruntime-gpu and TensorRT
are installed) and on edgegen's own TensorRT engines (where tensorrt and cuda-python are), beside
PyTorch CUDA eager on the same inputs, interleaved; and what could not
run and why. Run through benchmarks/gpu_check.sh, which runs the `gpu` tests first.

    python benchmarks/gpu.py --out gpu_check.json
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from edgegen.bench import machine_info
from edgegen.demo import PRETRAINED, demo_models
from edgegen.export import export_checkpoint, exported_as
from edgegen.metrics import percentiles_ms
from edgegen.training.checkpoint import load_checkpoint
from edgegen.storage import atomic_write_text
from edgegen.errors import BackendError
from edgegen.runtimes import available_backends, load
from edgegen.runtimes.backends import resolve_backend

BATCH, ITERS = 8, 100


def torch_cuda_runner(module, feeds, names):
    import torch

    tensors = [torch.from_numpy(feeds[n]).cuda() for n in names]
    module = module.cuda().eval()

    def run():
        with torch.inference_mode():
            module(*tensors)
        torch.cuda.synchronize()
    return run


def time_engines(engines: dict, iters: int = ITERS) -> dict:
    for fn in engines.values():
        for _ in range(10):
            fn()
    times = {k: [] for k in engines}
    for _ in range(10):
        for k, fn in engines.items():
            for _ in range(iters // 10):
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    return {k: {key: round(v, 4) for key, v in percentiles_ms(np.array(t)).items()} for k, t in times.items()}


def time_model(name: str, scratch: Path, gpu_backends: list[str], cuda: bool) -> dict:
    """{part: {engine: percentiles}} for each graph the shipped `name` exports (a family that exports
    through its import path, text2image, times the imported graphs)."""
    pkg = export_checkpoint(PRETRAINED / name, scratch / name)
    entry = {}
    with exported_as(load_checkpoint(PRETRAINED / name)) as (ckpt, spec):
        data = spec.load_data(ckpt, ckpt.trained_data()) if spec.needs_data else None
        rng = np.random.default_rng(0)
        for graph in spec.graphs:
            feeds = graph.realistic_inputs(ckpt, BATCH, rng, data)
            engines = {}
            for backend in ["ort-cpu", *gpu_backends]:
                session = load(pkg, backend=backend).sessions[graph.part]
                engines[backend] = lambda s=session: s.run(feeds)
            if cuda:
                names = [s.name for s in graph.inputs(ckpt.config)]
                # a copy: .cuda() moves a module in place, and another graph's inputs run the CPU model
                engines["torch cuda eager"] = torch_cuda_runner(copy.deepcopy(graph.submodule(ckpt.model)), feeds, names)
            entry[graph.part] = time_engines(engines)
            print(name, graph.part, {k: v["p50_ms"] for k, v in entry[graph.part].items()}, flush=True)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None, help="these shipped models (default: all)")
    args = parser.parse_args()
    import torch

    report = {"machine": machine_info(), "batch": BATCH, "torch": torch.__version__,
              "cuda_available": torch.cuda.is_available(), "backends": available_backends(), "packages": {},
              "unmeasured": []}
    if torch.cuda.is_available():
        report["gpu"] = torch.cuda.get_device_name(0)
    else:
        report["unmeasured"].append("PyTorch CUDA eager: torch.cuda.is_available() is False")
    gpu_backends = [b for b in ("ort-cuda", "ort-tensorrt") if b in report["backends"]]
    for backend in ("ort-cuda", "ort-tensorrt"):
        if backend not in gpu_backends:
            report["unmeasured"].append(f"{backend}: not available (needs onnxruntime-gpu"
                                        f"{' and TensorRT' if backend == 'ort-tensorrt' else ''})")
    try:
        resolve_backend("tensorrt")
        gpu_backends.append("tensorrt")   # edgegen's own engines, built on first load into the cache
    except BackendError as missing:
        report["unmeasured"].append(f"tensorrt (native): {missing}")
    scratch = Path(tempfile.mkdtemp(prefix="edgegen-gpu-"))
    cuda = torch.cuda.is_available()
    for family, model in demo_models():
        if family.name == "gpt" or (args.only and model.name not in args.only):
            continue  # token packages are timed as generations; the graph-level table is for the others
        try:
            report["packages"][model.name] = time_model(model.name, scratch, gpu_backends, cuda)
        except Exception as exc:   # one model's failure (an export on this machine's torch) leaves the others
            report["unmeasured"].append(f"{model.name}: {type(exc).__name__}: {str(exc)[:500]}")
            print(f"{model.name}: failed: {type(exc).__name__}: {str(exc)[:500]}", flush=True)
        atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")   # each model's kept if a later one fails
    atomic_write_text(args.out, json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
