"""`edgegen generate` for ControlNet packages: --control is the picture the samples follow."""

from __future__ import annotations

from ...errors import ConfigError
from ...families import GenerateRequest, Option
from ..diffusion.cli import SAMPLING_OPTIONS
from ..diffusion.cli import generate as generate_diffusion

OPTIONS = (*SAMPLING_OPTIONS,
           Option("--control", "control", "(required) a picture whose coarse version the samples follow",
                  {"metavar": "IMAGE"}, served=False),
           Option("--conditioning-scale", "conditioning_scale", "strength of the control (0 = the base model)",
                  {"type": float}, 1.0))


def generate(pipe, request: GenerateRequest) -> str:
    from ...images import load_image

    if request.options.get("control") is None:
        raise ConfigError("--control: expected a picture for the samples of a controlnet package to follow, found none")
    request.options["control"] = pipe.hint(load_image(request.options["control"], pipe.image_shape))
    return generate_diffusion(pipe, request)
