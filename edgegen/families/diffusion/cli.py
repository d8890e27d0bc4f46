"""`edgegen generate` for diffusion packages (and the hybrids built on them): from noise, or from a
picture (img2img, inpainting), with progress per step; and their served request."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import ConfigError, EdgegenError, InputError
from ...families import GenerateRequest, GenerationCall, Option, label_option
from ...runtimes.pipeline import check_count
from ...runtimes.samplers import SAMPLERS
from ...wording import counted
from .pipeline import DEFAULT_GUIDANCE, DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_STRENGTH

SAMPLING_OPTIONS = (
    Option("--steps", "steps", "sampling steps", {"type": int}, DEFAULT_STEPS),
    Option("--sampler", "sampler", f"one of {', '.join(SAMPLERS)} (default: the package's, {DEFAULT_SAMPLER} for edgegen's "
           "own models, the scheduler's for an imported diffusers pipeline)", {}),
    # no default here: the pipeline's applies, and a scale given without a --label is refused, whatever its value
    Option("--guidance", "guidance_scale", f"classifier-free guidance scale, with a --label (default: {DEFAULT_GUIDANCE:g})",
           {"type": float}),
    label_option("unconditional"),
    Option("--eta", "eta", "DDIM's eta (0 = deterministic)", {"type": float}, 0.0),
)

# files on the command line; a served request carries them as arrays (picture_fields)
PICTURE_OPTIONS = (
    Option("--image", "image", "a picture to start from instead of noise, resized to the package's image size: "
           "img2img, or inpainting with --mask (--n variations of it)", {"metavar": "FILE"}, served=False),
    Option("--strength", "strength", "img2img: how far --image is noised before it is denoised back (0: kept, 1: all "
           f"the way; default {DEFAULT_STRENGTH:g})", {"type": float}, served=False),
    Option("--mask", "mask", "inpainting: a picture, resized as --image is, whose white pixels are generated and whose "
           "black ones are kept from --image", {"metavar": "FILE"}, served=False),
)


def bench_generation(pipe, n: int, steps: int | None) -> GenerationCall:
    """`n` images at the defaults `edgegen generate` takes (or `steps`); a class-conditional model
    with a label, as it is used, so that guidance's batch of 2n is what is timed."""
    steps = steps or DEFAULT_STEPS
    pipe.make_sampler(None, 0.0).timesteps(steps)   # refuses steps the package's sampler cannot take, before any timing
    label, guided = benched_label(pipe, n)
    return GenerationCall(lambda: pipe.sample(n, steps=steps, seed=0, labels=label), n, "images",
                          f"{counted(n, 'image')}, {steps} steps of {pipe.config.sampler}{guided}", steps)


def benched_label(pipe, n: int) -> tuple[int | None, str]:
    """The label a bench of `n` images samples with (class 0 of a class-conditional model: guidance's
    batch of 2n is how it is used; None without classes), and how the bench's line says it."""
    if not pipe.config.num_classes:
        return None, ""
    name = f" ({pipe.class_names[0]})" if pipe.class_names else ""
    return 0, f", label 0{name} at guidance {DEFAULT_GUIDANCE:g} (a batch of {2 * n} per call)"


def generate(pipe, request: GenerateRequest) -> str:
    options = dict(request.options)
    if options.get("labels") is None and options.get("guidance_scale") is not None:
        # guidance steers toward a class: without one the samples are unconditional and it does nothing
        raise ConfigError(f"--guidance {options['guidance_scale']:g}: expected with --label (classifier-free guidance "
                          "steers the samples toward a class), found it without one" if pipe.config.num_classes else
                          f"--guidance {options['guidance_scale']:g}: expected a class-conditional package (guidance "
                          "steers the samples toward a --label), found an unconditional one")
    pictures = starting_pictures(pipe, options, request.n)
    images = sample_with_progress(pipe, options, pictures, request.seed,
                                  lambda callback: pipe(request.n, seed=request.seed, callback=callback, **options))
    return request.write_images(images)


def check_generate(options: dict, out: str | None) -> None:
    """Before the package loads (a shipped name's first export): the picture files given
    (--image, --mask, a ControlNet's --control) open as pictures."""
    from ...images import check_picture_file

    for keyword in ("image", "mask", "control"):
        if options.get(keyword) is not None:
            check_picture_file(options[keyword], f"--{keyword}")


def starting_pictures(pipe, options: dict, n: int) -> dict:
    """--image, --strength and --mask, taken out of `options` and their files read, as the
    pipeline's picture arguments (picture_arguments). A mask with nothing to generate at the
    package's size is refused: the run would return the picture after all its steps."""
    from ...images import load_image, load_mask_to_generate

    image, strength, mask = (options.pop(key, None) for key in ("image", "strength", "mask"))
    if mask is not None:
        mask = load_mask_to_generate(mask, pipe.image_shape, "--mask")
    return picture_arguments(None if image is None else load_image(image, pipe.image_shape, "--image"), strength, mask,
                             n, lambda keyword: f"--{keyword}")


