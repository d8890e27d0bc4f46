"""The bring-your-own-model example's numbers (docs/bring-your-own-model.md), in one run:

1. Train the example denoiser (docs/examples/denoiser.py) a little on noisy crops of the
   photographs scikit-learn and scikit-image ship, and measure its PSNR gain on held-out crops.
2. Export it through `edgegen.export_pytorch` with dynamic batch, height and width: the gate's
   figures at the sizes the trace did not see.
3. `edgegen bench`: ONNX Runtime against PyTorch eager at several tile sizes (--shapes), interleaved.
4. `edgegen optimize`: the int8 and fp16 variants' gates (PSNR against fp32 on held-out noisy
   crops the user supplies) and their speed against fp32.

    python benchmarks/own_model.py [--steps 300] [--iters 100] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgegen import export_pytorch
from edgegen.bench import bench_feeds, bench_package, format_table, interleaved_timings, machine_info, write_results
from edgegen.optimize import optimize_package, psnr
from edgegen.runtimes import load
from edgegen.training.data import load_images

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "denoiser.py"
NOISE = 0.1
TILES = (32, 64, 128)


def example_module():
    spec = importlib.util.spec_from_file_location("denoiser_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def noisy(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(images + rng.normal(0, NOISE, images.shape), 0, 1).astype(np.float32)


def train(model, crops: np.ndarray, steps: int, rng: np.random.Generator) -> list[float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    losses = []
    for _ in range(steps):
        clean = crops[rng.choice(len(crops), 32)]
        loss = torch.nn.functional.mse_loss(model(torch.from_numpy(noisy(clean, rng))), torch.from_numpy(clean))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def int8_against_fp32(pkg: Path, iters: int) -> dict:
    """{tile: fp32 p50 / int8 p50} at batch 4, the two sessions taking turns."""
    fp32, int8 = load(pkg, backend="ort-cpu"), load(pkg, backend="ort-cpu", precision="int8")
    ratios = {}
    for tile in TILES:
        feed = {"noisy": bench_feeds(fp32.inputs, 4, shapes={"height": tile, "width": tile})["noisy"]}
        times = interleaved_timings({"fp32": lambda: fp32(feed), "int8": lambda: int8(feed)}, iters, 10)
        ratios[tile] = round(float(np.median(times["fp32"]) / np.median(times["int8"])), 3)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    crops = load_images("natural", image_size=32, channels=1)
    model = example_module().Denoiser()
    losses = train(model, crops.train, args.steps, rng)
    model.eval()
    held_out = crops.test[:64]
    noisy_held_out = noisy(held_out, rng)
    with torch.no_grad():
        denoised = model(torch.from_numpy(noisy_held_out)).numpy()
    quality = {"psnr_noisy_db": round(psnr(held_out, noisy_held_out), 2), "psnr_denoised_db": round(psnr(held_out, denoised), 2)}

    scratch = Path(tempfile.mkdtemp(prefix="edgegen-own-model-"))
    example = {"noisy": noisy_held_out[:2]}
    user_held_out = [{"noisy": noisy_held_out[i:i + 8]} for i in range(0, 64, 8)]
    pkg = export_pytorch(model, example, scratch / "denoiser", dynamic={"noisy": {0: "batch", 2: "height", 3: "width"}},
                         output_names=["clean"], held_out=user_held_out, dim_limits={"height": 1024, "width": 1024},
                         source="docs/examples/denoiser.py:make_model")
    manifest = json.loads((pkg / "edgegen.json").read_text())
    validation = manifest["graphs"]["model"]["validation"]

    weights = scratch / "denoiser.pt"
    torch.save(model.state_dict(), weights)
    import os
    os.environ["DENOISER_WEIGHTS"] = str(weights)
    reference = f"{EXAMPLE}:make_model"
    benches = [bench_package(pkg, batch=4, iters=args.iters, warmup=10, vs_torch=reference, shapes={"height": t, "width": t})
               for t in TILES]
    variants = {}
    for precision in ("int8", "fp16"):
        records = optimize_package(pkg, precision, target="tensorrt", progress=lambda line: None)
        variants[precision] = records["model"]
    int8_speed = int8_against_fp32(pkg, args.iters) if "file" in variants["int8"] else {}
    pipe = load(pkg, backend="ort-cpu")
    report = {"machine": machine_info(), "training": {"steps": args.steps, "final_loss": round(float(np.mean(losses[-20:])), 6)},
              "quality": quality, "validation": validation, "bench": benches, "variants": variants,
              "int8_vs_fp32_p50": int8_speed, "package_inputs": [s.describe() for s in pipe.inputs]}
    lines = ["# Bring your own model: the example denoiser", "",
             f"Trained {args.steps} steps on noisy (sigma {NOISE}) 32x32 crops of the shipped photographs: held-out PSNR "
             f"{quality['psnr_noisy_db']} dB noisy -> {quality['psnr_denoised_db']} dB denoised.", "",
             f"Export gate: {len(validation['feeds'])} feeds ({', '.join(dict.fromkeys(validation['feeds']))}), "
             f"max abs difference {validation['max_abs']:.2g}, max rel {validation['max_rel']:.2g}, tolerance atol "
             f"{validation['atol']:g} rtol {validation['rtol']:g}: passed.", ""]
    for bench, tile in zip(benches, TILES):
        lines += [f"## batch 4, {tile}x{tile} (`edgegen bench pkg --batch 4 --shapes height={tile},width={tile} "
                  f"--vs-torch docs/examples/denoiser.py:make_model`)", "", format_table(bench), ""]
    lines += ["## Variants (`edgegen optimize pkg --precision int8|fp16 --target tensorrt`, gated on the user's "
              "held-out noisy crops)", "", "| precision | gate | vs fp32 where optimize judges it | vs fp32 at "
              "batch 4: " + ", ".join(f"{t}x{t}" for t in TILES) + " (interleaved) |", "|---|---|---|---|"]
    for precision, record in variants.items():
        speed = (f"{record['speedup_ort_cpu']:.2f}x at {record.get('speed_measured_at', 'batch 8')}"
                 if "speedup_ort_cpu" in record else "-")
        tiles = ", ".join(f"{int8_speed[t]:.2f}x" for t in TILES) if precision == "int8" and int8_speed else ""
        refused = f" (not written: {record['refused']})" if "refused" in record else ""
        lines.append(f"| {precision} | {record['gate']['line']}{refused} | {speed} | {tiles} |")
    write_results(args.out, "own_model", report, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
