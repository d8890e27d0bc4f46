"""diffusers pipelines through edgegen against diffusers' own PyTorch pipelines and optimum-onnx's
ONNX Runtime pipeline, side by side in one run: each engine in its own process, rounds
interleaved, 2 threads each, the same model, the same starting noise, 20 DDIM steps.

The models (random weights, built with diffusers' classes and saved with save_pretrained):
- unet2d: a UNet2DModel of 6.5M parameters on 32x32 RGB (DDIMPipeline's layout), batch 1 and 4;
- sd-small: a Stable Diffusion layout (CLIP text encoder 4 x 64 wide over 77 tokens, a
  cross-attention UNet of 3.2M parameters on 32x32 latents, a KL autoencoder to 64x64 images),
  batch 1, guidance 7.5;
- text2image-digits: the shipped trained model (docs/diffusers.md: 8-token prompts, a 1.1M
  UNet on 4x8x8 latents, 16x16 digits), saved as a diffusers folder with a DDIM scheduler, batch 1,
  guidance 7.5. Its samples are also judged: the digit classifier's reading of "a thin/thick
  DIGIT" samples (quality.caption_quality), through the int8 package too where optimize wrote its
  UNet's variant (on ort-cpu it refuses it as slower; `benchmarks/text2image_quality.py
  --precision int8` judges one made with `--target tensorrt`).
optimum-onnx exports the Stable Diffusion layout (ORTStableDiffusionPipeline, in its own
environment, benchmarks/.venv-optimum, as benchmarks/gpt.py builds it); it has no pipeline for
a bare UNet2DModel. Each round's prompt is new to every engine, so edgegen's prompt cache does
not spare it the text encoder. edgegen's time outside the UNet calls (sampler, guidance, text
encoder, decoder, numpy) is reported as a share of the whole.

    python benchmarks/diffusers_speed.py [--rounds 5] [--optimum-python PATH] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from optimum_env import optimum_python

THREADS, STEPS, GUIDANCE = 2, 20, 7.5
PROMPT = "a thick digit seven"   # plus the round's number: each call encodes a prompt it has not seen
CASES = (("unet2d", 1), ("unet2d", 4), ("sd-small", 1), ("text2image-digits", 1))
SD_LAYOUTS = ("sd-small", "text2image-digits")

# One worker per engine: builds its pipeline, then one timed generation per "run" line on stdin.
WORKER = r"""
import json, os, sys, time
import numpy as np
engine, folder, model, threads, steps, guidance = sys.argv[1:7]
threads, steps, guidance = int(threads), int(steps), float(guidance)
if engine == "diffusers":
    import torch, diffusers
    torch.set_num_threads(threads)
    pipe = (diffusers.DDIMPipeline if model == "unet2d" else diffusers.StableDiffusionPipeline).from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    def run(noise, prompt):
        latents = torch.from_numpy(noise)
        with torch.inference_mode():
            if model == "unet2d":   # DDIMPipeline takes no latents: its generator draws them; same cost
                return pipe(batch_size=len(noise), num_inference_steps=steps, output_type="np").images
            return pipe([prompt] * len(noise), num_inference_steps=steps, guidance_scale=guidance, latents=latents,
                        output_type="np").images
elif engine == "optimum":
    import torch
    torch.set_num_threads(threads)
    import onnxruntime
    from optimum.onnxruntime import ORTStableDiffusionPipeline
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    pipe = ORTStableDiffusionPipeline.from_pretrained(folder, session_options=options)
    pipe.set_progress_bar_config(disable=True)
    def run(noise, prompt):
        return pipe([prompt] * len(noise), num_inference_steps=steps, guidance_scale=guidance,
                    latents=torch.from_numpy(noise), output_type="np").images
else:
    import edgegen
    precision = engine.split()[-1]
    pipe = edgegen.load(folder, backend="ort-cpu", threads=threads, precision=precision)
    unet = pipe.sessions["unet"]
    inner, spent = unet.run, [0.0]
    def timed(feeds):
        start = time.perf_counter()
        out = inner(feeds)
        spent[0] += time.perf_counter() - start
        return out
    unet.run = timed
    def run(noise, prompt):
        if model == "unet2d":
            return pipe.sample(len(noise), steps=steps, sampler="ddim", noise=noise)
        return pipe([prompt] * len(noise), steps=steps, sampler="ddim", guidance_scale=guidance, noise=noise)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    noise, prompt = np.asarray(request["noise"], np.float32), request["prompt"]
    before = spent[0] if engine.startswith("edgegen") else 0.0
    start = time.perf_counter()
    run(noise, prompt)
    seconds = time.perf_counter() - start
    unet_s = spent[0] - before if engine.startswith("edgegen") else None
    print(json.dumps({"seconds": seconds, "unet_seconds": unet_s}), flush=True)
