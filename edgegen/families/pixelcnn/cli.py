"""`edgegen generate` for PixelCNN packages: samples from nothing, or a picture completed (its
pixels under --mask's white, or below --keep-rows, generated in raster order), which the Python
API's complete() did and the command line could not."""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError, InputError
from ...families import GenerateRequest, Option, label_option
from ...runtimes.pipeline import check_count

OPTIONS = (
    label_option("unconditional"),
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

    refuse_pixels_unsaid(*(options.get(key) for key in PICTURE_INPUTS), _flag)
    for keyword in ("image", "mask"):
        if options.get(keyword) is not None:
            check_picture_file(options[keyword], f"--{keyword}")


def generate(pipe, request: GenerateRequest) -> str:
    options = dict(request.options)
    image, mask, rows = (options.pop(key, None) for key in PICTURE_INPUTS)
    if image is None:
        return request.write_images(pipe(request.n, seed=request.seed, **options))
    from ...images import load_image, load_mask_to_generate

    picture = load_image(image, pipe.image_shape, "--image")
    todo = load_mask_to_generate(mask, pipe.image_shape, "--mask")[0, 0] if mask is not None else None
    return request.write_images(completed(pipe, picture, todo, rows, request.n, request.seed, options, _flag))


PICTURE_INPUTS = ("image", "mask", "keep_rows")


def _flag(keyword: str) -> str:
    return f"--{keyword.replace('_', '-')}"


def refuse_pixels_unsaid(image, mask, rows, named) -> None:
    """A mask or rows to keep without a picture, or a picture with neither or both of them.
    `named(keyword)`: how the caller gave it (a flag, a request input)."""
    for keyword, value in (("mask", mask), ("keep_rows", rows)):
        if value is not None and image is None:
            raise ConfigError(f"{named(keyword)}: expected with {named('image')} (the picture to complete), found it "
                              "without one")
    if image is not None and (mask is None) == (rows is None):
        raise ConfigError(f"{named('image')}: expected {named('mask')} or {named('keep_rows')} with it (the pixels to "
                          f"generate), found {'both' if mask is not None else 'neither'}")


def completed(pipe, image, mask, rows, n: int, seed, options: dict, named) -> np.ndarray:
    """`n` completions of each picture of `image` [k, 1, H, W], its pixels under `mask` (1:
    generate) or below the top `rows` generated. `named(keyword)`: how the caller gave it."""
    refuse_pixels_unsaid(image, mask, rows, named)
    todo = mask if mask is not None else _below_rows(rows, pipe.image_shape, named)
    check_count(n)
    if np.ndim(image) == 4 and np.ndim(todo) == 4 and len(todo) == len(image):   # one mask per picture: per completion
        todo = np.repeat(todo, n, axis=0)
    return pipe.complete(np.repeat(image, n, axis=0) if np.ndim(image) == 4 else image, todo, seed=seed, **options)


def _below_rows(rows, shape: tuple[int, int, int], named) -> np.ndarray:
    """--keep-rows N's mask [H, W]: 1 (generate) below the top N rows."""
    height = shape[1]
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or not 0 <= rows < height:
        raise InputError(f"{named('keep_rows')}: expected 0 to {height - 1} (rows kept of the package's {height}), "
                         f"found {rows}")
    todo = np.zeros(shape[1:], np.float32)
    todo[rows:] = 1
    return todo


def served(config):
    """The served request (edgegen triton): n, seed, the label and temperature, and a picture to
    complete: `image` [k, 1, H, W] in [0, 1] (n completions of each) with `mask` [1 or k, 1, H, W]
    (1: generate) or `keep_rows`; the images back."""
    from ...serving.requests import Field, Served, option_field

    height, width = config.image_shape[1:]

    def answer(pipe, arguments: dict):
        arguments = dict(arguments)
        n, seed = arguments.pop("n", 1), arguments.pop("seed", None)
        image, mask, rows = (arguments.pop(key, None) for key in PICTURE_INPUTS)
        named = lambda keyword: f"request input {keyword!r}"   # noqa: E731
        refuse_pixels_unsaid(image, mask, rows, named)
        yield {"images": pipe(n, seed=seed, **arguments) if image is None else
               completed(pipe, image, mask, rows, n, seed, arguments, named)}

    inputs = (Field("n", "int64"), Field("seed", "int64"), *(option_field(o) for o in OPTIONS if o.served),
              Field("image", "float32", (-1, *config.image_shape), form="array"),
              Field("mask", "float32", (-1, 1, height, width), form="array"), Field("keep_rows", "int64"))
    return Served(inputs, (Field("images", "float32", (-1, *config.image_shape)),), answer)
