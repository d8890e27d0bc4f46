"""`edgegen demo`: every family end to end on this machine, summarised in demo/index.md.

For each family: a checkpoint (the shipped weights, or trained here with --train), export
through the validation gate, samples from the runtime, a benchmark beside PyTorch eager.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from .bench import bench_package, format_table, machine_info
from .images import save_grid
from .package import atomic_write_text, staged_directory

PRETRAINED = Path(__file__).parent / "pretrained"
# (family, shipped checkpoint, how it was made)
DEMO_MODELS = (
    ("vae", "vae-digits", "edgegen train vae --data digits --out edgegen/pretrained/vae-digits"),
    ("vaegan", "vaegan-digits", "edgegen train vaegan --data digits --out edgegen/pretrained/vaegan-digits"),
    ("gan", "gan-digits", "edgegen train gan --data digits --out edgegen/pretrained/gan-digits"),
    ("cgan", "cgan-digits", "edgegen train cgan --data digits --out edgegen/pretrained/cgan-digits"),
    ("stylegan", "stylegan-digits", "edgegen train stylegan --data digits --out edgegen/pretrained/stylegan-digits"),
    ("diffusion", "diffusion-digits", "edgegen train diffusion --data digits --out edgegen/pretrained/diffusion-digits"),
    ("controlnet", "controlnet-digits", "edgegen train controlnet --data digits --base edgegen/pretrained/diffusion-digits "
                                        "--out edgegen/pretrained/controlnet-digits"),
    ("ldm", "ldm-digits", "edgegen train ldm --data digits --out edgegen/pretrained/ldm-digits"),
    ("flow", "flow-moons", "edgegen train flow --data moons --out edgegen/pretrained/flow-moons"),
    ("flow", "flow-digits", "edgegen train flow --data digits --out edgegen/pretrained/flow-digits"),
    ("gpt", "gpt-stdlib", "edgegen train gpt --data stdlib --out edgegen/pretrained/gpt-stdlib"),
    ("pixelcnn", "pixelcnn-digits", "edgegen train pixelcnn --data digits --out edgegen/pretrained/pixelcnn-digits"),
    ("wavenet", "wavenet-tones", "edgegen train wavenet --data tones --out edgegen/pretrained/wavenet-tones"),
)
TEXT_PROMPTS = ("def ", "import ", "class ")
BENCH_BATCH = 8


def run_demo(out: str | Path, train_models: bool = False, overwrite: bool = False, iters: int = 200) -> Path:
    """Write the demo into `out` (atomically: a failed demo leaves no half-written folder)."""
    from .export import export_checkpoint
    from .models.train import train
    from .runtimes import load

    out = Path(out)
    started = time.perf_counter()
    with staged_directory(out, overwrite=overwrite) as stage:
        sections, summary = [], {"machine": machine_info(), "families": {}}
        for family, shipped, command in DEMO_MODELS:
            data = shipped.split("-", 1)[1]
            ckpt = stage / "ckpt" / shipped
            if train_models:
                # a ControlNet controls the diffusion model trained just before it
                base = {"base": str(stage / "ckpt" / "diffusion-digits")} if family == "controlnet" else {}
                train(family, ckpt, data=data, **base)
                origin = f"trained here: `edgegen train {family} --data {data}`"
            else:
                shutil.copytree(PRETRAINED / shipped, ckpt)
                origin = f"shipped weights, made by `{command}`"
            pkg = stage / "pkg" / shipped
            export_checkpoint(ckpt, pkg)
            pipe = load(pkg, backend="ort-cpu")
            extra = SHOWCASES[family](pipe, stage, shipped)
            report = bench_package(pkg, batch=BENCH_BATCH, iters=iters, vs_torch=ckpt)
            report["package"] = f"pkg/{shipped}"  # relative to the demo folder, not the staging name
            summary["families"][shipped] = {"origin": origin, "bench": report, **extra}
            sections.append(_section(shipped, origin, report, extra))
        summary["seconds"] = round(time.perf_counter() - started, 1)
        atomic_write_text(stage / "results.json", json.dumps(summary, indent=2) + "\n")
        atomic_write_text(stage / "index.md", _index(sections, summary))
    return out / "index.md"


def _samples(pipe, stage: Path, name: str) -> dict:
    save_grid(pipe.sample(64, seed=0), stage / f"{name}_samples.png", nrow=8)
    return {}


def _stylegan_showcase(pipe, stage: Path, name: str) -> dict:
    """Samples at truncation psi 0.7, and a style-mixing grid: in each row the coarse styles
    (layers 0-3) of one seed, the fine ones of the column's seed."""
    save_grid(pipe.sample(64, seed=0, truncation_psi=0.7), stage / f"{name}_samples.png", nrow=8)
    coarse, fine = list(range(8)), [100 + i for i in range(8)]
    rows = [pipe.mix([a], fine, crossover_layer=4, truncation_psi=0.7) for a in coarse]
    save_grid(np.concatenate(rows), stage / f"{name}_mixing.png", nrow=8)
    return {"sampling": {"truncation_psi": 0.7, "noise_mode": "const", "mixing_crossover_layer": 4}}


