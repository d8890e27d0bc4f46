"""The super-resolution family's numbers (docs/results.md, "Super-resolution"), in one run, on the shipped
x4 model (models/edgegen_models/checkpoints/sr-photos-x4):

1. Quality: held-out photographs (two that training never saw), degraded as in training,
   upscaled by edgegen (fp32 and int8) and by bicubic interpolation: PSNR and SSIM.
2. Seams: tiled against untiled output on a held-out photograph small enough to run whole.
3. `edgegen optimize --precision int8`: its gate and its speed against fp32 on ONNX Runtime CPU.
4. Tile sizes: megapixels per second of one graph call at tiles 64, 128 and 256, ONNX Runtime
   fp32 and int8 against PyTorch eager, interleaved.
5. A 1024x768 photograph upscaled to 4096x3072 through the tiled runtime, fp32 against int8 (and the
   time in their graph calls), interleaved, beside PyTorch eager on the whole image.

Every side-by-side timing lets the machine settle between engines (bench.SETTLE_S): a thread
pool left spinning by the engine before takes the cores from the one being timed.

    python benchmarks/sr.py [--iters 60] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgegen.bench import bench_feeds, interleaved_timings, machine_info, peak_rss_mb, write_results
from edgegen.check import check_package
from edgegen.export import export_checkpoint
from edgegen.families import PRETRAINED
from edgegen.families.sr.data import photo_split
from edgegen.families.sr.evaluation import quality
from edgegen.families.sr.model import Upscaler
from edgegen.metrics import percentiles_ms
from edgegen.optimize import optimize_package
from edgegen.runtimes import load
from edgegen.training.checkpoint import load_checkpoint

MODEL = PRETRAINED / "sr-photos-x4"
TILES = (64, 128, 256)
LARGE = (768, 1024)       # height, width of the large input
LARGE_ROUNDS = 5


def seams(pipe) -> dict:
    """Max abs difference between tiled and untiled output on the held-out cat photograph at a
    quarter of its size (75x112 input): at the default overlap, and at one too small to cover
    the receptive field (where only the blend hides the seam)."""
    _, held_out = photo_split("natural", 0)
    photo = Image.fromarray(held_out[0])
    small = np.asarray(photo.resize((photo.width // 4, photo.height // 4), Image.BICUBIC), dtype=np.float32) / 255
    whole = pipe.upscale(small, tile=512)
    result = {"input": list(small.shape[:2]), "default_overlap": pipe.config.overlap}
    for tile, overlap in ((32, None), (48, None), (32, 4)):
        tiled = pipe.upscale(small, tile=tile, overlap=overlap)
        key = f"tile {tile}, overlap {overlap if overlap is not None else pipe.config.overlap}"
        result[key] = float(np.abs(tiled - whole).max())
    return result


def tile_sweep(pipes: dict, module, iters: int) -> list[dict]:
    rows = []
    for tile in TILES:
        feeds = bench_feeds(pipes["fp32"].sessions["upscaler"].inputs, 1, shapes={"height": tile, "width": tile})
        engines = {f"edgegen ort-cpu {p}": (lambda s=pipe.sessions["upscaler"]: s.run(feeds)) for p, pipe in pipes.items()}
        tensor = torch.from_numpy(feeds["image"])

        def eager():
            with torch.inference_mode():
                return module(tensor)

        engines["torch eager fp32"] = eager
        timings = interleaved_timings(engines, iters, max(2, iters // 10))
        megapixels = (tile * 4) ** 2 / 1e6
        for engine, seconds in timings.items():
            stats = percentiles_ms(seconds)
            rows.append({"tile": tile, "engine": engine, "p50_ms": round(stats["p50_ms"], 2),
                         "megapixels_per_s": round(megapixels / stats["p50_ms"] * 1e3, 3)})
    return rows


def large_image(pipes: dict, module, rounds: int = LARGE_ROUNDS) -> dict:
    """The large photograph through each engine, `rounds` times each, taking turns, each timed call
    right after an untimed one of its own; and, for edgegen, the seconds spent in its graph calls
    (the median over every call). The rest of a call is the tiling's numpy work and the writing of
    its 151 MB result into fresh memory, which on the development VM costs from 0.15 s to 2 s a
    call, varying from call to call and with what ran before (a fresh 151 MB array written after a
    2 s pause: 0.7-1.35 s, 0.03 s without the pause). It fell on the engine's place in the order, not
    its precision: the second tiled engine took 0.3-0.5 s more, int8 or fp32 (swapped, one run each),
    and the runs before this breakdown read fp32 2.7x-3.5x slower than int8, where their graph calls
    differed by 1.1x-1.2x. The graph calls are the engines' own comparison."""
    photo = Image.fromarray(photo_split("natural", 0)[1][1])   # the held-out coffee photograph, enlarged
    image = np.asarray(photo.resize(LARGE[::-1], Image.BICUBIC), dtype=np.float32) / 255
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)[None]))

    def eager():
        with torch.inference_mode():
            return module(tensor)

    in_graphs = {f"edgegen {p}, tile {pipe.config.tile}": [] for p, pipe in pipes.items()}
    engines = {name: _timing_graph_calls(pipe, image, in_graphs[name]) for name, pipe in zip(in_graphs, pipes.values())}
    engines["torch eager fp32, whole image"] = eager
    times = interleaved_timings(engines, rounds, 1, rounds=rounds, rewarm=1)
    out_mp = LARGE[0] * LARGE[1] * 16 / 1e6
    return {name: {"seconds_p50": round(float(np.median(t)), 3), "megapixels_per_s": round(out_mp / float(np.median(t)), 3),
                   **({"graph_seconds_median": round(float(np.median(in_graphs[name])), 3)} if name in in_graphs else {})}
            for name, t in times.items()}


