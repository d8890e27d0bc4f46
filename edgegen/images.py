"""Image grids and pictures as PNG or JPEG: numpy and pillow only, so the runtime can write them."""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from .errors import EdgegenWarning, InputError, NonFiniteError
from .storage import atomic_write_bytes, refuse_nameless


MAX_GRID_PIXELS = 100 * 10**6   # a sample grid larger than this is a mistake (--scale 100000), not a picture


def average_pool(images: np.ndarray, factor: int) -> np.ndarray:
    """[n, C, H, W] averaged over factor x factor cells -> [n, C, H / factor, W / factor]."""
    n, c, h, w = images.shape
    return images.reshape(n, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


def grid_images(images) -> np.ndarray:
    """A grid's images as an array [n, 1 or 3, H, W] of floats, or InputError: uint8 pixels would be
    drawn white wherever they are above 0, and an empty batch has no grid."""
    try:
        array = np.asarray(images)
    except ValueError:   # a ragged list
        raise InputError(f"images: expected an array [n, 1 or 3, H, W], found a {type(images).__name__} of ragged "
                         "shape") from None
    if array.dtype.kind != "f":
        hint = " (divide uint8 pixels by 255)" if array.dtype == np.uint8 else ""
        raise InputError(f"images: expected floating-point pixels in [0, 1], found dtype {array.dtype}{hint}")
    if array.ndim != 4 or array.shape[1] not in (1, 3) or not array.shape[0]:
        raise InputError(f"images: expected [n, 1 or 3, H, W] with n of at least 1, found shape {list(array.shape)}")
    return array


# how far past [0, 1] a grid clips pixels: a flow's decode spans a little more (flow/pipeline.py's
# IMAGE_DOMAIN); further is another scale (0-255, [-1, 1]), which clipping would draw white or black
CLIPPED_BEYOND = 0.1


def grid(images: np.ndarray, nrow: int | None = None, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Tile [n, C, H, W] images in [0, 1] (floats; values a little beyond are clipped) into one
    uint8 HxWxC (or HxW) picture."""
    images = grid_images(images)
    n, c, h, w = images.shape
    if not np.isfinite(images).all():   # a NaN picture is an error, not a black PNG with exit status 0
        raise NonFiniteError(f"images: expected finite pixels, found NaN or Inf in {int((~np.isfinite(images)).any(axis=(1, 2, 3)).sum())} "
                             f"of {n} images")
    least, most = float(images.min()), float(images.max())
    if least < -CLIPPED_BEYOND or most > 1 + CLIPPED_BEYOND:   # other pixel scales, drawn white or black
        hint = " (0-255 pixels: divide by 255)" if most > 2 else " ([-1, 1] pixels: (x + 1) / 2)" if least < -0.5 else ""
        raise InputError(f"images: expected pixels in [0, 1] (up to {CLIPPED_BEYOND:g} beyond is clipped), found "
                         f"{least:.3g}..{most:.3g}{hint}")
    nrow = grid_columns(n, nrow)
    canvas = np.ones((c, *grid_size(n, h, w, nrow, pad)), dtype=np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // nrow) * (h + pad), pad + (i % nrow) * (w + pad)
        canvas[:, top:top + h, left:left + w] = image
    pixels = (np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8)
    if scale > 1:
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    return pixels[0] if c == 1 else pixels.transpose(1, 2, 0)


def grid_columns(count: int, nrow: int | None) -> int:
    """The pictures per row of a grid of `count`: `nrow`, at most `count` (no empty cells beside
    one row of all, as torchvision's make_grid), else about the square root."""
    if nrow is not None and (isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1):
        raise InputError(f"nrow: expected a positive number of images per row, found {nrow!r}")
    return min(nrow or math.ceil(math.sqrt(count)), count)


def grid_layout(count: int, nrow: int | None) -> tuple[int, int]:
    """(pictures per row, padding) of the grid save_grid writes: one picture unframed, so that it
    can be read back as a picture (generate --image); more in rows with 2 pixels between them."""
    return (1, 0) if count == 1 else (grid_columns(count, nrow), 2)


def grid_size(count: int, height: int, width: int, nrow: int, pad: int) -> tuple[int, int]:
    """The height and width of a grid of `count` pictures, `nrow` to a row, `pad` pixels between
    and around them (before any scale)."""
    return math.ceil(count / nrow) * (height + pad) + pad, nrow * (width + pad) + pad


def grid_scale(count: int, height: int, width: int, scale: int | None = None, nrow: int | None = None) -> int:
    """The pixel repetition of a grid of `count` pictures of height x width, `nrow` to a row:
    `scale`, or (None) the one that enlarges each to about 64 pixels; refused where the grid, its
    frame and padding counted, would pass MAX_GRID_PIXELS. generate asks before sampling, so that
    a grid too large is refused before minutes of work."""
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int) or scale < 1):
        raise InputError(f"scale: expected a positive integer, found {scale!r}")
    given, scale = scale, scale or max(1, round(64 / width))
    rows, columns = grid_size(count, height, width, *grid_layout(count, nrow))
    pixels = rows * columns * scale * scale
    if pixels > MAX_GRID_PIXELS:   # named by what to change: the scale given, else the count
        named = f"scale {scale}" if given is not None and scale > 1 else f"n {count}"
        ways = ["fewer images", *(["a smaller --scale"] if scale > 1 else []), *(["another --nrow"] if nrow else [])]
        raise InputError(f"{named}: expected a grid of at most {MAX_GRID_PIXELS // 10**6} megapixels, found "
                         f"{pixels / 1e6:.0f} megapixels{'' if given is not None else f' at the default scale {scale}'} "
                         f"({', '.join(ways[:-1])}{' or ' if len(ways) > 1 else ''}{ways[-1]})")
    return scale


def save_grid(images: np.ndarray, path: str | os.PathLike, nrow: int | None = None, scale: int | None = None) -> None:
    """Write the grid atomically as a PNG or JPEG, by the extension of `path`; the same images
    give the same bytes. scale: pixel repetition; default enlarges each picture to about 64 pixels.
    One image is written without the grid's white frame."""
    images = grid_images(images)
    picture_format(path, "L" if images.shape[1] == 1 else "RGB")
    scale = grid_scale(len(images), images.shape[-2], images.shape[-1], scale, nrow)
    # one sample is written as itself, unframed: it can be read back as a picture (generate --image)
    columns, pad = grid_layout(len(images), nrow)
    write_picture(Image.fromarray(grid(images, nrow=columns, pad=pad, scale=scale)), path)


def load_image(path: str | os.PathLike, shape: tuple[int, int, int], what: str = "image") -> np.ndarray:
    """A picture file as [1, C, H, W] in [0, 1], as a viewer shows it (read_picture, picture_rgb),
    resized to the model's shape (area average; the aspect not kept, as diffusers' image processor).
    `what`: the picture's name in a refusal (a command's flag)."""
    channels, height, width = picture_shape(shape)
    picture = _resized(path, width, height, "L" if channels == 1 else "RGB", what, 255)
    pixels = np.asarray(picture, dtype=np.float32) / 255.0
    return (pixels[None, None] if channels == 1 else pixels.transpose(2, 0, 1)[None]).copy()


def load_mask(path: str | os.PathLike, shape: tuple[int, int, int], what: str = "mask") -> np.ndarray:
    """An inpainting mask picture as [1, 1, H, W] (the H and W of the model's `shape`) of 0 (keep:
    black) and 1 (generate: white), resized; grey, and the edges resizing blurs, go to the nearer of
    the two (diffusers binarizes its mask at 0.5 too). Transparency is over black, kept: a mask is
    often white strokes on a transparent layer."""
    return (mask_levels(path, shape, what) >= 128).astype(np.float32)[None, None]


def load_mask_to_generate(path: str | os.PathLike, shape: tuple[int, int, int], what: str) -> np.ndarray:
    """load_mask's mask, refused where it has nothing to generate at the model's size: the run
    would return the picture after all its work. The refusal says why a mask drawn white came out
    empty (a thin or coloured stroke)."""
    mask = load_mask(path, shape, what)
    if not mask.any():
        height, width = picture_shape(shape)[1:]
        brightest = int(mask_levels(path, shape, what).max())
        why = ("the mask is black" if brightest == 0 else
               f"its brightest there is grey {brightest} of 255, and 128 and above generates: a stroke narrower "
               "than one of the package's pixels is averaged down as it is resized, and a coloured one is read by "
               "its brightness (pure red is 76): paint the area white, and wide enough")
        raise InputError(f"{what} {str(path)!r}: expected white pixels to generate, found none at the package's "
                         f"{width}x{height} ({why})")
    return mask


def mask_levels(path: str | os.PathLike, shape: tuple[int, int, int], what: str = "mask") -> np.ndarray:
    """A mask picture's grey levels [H, W] (0..255) at the model's size, as load_mask reads them: a
    coloured stroke by its brightness (pure red is 76, under the cut)."""
    _, height, width = picture_shape(shape)
    return np.asarray(_resized(path, width, height, "L", what, 0), dtype=np.uint8)


def picture_shape(shape) -> tuple[int, int, int]:
    """A model's picture shape (C, H, W): C of 1 or 3, H and W positive (a package's image_shape)."""
    try:
        channels, height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError(f"shape: expected a picture shape (C, H, W) such as a package's image_shape, found "
                         f"{shape!r:.60}") from None
    if channels not in (1, 3) or height < 1 or width < 1:
        raise InputError(f"shape: expected (C, H, W) with C 1 (grey) or 3 (RGB) and positive sides, found {tuple(shape)}")
    return channels, height, width


def _resized(path, width: int, height: int, mode: str, what: str, background: int) -> Image.Image:
    picture = picture_rgb(read_picture(path, least_side=max(width, height), what=what), path, what, background)
    return Image.fromarray(picture).convert(mode).resize((width, height), Image.Resampling.BOX)


PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
SIXTEEN_BIT_AS_I = ("PNG", "PPM")   # formats whose mode-I pictures hold 16-bit values (0..65535)
JPEG_QUALITY = 95


def read_picture(path: str | os.PathLike, least_side: int | None = None, what: str = "image") -> Image.Image:
    """An image file (PNG, JPEG or anything else Pillow reads), loaded into memory and turned
    upright: a camera stores a portrait photograph sideways with an EXIF tag saying so, and
    viewers turn it, so the picture a user sees is the one processed. `least_side`, where only
    a picture that small is needed: a JPEG is decoded at the smallest of its 1/2 to 1/8 scales
    whose sides are still at least that (a 24-megapixel photograph in 1/64 of the memory). `what`:
    the picture's name in a refusal."""
    with opened_picture(path, what) as image:
        if least_side is not None:
            image.draft(image.mode, (least_side, least_side))   # JPEG only; other formats ignore it
        warn_of_sixteen_bit_colour(image, f"{what} {str(path)!r}")
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image


def warn_of_sixteen_bit_colour(image: Image.Image, what: str) -> None:
    """Pillow reads a 16-bit colour PNG or TIFF (48 or 64 bits a pixel) as 8-bit RGB(A), its high bytes
    alone: said, since the picture's depth is lost (16-bit grey keeps its depth; a uint16 array
    of the pixels keeps a colour picture's). Known from the file's tiles, before load() drops them."""
    raw = [tile[3] for tile in getattr(image, "tile", None) or () if len(tile) > 3]
    raw = [r[0] if isinstance(r, tuple) and r else r for r in raw]   # a TIFF's ("RGB;16L", 0, 1), a PNG's "RGB;16B"
    if image.mode in ("RGB", "RGBA") and any(isinstance(r, str) and ";16" in r for r in raw):
        # grey with alpha too: Pillow reads a 16-bit one as RGBA; from the shell no array can be given
        warnings.warn(f"{what}: a 16-bit picture with colour or alpha, read at 8 bits a channel (Pillow has no 16-bit "
                      "mode for it), its low bytes dropped (from Python, a uint16 [height, width, 3] array of its "
                      "pixels keeps 16 bits)", EdgegenWarning, stacklevel=3)


def check_picture_file(path: str | os.PathLike, what: str = "image") -> None:
    """Refuse, from its header alone, a path that is no picture Pillow opens (a command's check
    before minutes of work; read_picture reads the pixels later)."""
    with opened_picture(path, what):
        pass


@contextlib.contextmanager
def opened_picture(path: str | os.PathLike, what: str):
    """Pillow's image at `path` (a file object too), its header read; what Pillow cannot open, or
    refuses as a decompression bomb, an InputError naming the picture."""
    if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
        raise InputError(f"{what} {str(path)!r}: expected a picture file, found a directory")
    try:
        with Image.open(path) as image:
            yield image
    except Image.DecompressionBombError as exc:
        raise InputError(f"{what} {str(path)!r}: expected a picture Pillow agrees to decode (at most "
                         f"{2 * Image.MAX_IMAGE_PIXELS} pixels, its guard against decompression bombs), found: {exc}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {str(path)!r}: expected a picture Pillow can read, found: {exc}") from None


def picture_rgb(image: Image.Image, path: str | os.PathLike, what: str = "image", background: int = 255) -> np.ndarray:
    """A Pillow image as uint8 RGB [H, W, 3]. Pillow's convert("RGB") would clip 16-bit grey to
    white, read a float image as black and drop the alpha channel, showing the colour hidden under
    transparent pixels: 16-bit grey is scaled, transparency composited over white (as a page shows
    it; or the grey `background`), and float images, which have no fixed range, refused."""
    # 16-bit grey: I;16, or I as Pillow opens a 16-bit PGM (and before 13 a 16-bit PNG)
    if image.mode.startswith("I;16") or (image.mode == "I" and image.format in SIXTEEN_BIT_AS_I):
        values = np.asarray(image)
        grey = (values.astype(np.float32) / 257.0).round().astype(np.uint8)
        if "transparency" in image.info:   # a PNG's tRNS: the one grey value that is transparent
            grey[values == image.info["transparency"]] = background
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.mode in ("F", "I"):
        raise InputError(f"{what} {str(path)!r}: expected 8- or 16-bit pixels, found "
                         f"{'floating-point' if image.mode == 'F' else '32-bit integer'} ones, which have no fixed range: "
                         "save it as an 8- or 16-bit PNG with the range you mean")
    try:
        if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
            over = Image.new("RGBA", image.size, (background, background, background, 255))
            return np.asarray(Image.alpha_composite(over, image.convert("RGBA")).convert("RGB"))
        return np.asarray(image.convert("RGB"))
    except ValueError as exc:   # a mode Pillow cannot convert
        raise InputError(f"{what} {str(path)!r}: expected a picture Pillow turns into RGB, found mode {image.mode} "
                         f"({exc})") from None


def picture_format(path: str | os.PathLike, mode: str) -> str:
    """The format a picture of Pillow `mode` is written in at `path` (by its extension), or
    InputError: a directory, an unknown extension, or an alpha channel for JPEG. Commands call
    it before their work, so a bad --out is refused before minutes of it."""
    if os.path.isdir(path):
        raise InputError(f"output {str(path)!r}: expected a picture file path, found a directory")
    suffix = os.path.splitext(str(path))[1].lower()
    for extension in PICTURE_FORMATS:   # ".png": splitext sees a name without an extension
        refuse_nameless(path, extension, "output")
    if suffix not in PICTURE_FORMATS:
        raise InputError(f"output {str(path)!r}: expected an extension among {', '.join(PICTURE_FORMATS)}, "
                         f"found {suffix or 'none'}")
    if PICTURE_FORMATS[suffix] == "JPEG" and mode not in ("L", "RGB"):
        kind = "one with an alpha channel" if "A" in mode or "a" in mode else "16-bit or other pixels"
        raise InputError(f"output {str(path)!r}: JPEG holds 8-bit grey or RGB pictures, found mode {mode} "
                         f"({kind}): write a .png")
    return PICTURE_FORMATS[suffix]


def write_picture(image: Image.Image, path: str | os.PathLike) -> None:
    """Write a Pillow image atomically, in the format its extension names (PNG or JPEG), with its
    ICC colour profile where it has one (an upscaled photograph's)."""
    kind = picture_format(path, image.mode)
    buffer = io.BytesIO()
    options = {"quality": JPEG_QUALITY} if kind == "JPEG" else {}
    if image.info.get("icc_profile"):
        options["icc_profile"] = image.info["icc_profile"]
    image.save(buffer, format=kind, **options)
    atomic_write_bytes(path, buffer.getvalue(), follow_symlink=True)
