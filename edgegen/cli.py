"""The `edgegen` command. Errors a user can cause print one line and exit 2; --debug shows
the traceback. The training and export commands import torch only when they run."""

from __future__ import annotations

import argparse
import json
import sys
import traceback

from . import __version__
from .errors import EdgegenError

EXIT_USER_ERROR = 2


def _cmd_train(args) -> None:
    from .errors import ConfigError
    from .models.train import train

    options = {"latent_dim": args.latent_dim} if args.latent_dim else {}
    if args.base:
        if args.family != "controlnet":
            raise ConfigError(f"--base: expected only with controlnet (the diffusion checkpoint it controls), "
                              f"found it with {args.family}")
        options["base"] = args.base
    out = train(args.family, args.out, data=args.data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                seed=args.seed, image_size=args.image_size, channels=args.channels, overwrite=args.force, **options)
    print(f"wrote checkpoint {out}")


def _cmd_export(args) -> None:
    options = dict(data=args.data, opset=args.opset, name=args.name, overwrite=args.force)
    if args.from_transformers:
        from .export.hf_gpt2 import export_transformers

        out = export_transformers(args.checkpoint, args.from_transformers, args.out, **options)
    else:
        from .export import export_checkpoint

        out = export_checkpoint(args.checkpoint, args.out, **options)
    print(f"wrote package {out}")
    _print_info(out)


# generate's options that only some families take, by the keyword their sample() uses
_SAMPLING = {"steps": "steps", "sampler": "sampler", "guidance": "guidance_scale", "label": "labels", "eta": "eta"}
FAMILY_OPTIONS = {"diffusion": _SAMPLING,
                  "ldm": _SAMPLING,
                  "controlnet": {**_SAMPLING, "control": "control", "conditioning_scale": "conditioning_scale"},
                  "flow": {"temperature": "temperature"},
                  "pixelcnn": {"label": "labels", "temperature": "temperature"},
                  "cgan": {"label": "labels", "truncation": "truncation"},
                  "stylegan": {"truncation": "truncation_psi", "noise_mode": "noise_mode"}}


def _cmd_generate(args) -> None:
    from .errors import ConfigError
    from .images import save_grid
    from .progress import Progress
    from .runtimes import load

    pipe = load(args.package, backend=args.backend, threads=args.threads)
    if pipe.family == "gpt":
        return _generate_text(pipe, args)
    if pipe.family == "wavenet":
        return _generate_audio(pipe, args)
    if args.out is None:
        raise ConfigError(f"--out: expected the PNG file to write for a {pipe.family} package, found none")
    accepted = FAMILY_OPTIONS.get(pipe.family, {})
    options = {}
    for flag in dict.fromkeys(k for opts in FAMILY_OPTIONS.values() for k in opts):
        value = getattr(args, flag)
        if value is None:
            continue
        if flag not in accepted:
            raise ConfigError(f"--{flag.replace('_', '-')}: expected an option of {pipe.family} packages "
                              f"({', '.join('--' + f.replace('_', '-') for f in accepted) or 'none'}), found it")
        options[accepted[flag]] = value
    if pipe.family == "controlnet" and "control" not in options:
        raise ConfigError("--control: expected a picture for the samples of a controlnet package to follow, found none")
    if "control" in options:  # a picture whose coarse version the samples follow
        from .images import load_image

        options["control"] = pipe.hint(load_image(options["control"], pipe.image_shape))
    if "steps" in accepted:
        from .runtimes.pipelines.diffusion import DEFAULT_STEPS

        steps = options.get("steps", DEFAULT_STEPS)
        # check the sampler settings before the progress bar starts, so errors come alone
        pipe.make_sampler(options.get("sampler", "dpmpp-2m"), options.get("eta", 0.0)).check_steps(steps)
        with Progress(steps, "sampling") as bar:
            images = pipe.sample(args.n, seed=args.seed, callback=lambda i, t, x: bar.update(1), **options)
    else:
        images = pipe.sample(args.n, seed=args.seed, **options)
    if pipe.family == "flow" and not pipe.is_image:
        from .plots import save_density_plot

        save_density_plot(pipe, images, args.out)
        print(f"wrote {args.out} ({len(images)} samples over the learned log density, seed {args.seed})")
        return
    save_grid(images, args.out, nrow=args.nrow, scale=args.scale)
    print(f"wrote {args.out} ({len(images)} samples from {pipe.family} package, seed {args.seed}, backend {pipe.backend})")