"""


class Worker:
    def __init__(self, python: str, engine: str, folder: Path, model: str):
        env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "TQDM_DISABLE": "1"}
        self.process = subprocess.Popen([python, "-c", WORKER, engine, str(folder), model, str(THREADS), str(STEPS),
                                         str(GUIDANCE)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=env)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{engine} worker for {model} did not start")

    def __call__(self, noise: np.ndarray, prompt: str) -> dict:
        self.process.stdin.write(json.dumps({"noise": noise.tolist(), "prompt": prompt}) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=120)


def build_models(work: Path) -> dict[str, Path]:
    import diffusers
    import torch

    from edgegen.families.text2image.components import LayoutConfig, build_components, clip_tokenizer, save_pipeline

    folders = {"unet2d": work / "unet2d", "sd-small": work / "sd-small"}
    if not folders["unet2d"].exists():
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                                     block_out_channels=(64, 128, 128), norm_num_groups=32,
                                     down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                                     up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
        diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler()).save_pretrained(folders["unet2d"])
    if not folders["sd-small"].exists():
        config = LayoutConfig(latent_size=32, unet_channels=(64, 128), layers_per_block=2, cross_dim=64, text_layers=4,
                              text_heads=4, text_intermediate=256, max_length=77, vae_channels=(32, 64), norm_groups=32)
        words = ("a", "digit", "thick", "thin", "seven", "two")
        parts = build_components(config, clip_tokenizer(work / "tokenizer", words, config.max_length))
        save_pipeline(folders["sd-small"], parts, "DDIMScheduler", tokenizer_source=work / "tokenizer")
    folders["text2image-digits"] = work / "text2image-digits" / "pipeline"
    if not folders["text2image-digits"].exists():
        from edgegen.families.text2image.export import as_pipeline_folder
        from edgegen.shipped import checkpoints_dir
        from edgegen.training.checkpoint import load_checkpoint

        as_pipeline_folder(load_checkpoint(checkpoints_dir() / "text2image-digits"), work / "text2image-digits",
                           "DDIMScheduler")
    return folders


def export_packages(folders: dict[str, Path], work: Path) -> dict[str, Path]:
    from edgegen.export import export_checkpoint
    from edgegen.export.diffusers_import import export_diffusers
    from edgegen.optimize import optimize_package
    from edgegen.shipped import checkpoints_dir

    packages = {}
    for name, folder in folders.items():
        package = work / f"{name}-pkg"
        if not package.exists():
            if name == "text2image-digits":   # from its checkpoint: the same graphs, and the captions' data
                export_checkpoint(checkpoints_dir() / name, package)
            else:
                export_diffusers(folder, package)
            optimize_package(package, "int8", progress=lambda line: print(f"  {name}: {line}", file=sys.stderr))
        packages[name] = package
    return packages


def export_optimum(python: str, folder: Path, out: Path) -> Path:
    """optimum's export of the folder, traced at the tokenizer's own length (its default dummy
    prompt, 16 tokens, does not fit a text encoder of 8 positions)."""
    if not out.exists():
        length = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())["model_max_length"]
        code = ("import sys; from optimum.exporters.onnx import main_export; "
                "main_export(sys.argv[1], sys.argv[2], task='text-to-image', sequence_length=int(sys.argv[3]))")
        subprocess.run([python, "-c", code, str(folder), str(out), str(length)], check=True, capture_output=True)
    return out


def engines_of(model: str, packages: dict, folders: dict, optimum: dict) -> dict[str, tuple[str, Path]]:
    """{engine: (python, folder)}: edgegen's int8 where optimize wrote a UNet variant."""
    engines = {"diffusers": (sys.executable, folders[model]), "edgegen fp32": (sys.executable, packages[model])}
    manifest = json.loads((packages[model] / "edgegen.json").read_text())
    if "file" in manifest.get("variants", {}).get("int8", {}).get("unet", {}):
        engines["edgegen int8"] = (sys.executable, packages[model])
    if model in optimum:
        engines["optimum"] = optimum[model]
    return engines


def int8_drift(package: Path, model: str, noise: np.ndarray) -> float | None:
    """Mean abs difference per pixel between the int8 and fp32 packages' images at the same noise
    (each graph's int8 variant passed its own gate; this is what 20 steps make of it)."""
    import edgegen

    manifest = json.loads((package / "edgegen.json").read_text())
    if "file" not in manifest.get("variants", {}).get("int8", {}).get("unet", {}):
        return None
    images = []
    for precision in ("fp32", "int8"):
        pipe = edgegen.load(package, backend="ort-cpu", threads=THREADS, precision=precision)
        images.append(pipe.sample(len(noise), steps=STEPS, sampler="ddim", noise=noise) if model == "unet2d" else
                      pipe([PROMPT] * len(noise), steps=STEPS, sampler="ddim", guidance_scale=GUIDANCE, noise=noise))
    return float(np.abs(images[0] - images[1]).mean())