def _controlnet_showcase(pipe, stage: Path, name: str) -> dict:
    """Held-out digits, their coarse hints, and samples that follow the hints with no class
    label (conditioning scale 1), then the same seeds at scale 0 (the base model, unconditional)."""
    from .models.data import load_images

    digits = load_images("digits", image_size=pipe.image_shape[-1]).test[:10]
    hints = pipe.hint(digits)
    options = {"steps": 20, "sampler": "dpmpp-2m", "seed": 0}
    rows = [digits, hints, pipe.sample(10, control=hints, conditioning_scale=1.0, **options),
            pipe.sample(10, control=hints, conditioning_scale=0.0, **options)]
    save_grid(np.concatenate(rows), stage / f"{name}_samples.png", nrow=10)
    return {"sampling": {**options, "conditioning_scales": [1.0, 0.0]}}


def _diffusion_showcase(pipe, stage: Path, name: str) -> dict:
    """Each column one class, 0 to 9: DPM-Solver++ 20 steps, guidance 3."""
    labels = np.tile(np.arange(10), 8)
    images = pipe.sample(len(labels), steps=20, sampler="dpmpp-2m", guidance_scale=3.0, labels=labels, seed=0)
    save_grid(images, stage / f"{name}_samples.png", nrow=10)
    return {"sampling": {"sampler": "dpmpp-2m", "steps": 20, "guidance_scale": 3.0}}


def _flow_showcase(pipe, stage: Path, name: str) -> dict:
    """Points: samples over the learned log density. Images: samples at temperature 0.7,
    bits per dimension of held-out digits and anomaly-score separation."""
    from .evaluation import anomaly_aucs
    from .models.data import load_images
    from .plots import save_density_plot

    if not pipe.is_image:
        save_density_plot(pipe, pipe.sample(2000, seed=0), stage / f"{name}_samples.png")
        return {}
    save_grid(pipe.sample(64, seed=0, temperature=0.7), stage / f"{name}_samples.png", nrow=8)
    digits = load_images("digits", image_size=pipe.image_shape[-1]).test
    return {"bits_per_dim_held_out": round(float(pipe.bits_per_dim(digits).mean()), 4), "anomaly_auc": anomaly_aucs(pipe)}


def _vae_showcase(pipe, stage: Path, name: str) -> dict:
    """Samples, reconstructions of held-out digits, and anomaly-score separation from noise and photos."""
    from .evaluation import anomaly_aucs
    from .models.data import load_images

    _samples(pipe, stage, name)
    originals = load_images("digits").test[:32]
    pairs = np.stack([originals, pipe.reconstruct(originals)], axis=1).reshape(-1, *originals.shape[1:])
    save_grid(pairs, stage / f"{name}_reconstructions.png", nrow=16)
    return {"anomaly_auc": anomaly_aucs(pipe)}


def _cgan_showcase(pipe, stage: Path, name: str) -> dict:
    """Each column one class, 0 to 9 (no truncation)."""
    labels = np.tile(np.arange(10), 8)
    save_grid(pipe.sample(len(labels), labels=labels, seed=0), stage / f"{name}_samples.png", nrow=10)
    return {}


def _pixelcnn_showcase(pipe, stage: Path, name: str) -> dict:
    """Each column one class, 0 to 9, sampled pixel by pixel (the fast loop)."""
    labels = np.tile(np.arange(10), 8)
    save_grid(pipe.sample(len(labels), seed=0, labels=labels), stage / f"{name}_samples.png", nrow=10)
    return {}


def _wavenet_showcase(pipe, stage: Path, name: str) -> dict:
    """One second of each class as a WAV file, and their spectrograms in one picture."""
    from .models.wavenet import TONE_KINDS
    from .plots import save_spectrograms
    from .runtimes.audio import write_wav

    kinds = TONE_KINDS if pipe.num_classes == len(TONE_KINDS) else ("unconditional",)
    clips = {}
    for label, kind in enumerate(kinds):
        audio = pipe.generate(pipe.sample_rate, seed=0, label=label if pipe.num_classes else None)
        write_wav(stage / f"{name}_{kind}.wav", audio, pipe.sample_rate)
        clips[kind] = audio
    save_spectrograms(clips, pipe.sample_rate, stage / f"{name}_samples.png")
    return {"wav_files": [f"{name}_{kind}.wav" for kind in kinds]}


