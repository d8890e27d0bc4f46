"""`edgegen generate` for diffusion packages (and the hybrids built on them): progress per step."""

from __future__ import annotations

from ...errors import ConfigError
from ...families import GenerateRequest, GenerationCall, Option
from ...runtimes.samplers import SAMPLERS
from .pipeline import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS

SAMPLING_OPTIONS = (
    Option("--steps", "steps", "sampling steps", {"type": int}, DEFAULT_STEPS),
    Option("--sampler", "sampler", f"one of {', '.join(SAMPLERS)} (default: the package's, {DEFAULT_SAMPLER} for edgegen's "
           "own models, the scheduler's for an imported diffusers pipeline)", {}),
    # no default here: the pipeline's applies, and a scale given without a --label is refused, whatever its value
    Option("--guidance", "guidance_scale", f"classifier-free guidance scale, with a --label (default: {DEFAULT_GUIDANCE:g})",
           {"type": float}),
    Option("--label", "labels", "class to generate (default: unconditional)", {"type": int}),
    Option("--eta", "eta", "DDIM's eta (0 = deterministic)", {"type": float}, 0.0),
)


def bench_generation(pipe, n: int, steps: int | None) -> GenerationCall:
    """`n` images at the defaults `edgegen generate` takes (or `steps`); a class-conditional model
    with a label, as it is used, so that guidance's batch of 2n is what is timed."""
    steps = steps or DEFAULT_STEPS
    pipe.make_sampler(None, 0.0).timesteps(steps)   # refuses steps the package's sampler cannot take, before any timing
    label = 0 if pipe.config.num_classes else None
    guided = f", label 0 at guidance {DEFAULT_GUIDANCE:g} (a batch of {2 * n} per call)" if label is not None else ""
    return GenerationCall(lambda: pipe.sample(n, steps=steps, seed=0, labels=label), n, "images",
                          f"{n} image{'s' * (n != 1)}, {steps} steps of {pipe.config.sampler}{guided}", steps)


def generate(pipe, request: GenerateRequest) -> str:
    from ...progress import Progress

    options = request.options
    if options.get("labels") is None and options.get("guidance_scale") is not None:
        # guidance steers toward a class: without one the samples are unconditional and it does nothing
        raise ConfigError(f"--guidance {options['guidance_scale']:g}: expected with --label (classifier-free guidance "
                          "steers the samples toward a class), found it without one" if pipe.config.num_classes else
                          f"--guidance {options['guidance_scale']:g}: expected a class-conditional package (guidance "
                          "steers the samples toward a --label), found an unconditional one")
    # check the sampler settings before the progress bar starts, so errors come alone
    calls = len(pipe.make_sampler(options.get("sampler"), options["eta"]).timesteps(options["steps"]))
    with Progress(calls, "sampling") as bar:
        images = pipe(request.n, seed=request.seed, callback=lambda i, t, x: bar.update(1), **options)
    return request.write_images(images)
