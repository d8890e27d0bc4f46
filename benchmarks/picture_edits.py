"""img2img and inpainting on the shipped diffusion-digits, through the runtime: how much of a
held-out digit each keeps, as the digit classifier reads it (docs/cli.md, "From a picture").

- img2img at each strength, unconditional: the share of edits still read as the input's digit,
  and the mean change per pixel;
- img2img toward another digit (label (d + 1) mod 10, guidance 3): the share read as that digit;
- inpainting the right half, unconditional and with the input's label: the share read as the
  input's digit, and whether the kept half is kept exactly.

    python benchmarks/picture_edits.py [--digits 200] [--steps 20] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse

import numpy as np

from edgegen.bench import machine_info, write_results
from edgegen.runtimes import load
from edgegen.training.classifier import train_digit_judge
from edgegen.training.data import digit_labels

STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", type=int, default=200, help="held-out digits edited")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (DPM-Solver++, the package's)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    pipe = load("diffusion-digits", backend="ort-cpu")
    judge = train_digit_judge(8)
    _, _, images, labels = digit_labels(pipe.image_shape[-1])
    images, labels = np.array(images[:args.digits]), np.array(labels[:args.digits])
    others = (labels + 1) % 10
    read = lambda edited: judge.predict(edited)   # noqa: E731
    rows = []
    for strength in STRENGTHS:
        kept = pipe.img2img(images, strength=strength, steps=args.steps, seed=0)
        moved = pipe.img2img(images, strength=strength, steps=args.steps, seed=0, labels=others)
        rows.append({"strength": strength, "same_digit": float(np.mean(read(kept) == labels)),
                     "mean_pixel_change": float(np.abs(kept - images).mean()),
                     "toward_other_digit": float(np.mean(read(moved) == others))})
    mask = np.zeros(pipe.image_shape[1:], np.float32)
    mask[:, mask.shape[1] // 2:] = 1
    painted = {"unconditional": pipe.inpaint(images, mask, steps=args.steps, seed=0),
               "with the input's label": pipe.inpaint(images, mask, steps=args.steps, seed=0, labels=labels)}
    inpainting = {name: {"same_digit": float(np.mean(read(out) == labels)),
                         "kept_half_max_change": float(np.abs(out - images)[..., :mask.shape[1] // 2].max())}
                  for name, out in painted.items()}
    lines = [f"`python benchmarks/picture_edits.py --digits {args.digits} --steps {args.steps}`: diffusion-digits, "
             f"{args.digits} held-out digits, {args.steps} steps of {pipe.config.sampler}, seed 0; the judge reads "
             f"the unedited digits at {np.mean(read(images) == labels):.1%} (held-out accuracy "
             f"{judge.test_accuracy:.1%}).", "",
             "| img2img strength | read as the input's digit | mean change per pixel | with the next digit's label "
             "(guidance 3): read as that digit |", "|---|---|---|---|"]
    lines += [f"| {r['strength']:g} | {r['same_digit']:.1%} | {r['mean_pixel_change']:.3f} | "
              f"{r['toward_other_digit']:.1%} |" for r in rows]
    lines += ["", "| inpainting the right half | read as the input's digit | largest change in the kept half |",
              "|---|---|---|"]
    lines += [f"| {name} | {r['same_digit']:.1%} | {r['kept_half_max_change']:g} |" for name, r in inpainting.items()]
    write_results(args.out, "picture_edits", {"machine": machine_info(), "digits": args.digits, "steps": args.steps,
                                              "img2img": rows, "inpainting": inpainting}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
