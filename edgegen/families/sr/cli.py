"""The command line of super-resolution packages: `edgegen upscale` and `edgegen generate --image`."""

from __future__ import annotations

import os

from ...errors import ConfigError
from ...families import GenerateRequest, Option
from .pipeline import output_mode

OPTIONS = (
    Option("--image", "image", "the picture to upscale (PNG, JPEG, ...); --out names the picture written, "
           "its format by extension (.png or .jpg)", {"metavar": "FILE"}),
    Option("--tile", "tile", "tile side in input pixels (default: the package's, 128)", {"type": int}),
    Option("--overlap", "overlap", "overlap of neighbouring tiles in input pixels (default: the package's, twice "
           "the model's receptive radius)", {"type": int}),
    Option("--tile-batch", "batch", "tiles per graph call (default: the package's, 4)", {"type": int}),
)


def generate(pipe, request: GenerateRequest) -> str:
    """`edgegen generate PKG --image in.png --out out.png`: the same as `edgegen upscale`."""
    options = dict(request.options)
    image = options.pop("image", None)
    if image is None:
        raise ConfigError("--image: expected the picture to upscale with a super-resolution package, found none")
    if request.out is None:
        raise ConfigError("--out: expected the picture file to write (.png or .jpg), found none")
    return upscale_file(pipe, image, request.out, **options)


def upscale_file(pipe, image: str | os.PathLike, out: str | os.PathLike, progress: bool | None = None, **options) -> str:
    """Read a picture, upscale it, write it (atomically, the format by extension); the line to print."""
    from ...images import picture_format, read_picture, write_picture

    picture = read_picture(image)
    picture_format(out, output_mode(picture))   # a bad --out is refused before the work, not after
    upscaled = pipe.upscale(picture, progress=progress, **options)
    write_picture(upscaled, out)
    return (f"wrote {out} ({upscaled.width}x{upscaled.height} {upscaled.mode}, x{pipe.scale} of {picture.width}x"
            f"{picture.height} by {pipe.package.manifest.name!r}, backend {pipe.backend}, {pipe.precision})")