def _timing_graph_calls(pipe, image: np.ndarray, spent: list):
    """pipe.upscale(image), adding the seconds its graph calls took as one more entry of `spent`."""
    session = pipe.sessions["upscaler"]
    run = session.run

    def timed_run(feeds):
        start = time.perf_counter()
        out = run(feeds)
        spent[-1] += time.perf_counter() - start
        return out

    session.run = timed_run

    def upscale():
        spent.append(0.0)
        return pipe.upscale(image)
    return upscale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iters", type=int, default=60)
    parser.add_argument("--checkpoint", default=str(MODEL), help="default: the shipped x4 model")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as scratch:
        pkg = export_checkpoint(args.checkpoint, Path(scratch) / "pkg")
        fp32 = load(pkg, backend="ort-cpu")
        report = {"machine": machine_info(), "model": Path(args.checkpoint).name}
        report["quality_fp32"] = quality(fp32)
        report["seams"] = seams(fp32)
        records = optimize_package(pkg, "int8", progress=print)
        report["int8_ort_cpu"] = records["upscaler"]
        if "file" not in records["upscaler"]:   # refused where it does not pay: measure it anyway
            records = optimize_package(pkg, "int8", target="tensorrt", progress=print)
            report["int8_tensorrt_target"] = records["upscaler"]
        report["fp16_tensorrt_target"] = optimize_package(pkg, "fp16", target="tensorrt", progress=print)["upscaler"]
        report["check_tensorrt_10.15"] = [{"graph": c.part, "parses": c.ok,
                                           "profile": [list(map(list, shapes[1:])) for shapes in c.profile]}
                                          for c in check_package(pkg)]
        pipes = {"fp32": fp32}
        if "file" in records["upscaler"]:
            pipes["int8"] = load(pkg, backend="ort-cpu", precision="int8")
            report["quality_int8"] = quality(pipes["int8"])
        module = Upscaler(load_checkpoint(args.checkpoint).model.generator_ema).eval()
        report["tiles"] = tile_sweep(pipes, module, args.iters)
        report["large_image"] = large_image(pipes, module)
        report["peak_rss_mb"] = peak_rss_mb()
    write_results(args.out, "sr", report, markdown(report))


def markdown(r: dict) -> str:
    q, s = r["quality_fp32"], r["seams"]
    lines = ["# Super-resolution: the shipped x4 model (`python benchmarks/sr.py`)", "",
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; onnxruntime {r['machine']['onnxruntime']}.",
             "", f"## Quality on held-out photographs ({q['crops']} crops of {q['size']} pixels, degraded as in training)",
             "", "| upscaler | PSNR dB | SSIM |", "|---|---|---|",
             f"| bicubic | {q['bicubic_psnr']:.2f} | {q['bicubic_ssim']:.4f} |",
             f"| edgegen fp32 | {q['edgegen_psnr']:.2f} | {q['edgegen_ssim']:.4f} |"]
    if "quality_int8" in r:
        lines.append(f"| edgegen int8 | {r['quality_int8']['edgegen_psnr']:.2f} | {r['quality_int8']['edgegen_ssim']:.4f} |")
    lines += ["", f"edgegen beats bicubic in PSNR on {q['psnr_wins']:.0%} of the crops.", "",
              f"## Seams: tiled against untiled, {s['input'][1]}x{s['input'][0]} input", "",
              "| tiling | max abs difference |", "|---|---|"]
    lines += [f"| {k} | {v:.2g} |" for k, v in s.items() if k.startswith("tile")]
    i8 = r["int8_ort_cpu"]
    lines += ["", "## int8 (`edgegen optimize --precision int8`)", "",
              f"Gate: {i8['gate']['line']} (PSNR against fp32 on held-out degraded crops). "
              + (f"Written, {i8['speedup_ort_cpu']:.2f}x fp32's speed on ONNX Runtime CPU at {i8['speed_measured_at']}."
                 if "file" in i8
                 else f"Not written for ort-cpu: {i8['refused']}."), "",
              f"fp16 (`--target tensorrt`): gate {r['fp16_tensorrt_target']['gate']['line']}, "
              f"{r['fp16_tensorrt_target'].get('speedup_ort_cpu', float('nan')):.2f}x fp32's speed on ONNX Runtime CPU "
              "(fp16 is for GPUs).", "",
              "`edgegen check` (TensorRT 10.15): " + "; ".join(
                  f"{c['graph']} {'parses' if c['parses'] else 'does NOT parse'}" for c in r["check_tensorrt_10.15"])
              + f", profile {r['check_tensorrt_10.15'][0]['profile']} (min, opt, max of the image input).", "",
              "## Tile sizes: one graph call, batch 1 (output megapixels per second, p50)", "",
              "| tile | engine | p50 ms | MP/s |", "|---|---|---|---|"]
    lines += [f"| {row['tile']} | {row['engine']} | {row['p50_ms']:.1f} | {row['megapixels_per_s']:.2f} |"
              for row in r["tiles"]]
    lines += ["", f"## A {LARGE[1]}x{LARGE[0]} photograph to {LARGE[1] * 4}x{LARGE[0] * 4}", "",
              f"| engine | seconds (p50 of {LARGE_ROUNDS}) | output MP/s | in graph calls, s (median) |",
              "|---|---|---|---|"]
    lines += [f"| {name} | {v['seconds_p50']:.2f} | {v['megapixels_per_s']:.2f} | "
              f"{v['graph_seconds_median']:.2f} |" if "graph_seconds_median" in v else
              f"| {name} | {v['seconds_p50']:.2f} | {v['megapixels_per_s']:.2f} | (not tiled) |"
              for name, v in r["large_image"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
