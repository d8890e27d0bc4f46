"""`edgegen generate` for PixelCNN packages: samples from nothing, or a picture completed (its
pixels under --mask's white, or below --keep-rows, generated in raster order), which the Python
API's complete() did and the command line could not."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError, InputError
from ...families import GenerateRequest, Option

OPTIONS = (
    Option("--label", "labels", "class to generate (default: unconditional)", {"type": int}),
    Option("--temperature", "temperature", "softmax temperature", {"type": float}, 1.0),
    Option("--image", "image", "a picture to complete (--n completions of it), resized to the package's size and read "
           "as grey: with --mask or --keep-rows, which say the pixels to generate", {"metavar": "FILE"}, served=False),
    Option("--mask", "mask", "with --image: a picture, resized as --image is, whose white pixels are generated (in "
           "raster order: each sees only the pixels above it and to its left) and whose black ones are kept",
           {"metavar": "FILE"}, served=False),
    Option("--keep-rows", "keep_rows", "with --image: keep its top N rows (at the package's size) and generate the rest",
           {"type": int, "metavar": "N"}, served=False),
)


def check_generate(options: dict, out: str | None) -> None:
    """Before the package loads: --mask or --keep-rows only with --image, one of them with it, and
    the files open as pictures."""
    from ...images import check_picture_file

    image, mask, rows = options.get("image"), options.get("mask"), options.get("keep_rows")
    for flag, value in (("--mask", mask), ("--keep-rows", rows)):
        if value is not None and image is None:
            raise ConfigError(f"{flag}: expected with --image (the picture to complete), found it without one")
    if image is not None and (mask is None) == (rows is None):
        raise ConfigError(f"--image: expected --mask or --keep-rows with it (the pixels to generate), found "
                          f"{'both' if mask is not None else 'neither'}")
    for keyword in ("image", "mask"):
        if options.get(keyword) is not None:
            check_picture_file(options[keyword], f"--{keyword}")


def generate(pipe, request: GenerateRequest) -> str:
    options = dict(request.options)
    image, mask, rows = (options.pop(key, None) for key in ("image", "mask", "keep_rows"))
    if image is None:
        return request.write_images(pipe(request.n, seed=request.seed, **options))
    from ...images import load_image, load_mask_to_generate

    picture = load_image(image, pipe.image_shape, "--image")
    todo = (load_mask_to_generate(mask, pipe.image_shape, "--mask")[0, 0] if mask is not None
            else _below_rows(rows, pipe.image_shape))
    completed = pipe.complete(np.repeat(picture, request.n, axis=0), todo, seed=request.seed, **options)
    return request.write_images(completed)


def _below_rows(rows: int, shape: tuple[int, int, int]) -> np.ndarray:
    """--keep-rows N's mask [H, W]: 1 (generate) below the top N rows."""
    height = shape[1]
    if not 0 <= rows < height:
        raise InputError(f"--keep-rows: expected 0 to {height - 1} (rows kept of the package's {height}), found {rows}")
    todo = np.zeros(shape[1:], np.float32)
    todo[rows:] = 1
    return todo