def _text_showcase(pipe, stage: Path, name: str) -> dict:
    """Continuations of a few prompts (temperature 0.8, top-k 40, seed 0), and the held-out
    text's loss is what the checkpoint reports."""
    samples = [prompt + pipe.generate(prompt, max_new_tokens=200, temperature=0.8, top_k=40, seed=0)
               for prompt in TEXT_PROMPTS]
    atomic_write_text(stage / f"{name}_samples.txt", "\n\n----\n\n".join(samples) + "\n")
    return {"text_samples": samples, "sampling": {"temperature": 0.8, "top_k": 40, "max_new_tokens": 200}}


SHOWCASES = {"vae": _vae_showcase, "vaegan": _vae_showcase, "gan": _samples, "diffusion": _diffusion_showcase,
             "ldm": _diffusion_showcase, "controlnet": _controlnet_showcase, "stylegan": _stylegan_showcase,
             "flow": _flow_showcase,
             "gpt": _text_showcase, "pixelcnn": _pixelcnn_showcase, "wavenet": _wavenet_showcase,
             "cgan": _cgan_showcase}


def _section(name: str, origin: str, report: dict, extra: dict) -> str:
    family = report["family"]
    lines = [f"## {name}", "", f"Checkpoint: {origin}.", ""]
    if family == "gpt":
        lines += ["Continuations from the runtime (temperature 0.8, top-k 40, seed 0; the prompt is the first word):", ""]
        lines += [line for sample in extra["text_samples"] for line in ("```python", sample, "```", "")]
        g = report["generation"]
        lines += [f"Greedy generation, {g['prompt_tokens']}-token prompts, {g['new_tokens']} new tokens. Streamed at "
                  f"batch 1: time to first token p50 {g['ttft_ms_p50']:.2f} ms, per output token p50 "
                  f"{g['tpot_ms_p50']:.3f} ms. The table times whole generations at batch {report['batch']}; "
                  "PyTorch runs the checkpoint's own KV-cache loop.", ""]
    else:
        lines += [f"![{name} samples]({name}_samples.png)", ""]
    if family == "flow":
        lines += ["Samples over the learned log density." if "anomaly_auc" not in extra else
                  f"Samples at temperature 0.7. Held-out digits: {extra['bits_per_dim_held_out']:.3f} bits per "
                  "dimension; anomaly score ROC AUC " + ", ".join(f"{k.replace('_', ' ')} {v:.3f}"
                                                                 for k, v in extra["anomaly_auc"].items()), ""]
    if family in ("diffusion", "ldm"):
        lines += ["Columns are the classes 0 to 9 (DPM-Solver++, 20 steps, guidance 3). `edgegen bench` times one "
                  "denoiser call; a 20-step guided sample makes 20 calls at twice the batch."
                  + (" Latent diffusion: the UNet denoises 4x8x8 latents, the decoder makes the 32x32 images."
                     if family == "ldm" else ""), ""]
    if family == "controlnet":
        lines += ["Rows: held-out digits, their coarse hints (2x2 averages), samples that follow the hints "
                  "(conditioning scale 1, no class label, DPM-Solver++ 20 steps), and the same seeds at scale 0 "
                  "(exactly the base diffusion model, unconditional).", ""]
    if family == "stylegan":
        lines += ["Samples at truncation psi 0.7 (const noise). Style mixing: each row keeps one seed's coarse "
                  "styles (layers 0-3), each column gives its seed's fine styles (layers 4-7):", "",
                  f"![style mixing]({name}_mixing.png)", ""]
    if family == "pixelcnn":
        lines += ["Columns are the classes 0 to 9, each image sampled pixel by pixel in raster order.", ""]
    if family == "cgan":
        lines += ["Columns are the classes 0 to 9 (the generator takes the class; no truncation).", ""]
    if family == "wavenet":
        lines += ["Spectrograms of one second generated for each class, sample by sample (fast generation): "
                  + ", ".join(f"[{f}]({f})" for f in extra["wav_files"]) + ".", ""]
    if family in ("vae", "vaegan"):
        lines += ["Held-out digits (odd columns) and their reconstructions (even columns):", "",
                  f"![reconstructions]({name}_reconstructions.png)", "",
                  "Anomaly score ROC AUC (held-out digits should score lowest): "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.3f}" for k, v in extra["anomaly_auc"].items()), ""]
    lines += [f"Latency at batch {report['batch']}, {report['threads']} threads, {report['iters']} iterations each, "
              f"interleaved (`edgegen bench pkg/{name} --batch {report['batch']} --vs-torch ckpt/{name}`):", "",
              format_table(report), ""]
    return "\n".join(lines)


def _index(sections: list[str], summary: dict) -> str:
    m = summary["machine"]
    head = ["# edgegen demo", "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['os']}; onnxruntime {m['onnxruntime']}. "
            f"Total time {summary['seconds']} s.", "",
            "Each family: checkpoint -> `edgegen export` (validated against PyTorch at batch 1 and 3) -> "
            "runtime samples (seed 0) -> benchmark beside PyTorch eager.", ""]
    return "\n".join(head + sections)
