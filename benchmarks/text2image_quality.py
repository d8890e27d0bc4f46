"""The shipped text2image-digits through the runtime, 20 DPM-Solver++ steps, at several guidance
scales: how often the digit classifier reads the digit asked for, how many samples lie on the
requested side of their digit's median ink ("thick"/"thin"), the per-digit ink moved, and the
Frechet distance to held-out digits beside the training digits' own (docs/diffusers.md).
`--precision int8` judges a package's int8 variants (results as text2image_quality_int8): on
ort-cpu optimize refuses the UNet's, so make them for TensorRT on a copy first (of the folder
`edgegen info text2image-digits` names):

    python benchmarks/text2image_quality.py [--package text2image-digits] [--per-caption 20] [--out benchmarks/results]
    cp -r PACKAGE /tmp/t2i && edgegen optimize /tmp/t2i --precision int8 --target tensorrt
    python benchmarks/text2image_quality.py --package /tmp/t2i --precision int8
"""

from __future__ import annotations

import argparse

from edgegen.bench import machine_info, write_results
from edgegen.families.text2image.quality import caption_quality
from edgegen.runtimes import load
from edgegen.training.classifier import train_digit_judge

GUIDANCES = (1.0, 1.5, 2.0, 4.0, 7.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package", default="text2image-digits", help="a package path or a shipped name")
    parser.add_argument("--per-caption", type=int, default=20, help="samples of each of the 20 prompts")
    parser.add_argument("--precision", default="fp32", help="the package's variants to judge (default fp32)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    pipe = load(args.package, backend="ort-cpu", precision=args.precision)
    graphs = ", ".join(f"{part} {precision}" for part, precision in pipe.graph_precisions.items())
    judge = train_digit_judge(8)
    rows = [caption_quality(pipe, per_caption=args.per_caption, guidance_scale=g, judge=judge) for g in GUIDANCES]
    flag = "" if args.precision == "fp32" else f" --precision {args.precision}"
    lines = [f"`python benchmarks/text2image_quality.py --per-caption {args.per_caption}{flag}`: {rows[0]['samples']} "
             f"samples per row (\"a thin/thick DIGIT\", each digit), 20 DPM-Solver++ steps, graphs: {graphs}; the judge "
             f"reads held-out digits at {judge.test_accuracy:.1%}.", "",
             "| guidance | digit read as asked | on the asked side of the median ink | ink thick minus thin, per digit (min to max) | Frechet distance (training digits: "
             f"{rows[0]['frechet_distance_training_digits']:.2f}) |", "|---|---|---|---|---|"]
    lines += [f"| {r['guidance_scale']:g} | {r['digit_accuracy']:.1%} | {r['attribute_agreement']:.1%} | "
              f"{min(r['ink_thick_minus_thin']):.1f} to {max(r['ink_thick_minus_thin']):.1f} | {r['frechet_distance']:.2f} |"
              for r in rows]
    name = "text2image_quality" + ("" if args.precision == "fp32" else f"_{args.precision}")
    write_results(args.out, name, {"machine": machine_info(), "precision": args.precision, "graphs": pipe.graph_precisions,
                                   "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
