"""The command line of super-resolution packages: `edgegen upscale` and `edgegen generate --image`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ...errors import ConfigError, InputError, OutputExistsError
from ...families import GenerateRequest, Option
from .pipeline import output_mode

if TYPE_CHECKING:
    from PIL.Image import Image

OPTIONS = (
    Option("--image", "image", "the picture to upscale (PNG, JPEG, ...); --out names the picture written, "
           "its format by extension (.png or .jpg)", {"metavar": "FILE"}, served=False),
    Option("--tile", "tile", "tile side in input pixels (default: the package's, 128)", {"type": int}),
    Option("--overlap", "overlap", "overlap of neighbouring tiles in input pixels (default: the package's, twice "
           "the model's receptive radius)", {"type": int}),
    Option("--tile-batch", "batch", "tiles per graph call, at most 16 (default: the package's, 4)", {"type": int}),
    # not served: a client could lift the cap that keeps one request from taking the server's memory
    Option("--max-megapixels", "max_megapixels", "the largest output allowed, in megapixels (default 256): a larger "
           "one is refused before any work", {"type": float}, served=False),
)


def check_generate(options: dict, out: str | None) -> None:
    """Before the package loads (a shipped name's first export): --image, readable and of a mode
    --out's format holds, --out, and the tiling values that are wrong for any package."""
    from ...images import picture_format

    if options.get("image") is None:
        raise ConfigError("--image: expected the picture to upscale with a super-resolution package, found none")
    if out is None:
        raise ConfigError("--out: expected the picture file to write (.png or .jpg), found none")
    picture_format(out, "RGB")
    check_picture_and_tiling(options["image"], out, options, "--image")


def check_picture_and_tiling(image: str | os.PathLike, out: str | os.PathLike, options: dict, what: str,
                             scale: int | None = None) -> None:
    """What an upscale refuses without the package: the picture's header (a file Pillow opens,
    of a mode --out's format holds; the pixels are read later), the tiling values that no package
    takes, and, where the scale is known (a shipped model's), an output past --max-megapixels."""
    from ...images import opened_picture, picture_format
    from .pipeline import MAX_OUTPUT_MEGAPIXELS, check_output_size, tiling

    tiling(options.get("tile"), options.get("overlap"), options.get("batch"), None)
    with opened_picture(image, what) as picture:
        picture_format(out, output_mode(picture, f"{what} {str(image)!r}"))
        size = (picture.height, picture.width)
    if scale is not None:
        max_megapixels = options.get("max_megapixels")
        check_output_size(size, scale, MAX_OUTPUT_MEGAPIXELS if max_megapixels is None else max_megapixels)


def generate(pipe, request: GenerateRequest) -> str:
    """`edgegen generate PKG --image in.png --out out.png`: the same as `edgegen upscale`, but an
    existing --out is replaced, as generate replaces every family's output."""
    options = dict(request.options)
    image = options.pop("image")
    return upscale_picture(pipe, read_for_upscale(image, request.out, replace=True), request.out, **options)


def read_for_upscale(image: str | os.PathLike, out: str | os.PathLike, replace: bool) -> Image:
    """The picture to upscale, read, once --out is known to be writable as asked: its format
    fits the picture (no alpha in a JPEG), it is not the input itself, and it is new unless
    `replace`. Called before any work, so a bad --out is refused before minutes of it."""
    from ...images import picture_format, read_picture
    from ...package import refuse_output_inside_edgegens
    from ...storage import check_writable

    check_writable(out, "output")   # a file or a locked folder on its way: refused before the upscale
    refuse_output_inside_edgegens("output", out)   # as generate's --out: a file added there blocks --force
    picture = read_picture(image)
    picture_format(out, output_mode(picture, f"image {str(image)!r}"))
    if os.path.exists(out):
        if os.path.exists(image) and os.path.samefile(image, out):
            raise InputError(f"output {str(out)!r}: expected a file other than the picture being upscaled, found "
                             "the input itself (write the upscale beside it)")
        if not replace:
            raise OutputExistsError(f"output {str(out)!r}: expected a new file, found one already there (--force "
                                    "replaces it)")
    return picture


def upscale_picture(pipe, picture: Image, out: str | os.PathLike, progress: bool | None = None, **options) -> str:
    """Upscale a picture read by read_for_upscale and write it (atomically, the format by
    extension); the line to print."""
    from ...images import write_picture

    upscaled = pipe.upscale(picture, progress=progress, **options)
    write_picture(upscaled, out)
    return (f"wrote {out} ({upscaled.width}x{upscaled.height} {upscaled.mode}, x{pipe.scale} of {picture.width}x"
            f"{picture.height} by {pipe.package.manifest.name!r}, backend {pipe.backend}, {pipe.precision})")


def served(config):
    """The served request (edgegen triton): the picture as an array ([H, W] or [H, W, C], uint8)
    and the tiling options; `upscaled` back in the same form."""
    from ...serving.requests import Field, Served, option_field

    def answer(pipe, arguments: dict):
        arguments = dict(arguments)
        yield {"upscaled": pipe.upscale(arguments.pop("image"), **arguments)}

    picture = Field("image", "uint8", (-1, -1, -1), required=True, form="array")
    inputs = (picture, *(option_field(o) for o in OPTIONS if o.served))
    return Served(inputs, (Field("upscaled", "uint8", (-1, -1, -1)),), answer)
