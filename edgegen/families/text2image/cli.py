"""`edgegen generate PKG --prompt "..."` for text-to-image packages: progress per model call."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError
from ...families import GenerateRequest, GenerationCall, Option
from ...wording import counted
from ..diffusion.cli import (PICTURE_OPTIONS, SAMPLING_OPTIONS, picture_fields, sample_with_progress, served_images,
                             starting_pictures)
from ..diffusion.cli import check_generate as check_pictures
from ..diffusion.pipeline import DEFAULT_STEPS
from .pipeline import DEFAULT_TEXT_GUIDANCE

OPTIONS = (
    Option("--prompt", "prompt", "(required) the text to picture"),
    Option("--negative-prompt", "negative_prompt", "what guidance steers away from (default: the empty prompt)"),
    *(o for o in SAMPLING_OPTIONS if o.keyword in ("steps", "sampler", "eta")),
    Option("--guidance", "guidance_scale", "classifier-free guidance scale (1 or less: off)", {"type": float},
           DEFAULT_TEXT_GUIDANCE),
    *PICTURE_OPTIONS,
)


# short enough for any text encoder's max_length (8 tokens for text2image-digits), so that bench warns of
# no cut; its length does not change the time, since every prompt is padded to max_length. A model trained
# here times its first example caption (export.captions_described), words it knows.
BENCH_PROMPT = "a thick seven"


def bench_generation(pipe, n: int, steps: int | None) -> GenerationCall:
    """`n` images of one prompt at the defaults `edgegen generate` takes (or `steps`): the text
    encoder once, the UNet at every step (guidance's batch of 2n), the decoder once."""
    steps = steps or DEFAULT_STEPS
    pipe.make_sampler(None, 0.0).timesteps(steps)   # refuses steps the package's sampler cannot take, before any timing
    guided = f", guidance {DEFAULT_TEXT_GUIDANCE:g} (a batch of {2 * n} per UNet call)" if DEFAULT_TEXT_GUIDANCE > 1 else ""
    prompt = (pipe.config.data.get("captions", {}).get("examples") or [BENCH_PROMPT])[0]
    return GenerationCall(lambda: pipe.sample(prompt, n=n, steps=steps, seed=0), n, "images",
                          f"{counted(n, 'image')} of one prompt, {steps} steps of {pipe.config.sampler}{guided}", steps)


def check_generate(options: dict, out: str | None) -> None:
    """Before the package loads: --prompt, and the picture files opening as pictures."""
    if options.get("prompt") is None:
        raise ConfigError("--prompt: expected the text to picture for a text2image package, found none")
    check_pictures(options, out)


def generate(pipe, request: GenerateRequest) -> str:
    options = dict(request.options)
    pictures = starting_pictures(pipe, options, request.n)
    images = sample_with_progress(pipe, options, pictures, request.seed,
                                  lambda callback: pipe(n=request.n, seed=request.seed, callback=callback, **options))
    return request.write_images(images)


def served(config):
    """The served request (edgegen triton): n, seed, the options above, and a picture to start
    from (the diffusion family's picture_fields); the images back."""
    from ...serving.requests import Field, Served, option_field

    def answer(pipe, arguments: dict):   # the prompt is a required input: arguments() refuses a request without it
        yield {"images": np.asarray(served_images(pipe, arguments))}

    inputs = (Field("n", "int64"), Field("seed", "int64"), *(option_field(o) for o in OPTIONS if o.served),
              *picture_fields(config))
    return Served(inputs, (Field("images", "float32", (-1, *config.image_shape)),), answer)
