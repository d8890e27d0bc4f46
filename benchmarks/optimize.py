"""The optimization issue's table: every family's graphs, fp32 against their int8 and fp16
variants on ONNX Runtime CPU (batch 8, 2 threads), with each variant's gate figure, and the
variants the gate (or the speed rule) refused and why. From the shipped checkpoints.

    python benchmarks/optimize.py [--only stylegan-digits ...] [--out benchmarks/results]

Each variant is made with `--target tensorrt` (so a variant that passes its gate is written
even where it is slower on this CPU) and timed against fp32 side by side by edgegen's optimize.
For the GPT, the opset-18 export also gets the `fused` variant (ONNX Runtime's transformer
fusions, an ort-cpu target only).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from edgegen.bench import machine_info, write_results
from edgegen.demo import PRETRAINED, demo_models
from edgegen.export import export_checkpoint
from edgegen.optimize import optimize_package, speedup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument("--only", nargs="+", default=None, choices=[model.name for _, model in demo_models()],
                        help="these shipped models only (results written as optimize_<names>)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="edgegen-optimize-bench-"))
    rows, report = [], {"benchmark": "optimize", "batch": 8, "machine": machine_info(), "packages": {}}
    for family, model in demo_models():
        family, name = family.name, model.name
        if args.only and name not in args.only:
            continue
        pkg = export_checkpoint(PRETRAINED / name, scratch / name)
        report["packages"][name] = {}
        for precision in ("int8", "fp16"):
            records = optimize_package(pkg, precision, target="tensorrt", progress=lambda line: None)
            report["packages"][name][precision] = records
            for part, r in records.items():
                gate = r.get("gate", {"line": "not run"})
                extra = f", cosine {gate['cosine']:.4f}" if "cosine" in gate else ""
                speed = f"{r['speedup_ort_cpu']:.2f}x" if "speedup_ort_cpu" in r else ""
                verdict = "written" if "file" in r else f"refused: {r['refused']}"
                rows.append(f"| {name} | {part} | {precision} | {speed} | {gate['line']}{extra} | {verdict} |")
                print(rows[-1], flush=True)
        if family == "gpt":  # ONNX Runtime's transformer fusions, for the opset-18 export they are meant for
            pkg18 = export_checkpoint(PRETRAINED / name, scratch / f"{name}-opset18", opset=18)
            r = optimize_package(pkg18, "fused", progress=lambda line: None)["decoder"]
            report["packages"][f"{name}-opset18"] = {"fused": {"decoder": r}}
            verdict = "written" if "file" in r else f"refused: {r['refused']}"
            rows.append(f"| {name} (opset 18) | decoder | fused fp32 | {r['speedup_ort_cpu']:.2f}x | "
                        f"{r['gate']['line']}, cosine {r['gate']['cosine']:.5f} | {verdict} |")
            print(rows[-1], flush=True)
    target = gan_target(scratch / "gan-digits") if not args.only or "gan-digits" in args.only else []
    lines = ["Variants against fp32 on ONNX Runtime CPU, batch 8, p50 latency ratio (above 1 = faster), "
             "with the gate's figure on held-out inputs (PSNR for images, audio and other float outputs; "
             "top-1 agreement and logit cosine for GPT):", "",
             "| package | graph | precision | speed vs fp32 | gate | result |", "|---|---|---|---|---|---|", *rows, "",
             *target]
    write_results(args.out, "optimize" + ("_" + "_".join(args.only) if args.only else ""), report, "\n".join(lines))


def gan_target(pkg: Path, runs: int = 5, calls: int = 1000) -> list[str]:
    """The optimization issue's number (the GAN generator's int8 variant >= 1.6x its fp32 graph
    at batch 8 on ONNX Runtime CPU), measured longer than the table's 100 calls: `runs` runs of
    `calls` interleaved calls each, on held-out latents."""
    import numpy as np

    from edgegen.runtimes import load

    fp32 = load(pkg, backend="ort-cpu", threads=2).sessions["generator"]
    int8 = load(pkg, backend="ort-cpu", threads=2, precision="int8").sessions["generator"]
    feeds = {"z": np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)}
    ratios = [speedup(fp32, int8, feeds, rounds=10, per_round=calls // 10) for _ in range(runs)]
    print("gan int8 vs fp32:", [round(r, 3) for r in ratios], flush=True)
    return [f"GAN generator, int8 against fp32 at batch 8, 2 threads, {runs} runs of {calls} interleaved calls each: "
            + ", ".join(f"{r:.2f}x" for r in ratios) + f" (median {np.median(ratios):.2f}x).", ""]


if __name__ == "__main__":
    main()
