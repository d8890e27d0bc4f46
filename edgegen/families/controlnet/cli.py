"""`edgegen generate` for ControlNet packages: --control is the picture the samples follow."""

from __future__ import annotations

from ...errors import ConfigError
from ...families import GenerateRequest, GenerationCall, Option
from ...wording import counted
from ..diffusion.cli import PICTURE_OPTIONS, SAMPLING_OPTIONS, benched_label, picture_fields, served_images
from ..diffusion.cli import check_generate as check_pictures
from ..diffusion.cli import generate as generate_diffusion

OPTIONS = (*SAMPLING_OPTIONS, *PICTURE_OPTIONS,
           Option("--control", "control", "(required) a picture whose coarse version the samples follow",
                  {"metavar": "FILE"}, served=False),
           Option("--conditioning-scale", "conditioning_scale", "strength of the control (0 = the base model)",
                  {"type": float}, 1.0))


def bench_generation(pipe, n: int, steps: int | None) -> GenerationCall:
    """`n` images following one mid-grey control picture, at the defaults `edgegen generate` takes:
    the base UNet and the ControlNet at every step."""
    import numpy as np

    from ..diffusion.pipeline import DEFAULT_STEPS

    steps = steps or DEFAULT_STEPS
    pipe.make_sampler(None, 0.0).timesteps(steps)   # refuses steps the package's sampler cannot take, before any timing
    hint = pipe.hint(np.full((1, *pipe.image_shape), 0.5, np.float32))
    label, guided = benched_label(pipe, n)   # a class-conditional base is used with a label
    return GenerationCall(lambda: pipe.sample(n, control=hint, steps=steps, seed=0, labels=label), n, "images",
                          f"{counted(n, 'image')} following one control picture, {steps} steps of "
                          f"{pipe.config.sampler}{guided}", steps)


def check_generate(options: dict, out: str | None) -> None:
    """Before the package loads: --control given, and the picture files opening as pictures."""
    if options.get("control") is None:
        raise ConfigError("--control: expected a picture for the samples of a controlnet package to follow, found none")
    check_pictures(options, out)


def generate(pipe, request: GenerateRequest) -> str:
    from ...images import load_image

    request.options["control"] = pipe.hint(load_image(request.options["control"], pipe.image_shape, "--control"))
    return generate_diffusion(pipe, request)


def served(config):
    """The served request (edgegen triton): the control picture as an array ([1 or n, C, H, W]
    in [0, 1], the package's image shape; with a picture to start from, 1 or one per image),
    made into the hint here as `edgegen generate` makes it from --control, the sampling options,
    and a picture to start from (the diffusion family's picture_fields); the images back."""
    from ...serving.requests import Field, Served, option_field

    def answer(pipe, arguments: dict):
        arguments = dict(arguments)
        arguments["control"] = pipe.hint(arguments["control"], "control")   # its NaN said as the request's input
        yield {"images": served_images(pipe, arguments, per_image=("control",))}

    picture = Field("control", "float32", (-1, *config.image_shape), required=True, form="array")
    inputs = (Field("n", "int64"), Field("seed", "int64"), picture, *(option_field(o) for o in OPTIONS if o.served),
              *picture_fields(config))
    return Served(inputs, (Field("images", "float32", (-1, *config.image_shape)),), answer)