def _generate_text(pipe, args) -> None:
    """Token packages: stream the continuation of --prompt to the terminal (and to --out)."""
    from .errors import ConfigError

    if args.prompt is None:
        raise ConfigError("--prompt: expected the text to continue for a gpt package, found none")
    options = dict(max_new_tokens=args.max_new_tokens, temperature=1.0 if args.temperature is None else args.temperature,
                   top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                   do_sample=not args.greedy, seed=args.seed, stop=args.stop, cache_budget_mb=args.cache_budget_mb)
    pieces = [args.prompt]
    print(args.prompt, end="", flush=True)
    for piece in pipe.stream(args.prompt, **options):
        pieces.append(piece)
        print(piece, end="", flush=True)
    print()
    if args.out:
        from .package import atomic_write_text

        atomic_write_text(args.out, "".join(pieces))
        print(f"wrote {args.out}", file=sys.stderr)


def _generate_audio(pipe, args) -> None:
    """WaveNet packages: --seconds of audio, sample by sample, to a WAV file."""
    from .errors import ConfigError
    from .runtimes.audio import write_wav

    if args.out is None or not str(args.out).lower().endswith(".wav"):
        raise ConfigError(f"--out: expected a .wav file to write for a wavenet package, found {args.out!r}")
    if args.seconds is None or not args.seconds > 0:
        raise ConfigError(f"--seconds: expected a positive duration for a wavenet package, found {args.seconds!r}")
    samples = max(1, round(args.seconds * pipe.sample_rate))
    audio = pipe.generate(samples, seed=args.seed, label=args.label,
                          temperature=1.0 if args.temperature is None else args.temperature)
    write_wav(args.out, audio, pipe.sample_rate)
    print(f"wrote {args.out} ({samples} samples, {samples / pipe.sample_rate:.2f} s at {pipe.sample_rate} Hz, "
          f"label {args.label}, seed {args.seed})")


def _cmd_bench(args) -> None:
    from .bench import bench_package, format_table, write_report

    report = bench_package(args.package, batch=args.batch, iters=args.iters, warmup=args.warmup,
                           backend=args.backend, threads=args.threads, vs_torch=args.vs_torch, precision=args.precision)
    print(f"{report['package']}: {report['family']}, backend {report['backend']}, precision {report['precision']}, "
          f"batch {report['batch']}, threads {report['threads']}, {report['iters']} iters; "
          f"peak RSS {report['peak_rss_mb']['runtime']} MB (runtime), {report['peak_rss_mb']['process']} MB (process)")
    if "generation" in report:
        g = report["generation"]
        print(f"greedy generation: {g['prompt_tokens']}-token prompts, {g['new_tokens']} new tokens; streamed at batch 1: "
              f"time to first token p50 {g['ttft_ms_p50']:.2f} ms (p90 {g['ttft_ms_p90']:.2f}), per output token "
              f"p50 {g['tpot_ms_p50']:.3f} ms (p90 {g['tpot_ms_p90']:.3f})")
    print(format_table(report))
    if args.json:
        write_report(report, args.json)
        print(f"wrote {args.json}")


def _abridged(value, longest: int = 8):
    """The config for a terminal: long lists of numbers (StyleGAN's average w) shortened."""
    if isinstance(value, dict):
        return {k: _abridged(v, longest) for k, v in value.items()}
    if isinstance(value, list) and len(value) > longest:
        return [*value[:3], f"... {len(value)} values"]
    return value


def _print_info(path) -> None:
    from .package import Package

    package = Package(path)
    m = package.manifest
    print(f"package   {package.path}")
    print(f"family    {m.family}   name {m.name!r}   format {m.format}")
    print(f"config    {json.dumps(_abridged(m.config))}")
    for part, g in m.graphs.items():
        size = package.graph_path(part).stat().st_size
        ins = ", ".join(f"{t.name}: {t.describe()}" for t in g.inputs)
        outs = ", ".join(f"{t.name}: {t.describe()}" for t in g.outputs)
        check = g.extra.get("validation", {})
        gate = (f"gate {'passed' if check.get('passed') else 'FAILED'} at batches {check.get('batches')}, "
                f"max abs diff {check.get('max_abs', float('nan')):.2g}") if check else "no gate record"
        print(f"graph     {part}: {g.file} ({size / 1024:.0f} KiB, sha256 {g.sha256[:12]}..., opset {g.extra.get('opset')})")
        print(f"            in  {ins}\n            out {outs}\n            {gate}")
    if not m.variants:
        print("variants  none (fp32 only; 'edgegen optimize' adds int8 / fp16)")
    for precision, parts in m.variants.items():
        for part, record in parts.items():
            gate = record.get("gate", {})
            verdict = (f"{record['file']} (gate {gate.get('line')}" + (f", {record['speedup_ort_cpu']:.2f}x fp32's speed on ort-cpu" if "speedup_ort_cpu" in record else "")
                       + ")") if "file" in record else f"not written: {record.get('refused')}"
            print(f"variant   {precision} {part}: {verdict}")
    p = m.provenance
    print(f"made by   edgegen {p.get('edgegen')}, torch {p.get('torch')}, onnx {p.get('onnx')}, opset {p.get('opset')}, "
          f"{p.get('created')}")


