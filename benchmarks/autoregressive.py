"""The PixelCNN / WaveNet issue's numbers, in one run, from the shipped checkpoints (exported
here through the gate):

- PixelCNN: sampling 16 digits (8x8, 4 grey levels) with the naive loop (the whole network
  per pixel) and the fast loop (vertical stack once per row, horizontal stack per pixel on
  one row), 5 runs each, alternating; both must give identical images for the seed. Class-conditional
  samples judged by the digit classifier; log_prob of held-out digits against uniform noise.
- WaveNet: fast generation (the step graph with its queues) at 1k, 4k and 16k samples, the
  naive loop (the full-sequence graph over everything so far, per sample) at 1k, 2k, 4k and
  16k (quadratic: about 3 minutes at 16k); identical codes both ways; how tonal the output is
  per 64 ms frame (spectral peak share and flatness, against fresh clips synthesized like
  the training data and white noise); log_prob of held-out clips against noise.

    python benchmarks/autoregressive.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from edgegen.bench import machine_info, write_results
from edgegen.demo import PRETRAINED
from edgegen.export import export_checkpoint
from edgegen.metrics import roc_auc
from edgegen.training.classifier import train_digit_judge
from edgegen.training.data import load_images
from edgegen.families.wavenet.model import TONE_KINDS, synth_clip
from edgegen.package import Package
from edgegen.runtimes import load, open_sessions
from edgegen.families.pixelcnn.pipeline import PixelCNNPipeline

THREADS = 2


def timed(fn, rounds: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)), result


def pixelcnn_numbers(pkg: Path) -> dict:
    pipe = load(pkg, backend="ort-cpu", threads=THREADS)
    # The naive loop runs one graph over and over, where spinning thread pools are faster
    # (the pipeline turns spinning off because its fast loop alternates two graphs):
    # give it that advantage.
    package = Package(pkg)
    spinning = PixelCNNPipeline(package, open_sessions(package, "ort-cpu", THREADS, spin=True), pipe.config)
    labels = np.arange(16) % 10
    times = {"naive": [], "fast": []}
    images = {}
    for _ in range(5):  # alternate, so machine load hits both alike
        for mode, runner in (("naive", spinning), ("fast", pipe)):
            start = time.perf_counter()
            images[mode] = runner.sample(16, seed=0, labels=labels, fast=mode == "fast")
            times[mode].append(time.perf_counter() - start)
    p50 = {k: float(np.median(v)) for k, v in times.items()}
    judge = train_digit_judge(8)
    many_labels = np.arange(500) % 10
    samples = pipe.sample(500, seed=1, labels=many_labels)
    digits = load_images("digits", image_size=8).test
    noise = np.random.default_rng(0).random(digits.shape).astype(np.float32)
    return {"batch": 16, "seconds_p50": p50, "speedup": p50["naive"] / p50["fast"],
            "identical": bool(np.array_equal(images["naive"], images["fast"])),
            "label_accuracy_500": float((judge.predict(samples) == many_labels).mean()),
            "classifier_held_out_accuracy": judge.test_accuracy,
            "nats_per_image_held_out": float(-pipe.log_prob(digits).mean()),
            "auc_digits_vs_noise": roc_auc(-pipe.log_prob(digits), -pipe.log_prob(noise))}


def _frame_power(audio: np.ndarray, frame: int = 512) -> np.ndarray:
    frames = audio[:len(audio) // frame * frame].reshape(-1, frame) * np.hanning(frame)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2 + 1e-12


def peak_share(audio: np.ndarray) -> float:
    """Per 64 ms frame, the share of spectral energy within 2 bins of the 3 strongest peaks
    (a pure tone or chord ~1, white noise ~0.14), averaged over frames."""
    shares = []
    for power in _frame_power(audio):
        rest, near = power.copy(), np.zeros(len(power), bool)
        for _ in range(3):
            peak = int(rest.argmax())
            near[max(0, peak - 2):peak + 3] = True
            rest[max(0, peak - 2):peak + 3] = 0
        shares.append(power[near].sum() / power.sum())
    return float(np.mean(shares))


def spectral_flatness(audio: np.ndarray) -> float:
    """Geometric over arithmetic mean of each frame's power spectrum (tones ~0, white noise ~0.56)."""
    power = _frame_power(audio)
    return float(np.mean(np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)))