def picture_arguments(image, strength, mask, n: int, named: Callable[[str], str], **per_image) -> dict:
    """The arguments of the pipeline's picture calls: {} to sample from noise; {"image",
    "strength"} for img2img; {"image", "mask"} for inpainting; and `per_image` arrays (a
    ControlNet's hints), rows of one for all or one per image. Each image's row is repeated for
    its n variations, as a per-image mask's or hint's. `named(keyword)`: how the caller gave it
    (a flag, a request input), for the refusals."""
    if image is None:
        for keyword, value, use in (("mask", mask, "inpaint"), ("strength", strength, "noise for img2img")):
            if value is not None:
                raise ConfigError(f"{named(keyword)}: expected with {named('image')} (the picture to {use}), found it "
                                  "without one")
        return {}
    if mask is not None and strength is not None:
        raise ConfigError(f"{named('strength')}: expected for img2img ({named('image')} without {named('mask')}), found "
                          f"it with {named('mask')}: inpainting generates the masked pixels from noise")
    n = check_count(n)
    rows = {"image": image, "mask": mask, **per_image}
    if np.ndim(image) == 4:   # other shapes: the pipeline names what it takes
        images = len(image)
        check_count(images * n, f"n x the {images} images of {named('image')}")
        for keyword, value in rows.items():
            if np.ndim(value) == 4 and len(value) not in (1, images):
                raise InputError(f"{named(keyword)}: expected 1 row, or one per image ({images}), found {len(value)}")
        rows = {keyword: np.repeat(np.asarray(value), n, axis=0)
                if keyword == "image" or (np.ndim(value) == 4 and len(value) > 1) else value   # one row broadcasts
                for keyword, value in rows.items()}
    arguments = {keyword: value for keyword, value in rows.items() if value is not None}
    if mask is None:
        arguments["strength"] = DEFAULT_STRENGTH if strength is None else strength
    return arguments


def sample_with_progress(pipe, options: dict, pictures: dict, seed: int | None, from_noise: Callable) -> np.ndarray:
    """The images `edgegen generate` writes: `from_noise(callback)`, or the pipeline's img2img or
    inpaint on `pictures` (picture_arguments) with `options`, under a progress bar of the model's
    steps; the sampler's settings are checked before the bar starts, so that errors come alone."""
    from ...progress import Progress

    run = pipe.make_sampler(options.get("sampler"), options["eta"])
    calls = len(run.timesteps(options["steps"]))
    if "strength" in pictures:   # img2img runs the schedule's last steps only
        calls -= pipe.img2img_start(run, options["steps"], pictures["strength"])
    if calls == 0:   # strength 0: the picture as it is, no step to count
        return from_picture(pipe, pictures, seed=seed, **options)
    with Progress(calls, "sampling") as bar:
        def callback(i, t, x):
            bar.update(1)

        return from_picture(pipe, pictures, seed=seed, callback=callback, **options) if pictures else from_noise(callback)


def from_picture(pipe, pictures: dict, **options) -> np.ndarray:
    """The pipeline's img2img on `pictures` (picture_arguments), or its inpaint where they have a mask."""
    return (pipe.inpaint if "mask" in pictures else pipe.img2img)(**pictures, **options)


# -- the served request ------------------------------------------------------------------------

PICTURE_INPUTS = ("image", "strength", "mask")


def picture_fields(config) -> tuple:
    """A served request's pictures, as the options above take them from files: `image`
    [k, C, H, W] in [0, 1] (n variations of each), `strength`, and `mask`
    [1 or k, 1 or C, H, W] of 0 (keep) and 1 (generate)."""
    from ...serving.requests import Field

    height, width = config.image_shape[1:]
    return (Field("image", "float32", (-1, *config.image_shape), form="array"), Field("strength", "float64"),
            Field("mask", "float32", (-1, -1, height, width), form="array"))


def served_images(pipe, arguments: dict, per_image: tuple[str, ...] = ()) -> np.ndarray:
    """A served request's images: from noise, or from its picture (picture_arguments), with the
    request's `per_image` inputs (a ControlNet's hints) repeated as its images are."""
    arguments = dict(arguments)
    n = arguments.pop("n", 1)
    image, strength, mask = (arguments.pop(key, None) for key in PICTURE_INPUTS)
    named = lambda keyword: f"request input {keyword!r}"   # noqa: E731
    if image is None:
        picture_arguments(None, strength, mask, n, named)   # refuses a mask or strength alone
        return pipe(n=n, **arguments)
    taken = {keyword: arguments.pop(keyword) for keyword in per_image if keyword in arguments}
    labels = arguments.get("labels")
    if isinstance(labels, list) and np.ndim(image) == 4 and n != 1 and len(labels) == len(image):
        arguments["labels"] = [label for label in labels for _ in range(n)]   # one per image, for its variations
    return from_picture(pipe, picture_arguments(image, strength, mask, n, named, **taken), **arguments)


def served(config):
    """The served request of diffusion and latent diffusion packages (edgegen triton): n, seed,
    the sampling options, and a picture to start from (picture_fields); the images back.
    Requests from noise that Triton's batcher queued together run as one batch (sample_batched);
    a request with a picture runs on its own."""
    from ...serving.requests import Field, Served, option_field

    def answer(pipe, arguments: dict):
        yield {"images": served_images(pipe, arguments)}

    def alone(pipe, call: dict) -> dict | EdgegenError:
        try:
            return {"images": served_images(pipe, call)}
        except EdgegenError as refused:   # this request's own answer; the others' stand
            return refused

    def answer_many(pipe, calls: list[dict]) -> list:
        with_picture = [any(key in call for key in PICTURE_INPUTS) for call in calls]
        from_noise = iter(pipe.sample_batched([call for call, picture in zip(calls, with_picture) if not picture]))
        return [alone(pipe, call) if picture else {"images": next(from_noise)} for call, picture in zip(calls, with_picture)]

    inputs = (Field("n", "int64"), Field("seed", "int64"), *(option_field(o) for o in SAMPLING_OPTIONS),
              *picture_fields(config))
    return Served(inputs, (Field("images", "float32", (-1, *config.image_shape)),), answer, answer_many=answer_many)