def judged(package: Path) -> dict:
    """caption_quality of the fp32 and (where optimize wrote one) the int8 package of the trained
    model, at its own setting (DPM-Solver++, guidance 2)."""
    import edgegen
    from edgegen.families.text2image.quality import caption_quality
    from edgegen.training.classifier import train_digit_judge

    judge = train_digit_judge(8)
    manifest = json.loads((package / "edgegen.json").read_text())
    precisions = ["fp32"] + (["int8"] if "file" in manifest.get("variants", {}).get("int8", {}).get("unet", {}) else [])
    return {precision: caption_quality(edgegen.load(package, backend="ort-cpu", threads=THREADS, precision=precision),
                                       guidance_scale=2.0, judge=judge) for precision in precisions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--optimum-python", default=None, help="a Python with optimum-onnx (default: benchmarks/.venv-optimum)")
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "edgegen-diffusers-bench"))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    from edgegen.bench import write_results

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folders = build_models(work)
    packages = export_packages(folders, work)
    python = optimum_python(args.optimum_python)
    optimum = {model: (python, export_optimum(python, folders[model], work / f"{model}-optimum")) for model in SD_LAYOUTS}

    results = []
    for model, batch in CASES:
        engines = engines_of(model, packages, folders, optimum)
        workers = {name: Worker(python, name, folder, model) for name, (python, folder) in engines.items()}
        shape = {"unet2d": (batch, 3, 32, 32), "sd-small": (batch, 4, 32, 32), "text2image-digits": (batch, 4, 8, 8)}[model]
        noise = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        times = {name: [] for name in workers}
        unet_share = []
        for worker in workers.values():
            worker(noise, f"{PROMPT} warm-up")
        for round_ in range(args.rounds):
            for name, worker in workers.items():
                out = worker(noise, f"{PROMPT} {round_}")
                times[name].append(out["seconds"])
                if name == "edgegen fp32":
                    unet_share.append(out["unet_seconds"] / out["seconds"])
        for worker in workers.values():
            worker.close()
        p50 = {name: float(np.median(t)) for name, t in times.items()}
        row = {"model": model, "batch": batch, "steps": STEPS, "p50_s": p50,
               "edgegen_outside_unet": 1 - float(np.median(unet_share)),
               "int8_mean_abs_diff_vs_fp32": int8_drift(packages[model], model, noise),
               "speedup_vs_diffusers": {n: p50["diffusers"] / p50[n] for n in p50 if n.startswith("edgegen")}}
        if "optimum" in p50:
            row["speedup_vs_optimum"] = {n: p50["optimum"] / p50[n] for n in p50 if n.startswith("edgegen")}
        if model == "text2image-digits":
            row["quality"] = judged(packages[model])
        results.append(row)
        print(json.dumps(row), flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| model | batch | engine | p50 s (20 steps) | edgegen fp32's speed against it | edgegen int8's |",
             "|---|---|---|---|---|---|"]
    for row in results:
        for name, seconds in row["p50_s"].items():
            int8 = f"{seconds / row['p50_s']['edgegen int8']:.2f}x" if "edgegen int8" in row["p50_s"] else ""
            lines.append(f"| {row['model']} | {row['batch']} | {name} | {seconds:.3f} | "
                         f"{seconds / row['p50_s']['edgegen fp32']:.2f}x | {int8} |")
    lines.append("")
    for row in results:
        drift = row["int8_mean_abs_diff_vs_fp32"]
        lines.append(f"- {row['model']}, batch {row['batch']}: edgegen spends {row['edgegen_outside_unet'] * 100:.1f}% of "
                     "its time outside the UNet calls" + (f"; int8 images differ from fp32's by {drift:.4f} mean abs "
                                                         "per pixel" if drift is not None else ""))
    for row in results:
        for precision, q in row.get("quality", {}).items():
            lines.append(f"- {row['model']}, {precision}, {q['samples']} samples of \"a thin/thick DIGIT\" (DPM-Solver++, "
                         f"20 steps, guidance 2): the digit read as asked {q['digit_accuracy']:.1%}, on the asked side "
                         f"of the median ink {q['attribute_agreement']:.1%}, Frechet distance {q['frechet_distance']:.2f}")
    write_results(out, "diffusers_speed", {"threads": THREADS, "rounds": args.rounds, "results": results},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