def wavenet_numbers(pkg: Path) -> dict:
    pipe = load(pkg, backend="ort-cpu", threads=THREADS)
    fast = {}
    for n in (1024, 4096, 16384):
        seconds, _ = timed(lambda: pipe.generate_codes(n, seed=0, labels=0), 3 if n < 16384 else 1)
        fast[n] = {"seconds": seconds, "samples_per_s": n / seconds}
    naive, identical = {}, True
    for n in (1024, 2048, 4096, 16384):
        seconds, codes = timed(lambda: pipe.generate_codes(n, seed=0, labels=0, fast=False), 1)
        naive[n] = {"seconds": seconds, "samples_per_s": n / seconds}
        identical &= bool(np.array_equal(codes, pipe.generate_codes(n, seed=0, labels=0)))
    rng = np.random.default_rng(7)
    generated = {kind: [pipe.generate(8000, seed=s, labels=i)[1000:] for s in range(3)] for i, kind in enumerate(TONE_KINDS)}
    real = [synth_clip(kind, rng, pipe.sample_rate)[1000:] for kind in TONE_KINDS for _ in range(3)]
    white = [rng.uniform(-0.5, 0.5, 7000) for _ in range(12)]
    tonal = {"generated_by_class": {k: {"peak_share": float(np.mean([peak_share(a) for a in v])),
                                        "flatness": float(np.mean([spectral_flatness(a) for a in v]))}
                                    for k, v in generated.items()}}
    for name, clips_ in (("generated", [a for v in generated.values() for a in v]), ("fresh_clips_like_training", real),
                         ("white_noise", white)):
        tonal[name] = {"peak_share": float(np.mean([peak_share(a) for a in clips_])),
                       "flatness": float(np.mean([spectral_flatness(a) for a in clips_]))}
    clips = np.stack([synth_clip(kind, rng, pipe.sample_rate)[:2000] for kind in TONE_KINDS for _ in range(10)])
    noise = rng.uniform(-0.5, 0.5, clips.shape).astype(np.float32)
    return {"fast": fast, "naive": naive, "identical_codes": identical,
            "speedup_4096": naive[4096]["seconds"] / fast[4096]["seconds"], "tonality": tonal,
            "nats_per_sample_held_out": float(-pipe.log_prob(clips).mean()),
            "auc_tones_vs_noise": roc_auc(-pipe.log_prob(clips), -pipe.log_prob(noise))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="edgegen-ar-bench-"))
    pc = pixelcnn_numbers(export_checkpoint(PRETRAINED / "pixelcnn-digits", scratch / "pixelcnn"))
    wn = wavenet_numbers(export_checkpoint(PRETRAINED / "wavenet-tones", scratch / "wavenet"))
    report = {"benchmark": "autoregressive", "threads": THREADS, "pixelcnn": pc, "wavenet": wn, "machine": machine_info()}
    t = wn["tonality"]
    lines = [
        f"PixelCNN, 16 digits (8x8, 4 levels), {THREADS} threads, 5 alternating runs each:", "",
        "| loop | seconds p50 | speedup | identical images |", "|---|---|---|---|",
        f"| naive (whole network per pixel; spinning thread pool) | {pc['seconds_p50']['naive']:.3f} | 1.00x | |",
        f"| fast (vertical stack per row, horizontal per pixel) | {pc['seconds_p50']['fast']:.3f} | "
        f"**{pc['speedup']:.2f}x** | {'yes' if pc['identical'] else 'NO'} |", "",
        f"Class-conditional samples judged by the digit classifier (held-out accuracy "
        f"{pc['classifier_held_out_accuracy']:.3f}): {100 * pc['label_accuracy_500']:.1f}% of 500 show the requested "
        f"digit. Held-out digits {pc['nats_per_image_held_out']:.2f} nats/image; log_prob ROC AUC digits vs noise "
        f"{pc['auc_digits_vs_noise']:.3f}.", "",
        f"WaveNet (8 kHz, receptive field {load(scratch / 'wavenet').config.receptive_field} samples), batch 1, "
        f"{THREADS} threads:", "",
        "| samples | fast: seconds | fast: samples/s | naive: seconds | naive: samples/s | speedup |",
        "|---|---|---|---|---|---|"]
    for n in (1024, 2048, 4096, 16384):
        f, s = wn["fast"].get(n), wn["naive"].get(n)
        cells = [str(n)]
        cells += [f"{f['seconds']:.2f}", f"{f['samples_per_s']:.0f}"] if f else ["", ""]
        cells += [f"{s['seconds']:.2f}", f"{s['samples_per_s']:.0f}"] if s else ["", ""]
        cells.append(f"**{s['seconds'] / f['seconds']:.1f}x**" if f and s else "")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Identical codes fast vs naive at 1k, 2k, 4k, 16k: {'yes' if wn['identical_codes'] else 'NO'}. "
              f"How tonal, per 64 ms frame (share of energy near the 3 strongest spectral peaks / spectral "
              f"flatness): generated {t['generated']['peak_share']:.3f} / {t['generated']['flatness']:.4f} ("
              + ", ".join(f"{k} {v['peak_share']:.3f}" for k, v in t["generated_by_class"].items())
              + f"), fresh clips synthesized like the training data {t['fresh_clips_like_training']['peak_share']:.3f} / "
              f"{t['fresh_clips_like_training']['flatness']:.4f}, "
              f"white noise {t['white_noise']['peak_share']:.3f} / {t['white_noise']['flatness']:.4f}. Held-out clips "
              f"{wn['nats_per_sample_held_out']:.3f} nats/sample; log_prob ROC AUC tones vs noise "
              f"{wn['auc_tones_vs_noise']:.3f}.", ""]
    write_results(args.out, "autoregressive", report, "\n".join(lines))


if __name__ == "__main__":
    main()