def _cmd_optimize(args) -> None:
    from .optimize import optimize_package

    optimize_package(args.package, args.precision, calibration=args.calibration, target=args.target,
                     checkpoint=args.checkpoint)
    _print_info(args.package)


def _cmd_check(args) -> int:
    from .check import check_package, format_checks

    checks = check_package(args.package, tensorrt=args.tensorrt, profiles=args.profile)
    print(format_checks(checks, args.tensorrt))
    return 0 if all(c.ok for c in checks) else 1   # 1: something will not parse


def _cmd_build(args) -> None:
    from .runtimes.engines import build_package

    engines = build_package(args.package, precision=args.precision, profiles=args.profile, cache_dir=args.cache_dir)
    print(f"{len(engines)} engine(s) ready in {next(iter(engines.values())).parent}")


def _cmd_info(args) -> None:
    _print_info(args.package)


def _cmd_doctor(args) -> None:
    from .doctor import format_report, report

    info = report()
    print(json.dumps(info, indent=2) if args.json else format_report(info))


def _cmd_demo(args) -> None:
    from .demo import run_demo

    index = run_demo(args.out, train_models=args.train, overwrite=args.force, iters=args.iters)
    print(f"wrote {index}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgegen", description="Generative models from PyTorch to fast edge engines.")
    parser.add_argument("--version", action="version", version=f"edgegen {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def runtime_options(p):
        p.add_argument("--backend", default="auto", help="auto, ort-cpu, ort-cuda or ort-tensorrt (default: auto)")
        p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: one per core)")

    p = sub.add_parser("train", help="train a model and write a checkpoint")
    p.add_argument("family", help="vae, gan, vaegan, cgan, stylegan, diffusion, controlnet, ldm, flow, gpt, pixelcnn "
                                  "or wavenet")
    p.add_argument("--data", default=None,
                   help="digits, natural, a folder of images; for flow also moons, circles, blobs; for gpt stdlib "
                        "(the Python standard library's source) or a UTF-8 text file; for wavenet tones (synthesized) "
                        "or a folder of WAV files (default: digits; gpt: stdlib; wavenet: tones)")
    p.add_argument("--out", required=True, help="checkpoint directory to write")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the family's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None, help="default: the family's (32; diffusion 8)")
    p.add_argument("--channels", type=int, choices=(1, 3), default=None, help="1 grey, 3 RGB (default: the data's own)")
    p.add_argument("--latent-dim", type=int, default=None)
    p.add_argument("--base", default=None, metavar="CHECKPOINT",
                   help="controlnet: the diffusion checkpoint to control (default: the shipped diffusion-digits)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("export", help="export a checkpoint to a validated model package")
    p.add_argument("checkpoint", help="checkpoint directory (or, with --from-transformers, the architecture: gpt2)")
    p.add_argument("--from-transformers", default=None, metavar="DIR",
                   help="import a Hugging Face save_pretrained directory (GPT-2) instead of an edgegen checkpoint")
    p.add_argument("--out", required=True, help="package directory to write")
    p.add_argument("--data", default=None, help="data for the validation gate (default: the training data)")
    p.add_argument("--opset", type=int, default=23)
    p.add_argument("--name", default=None)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("generate", help="sample from a package and write a PNG grid (or stream text)")
    p.add_argument("package")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="PNG file to write (gpt packages: optional text file)")
    p.add_argument("--nrow", type=int, default=None, help="images per row (default: square grid)")
    p.add_argument("--scale", type=int, default=None, help="pixel upscaling of the grid (default: to ~64 px a picture)")
    diffusion = p.add_argument_group("diffusion, ldm and controlnet packages")
    diffusion.add_argument("--steps", type=int, default=None, help="sampling steps (default 20)")
    diffusion.add_argument("--sampler", default=None, help="ddpm, ddim, dpmpp-2m, euler, euler-a (default dpmpp-2m)")
    diffusion.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 3)")
    diffusion.add_argument("--label", type=int, default=None,
                           help="class to generate (diffusion, pixelcnn, wavenet, cgan; default: unconditional, "
                                "for cgan random classes)")
    diffusion.add_argument("--eta", type=float, default=None, help="DDIM's eta (default 0)")
    p.add_argument("--temperature", type=float, default=None,
                   help="flow packages: latent temperature; gpt packages: softmax temperature (default 1)")
    p.add_argument("--seconds", type=float, default=None, help="wavenet packages: length of the audio to generate")
    p.add_argument("--truncation", type=float, default=None,
                   help="cgan packages: redraw latent values beyond this magnitude (e.g. 0.5; default none); "
                        "stylegan packages: truncation psi toward the average w (e.g. 0.7; default 1)")
    p.add_argument("--noise-mode", default=None, choices=("const", "random", "none"),
                   help="stylegan packages: the synthesis noise (default const)")
    p.add_argument("--control", default=None, metavar="IMAGE",
                   help="controlnet packages (required): a picture whose coarse version the samples follow")
    p.add_argument("--conditioning-scale", type=float, default=None,
                   help="controlnet packages: strength of the control (default 1; 0 = the base model)")
    text = p.add_argument_group("gpt packages (the continuation streams to the terminal)")
    text.add_argument("--prompt", default=None, help="text to continue")
    text.add_argument("--max-new-tokens", type=int, default=200)
    text.add_argument("--top-k", type=int, default=None)
    text.add_argument("--top-p", type=float, default=None)
    text.add_argument("--repetition-penalty", type=float, default=1.0)
    text.add_argument("--greedy", action="store_true", help="always take the most likely token")
    text.add_argument("--stop", action="append", default=None, help="stop at this text (repeatable)")
    text.add_argument("--cache-budget-mb", type=float, default=1024,
                      help="refuse a run whose KV cache (and prompt logits) would need more memory (default 1024)")
    runtime_options(p)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("bench", help="measure latency of a package's graphs")
    p.add_argument("package")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--iters", type=int, default=200, help="graph calls per engine (token packages: a tenth as many whole generations)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "fp16", "fused"),
                   help="run the package's int8 / fp16 / fused variants where it has them")
    p.add_argument("--vs-torch", default=None, metavar="CHECKPOINT",
                   help="also run PyTorch eager from this checkpoint, interleaved, and report the ratio")
    runtime_options(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("optimize", help="add int8 or fp16 variants of a package's graphs, each behind a quality gate")
    p.add_argument("package")
    p.add_argument("--precision", required=True, choices=("int8", "fp16", "fused"),
                   help="fused: fp32 after ONNX Runtime's transformer fusions (gpt packages, ort-cpu only)")
    p.add_argument("--calibration", type=int, default=64, help="int8: inputs to calibrate activation ranges on (default 64)")
    p.add_argument("--target", default="ort-cpu", choices=("ort-cpu", "tensorrt"),
                   help="ort-cpu keeps an int8 variant only where it is faster here; tensorrt keeps every one that passes its gate")
    p.add_argument("--checkpoint", default=None,
                   help="the checkpoint the package was exported from (default: the path its manifest records)")
    p.set_defaults(func=_cmd_optimize)

    p = sub.add_parser("check", help="without a GPU: what TensorRT's ONNX parser will refuse in a package")
    p.add_argument("package")
    p.add_argument("--target", default="tensorrt", choices=("tensorrt",))
    p.add_argument("--tensorrt", default="10.15", help="TensorRT version whose parser table to use: 10.15 or 10.3 (JetPack 6)")
    p.add_argument("--profile", action="append", default=None, metavar="NAME=MIN:OPT:MAX",
                   help="an optimization profile for a dynamic dim (repeatable), e.g. batch=1:4:8")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("build", help="build (or find in the cache) TensorRT engines for a package on this GPU")
    p.add_argument("package")
    p.add_argument("--backend", default="tensorrt", choices=("tensorrt",))
    p.add_argument("--precision", default="fp32", choices=("fp32", "int8", "fp16"))
    p.add_argument("--profile", action="append", default=None, metavar="NAME=MIN:OPT:MAX",
                   help="optimization profile of a dynamic dim (default: batch 1:1:16, others 1:1:their limit)")
    p.add_argument("--cache-dir", default=None, help="engine cache folder (default: PACKAGE/.edgegen-cache/tensorrt)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("info", help="show a package's manifest")
    p.add_argument("package")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("doctor", help="which backends and versions this machine has")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("demo", help="train/export/generate/bench every family and write demo/index.md")
    p.add_argument("--out", default="demo")
    p.add_argument("--train", action="store_true", help="train from scratch instead of using the shipped weights")
    p.add_argument("--iters", type=int, default=200, help="benchmark iterations per engine")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except EdgegenError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"edgegen: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("edgegen: interrupted", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
