"""The super-resolution pipeline: an image of any size in, `scale` times larger out, tiled.

The image is cut into overlapping tiles, which run through the graph in batches; each output
pixel is taken from the tiles that saw its whole receptive field (`receptive_radius`
low-resolution pixels of context on every side), blended linearly across the rest of the
overlap. With an overlap of at least twice the radius (the default) the tiled result equals
the untiled one to float precision, so no seam can show; with less, the blend hides it.

Memory: the graph's is bounded by the tile size. The pipeline holds the input (as float32), the
result (in its own dtype, written band by band) and one tile row's band of float output (tile x
scale rows of the output's width); no float copy of the whole result is made, except of an alpha
channel, which is upscaled whole.

Grey images go through the model as RGB and come back as luma; an alpha channel is upscaled
plainly (bicubic). uint8 and uint16 arrays come back in their dtype, floats in [0, 1] as float32,
and Pillow images as Pillow images of the same mode (palette, CMYK and other colour modes as RGB,
with alpha where the picture has transparency; 16-bit grey stays 16-bit).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ...errors import InputError
from ...families import RuntimeConfig, positive
from ...images import warn_of_sixteen_bit_colour
from ...progress import Progress
from ...runtimes.pipeline import Pipeline, check_callback, check_progress, user_array
from .degrade import bicubic, from_integers, to_integers

GRAPH, INPUT, OUTPUT = "upscaler", "image", "upscaled"
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)   # ITU-R 601, as Pillow's "L" conversion
MAX_OUTPUT_MEGAPIXELS = 256.0    # a request beyond this is refused (pass max_megapixels to go further)
MAX_TILE_BATCH = 16              # tiles per graph call: TensorRT's profile is built up to it
TRAINED_SCALES = (2, 3, 4)       # the upscale factors edgegen trains (model.py)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")   # 16-bit grey (16-bit PNGs): upscaled as I;16
COLOUR_MODES = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")     # converted to RGB, as Pillow converts them
# an ICC profile's colour space (its header's bytes 16-19) that describes the pixels of each output mode
PROFILE_SPACES = {"L": b"GRAY", "LA": b"GRAY", "I;16": b"GRAY", "RGB": b"RGB ", "RGBA": b"RGB "}
EXIF_ORIENTATION = 0x0112                            # the EXIF tag of a camera's sideways storage


@dataclass(kw_only=True)
class SRConfig(RuntimeConfig):
    """The upscale factor, the model's context radius, and the tiling defaults."""
    scale: int
    receptive_radius: int       # low-resolution pixels of context each output pixel sees on each side
    tile: int = 128             # default tile side, in input pixels
    overlap: int = 16           # default overlap between neighbouring tiles, in input pixels
    tile_batch: int = 4         # tiles per graph call (at most MAX_TILE_BATCH)
    max_tile: int = 512         # the largest tile side (TensorRT's profile is built up to it)
    data: dict = field(default_factory=dict)

    def problems(self) -> list[str]:
        problems = positive(self, "scale", "tile", "tile_batch", "max_tile")
        if self.tile_batch > MAX_TILE_BATCH:
            problems.append(f"tile_batch expected at most {MAX_TILE_BATCH}, found {self.tile_batch}")
        if self.receptive_radius < 0 or not 0 <= self.overlap < self.tile <= self.max_tile:
            problems.append(f"tiling expected 0 <= overlap < tile <= max_tile and receptive_radius >= 0, found overlap "
                            f"{self.overlap}, tile {self.tile}, max_tile {self.max_tile}, radius {self.receptive_radius}")
        return problems

    def graph_problems(self, graphs: dict) -> list[str]:
        """The graph upscales by `scale`: an edited scale pasted the graph's tiles onto a grid of
        another size (exit 0, a scrambled picture), or failed in numpy's broadcasting."""
        entry = graphs.get(GRAPH)
        specs = {t.name: t.shape for t in (*entry.inputs, *entry.outputs)} if entry else {}
        if INPUT not in specs or OUTPUT not in specs or len(specs[INPUT]) != 4 or len(specs[OUTPUT]) != 4:
            return []   # the graph's own checks say what it lacks
        for axis in (2, 3):
            factor = _factor(specs[INPUT][axis], specs[OUTPUT][axis])
            if factor is not None and factor != self.scale:
                return [f"scale {self.scale}: expected {OUTPUT} of graph {GRAPH!r} to be {self.scale} times {INPUT} at "
                        f"axis {axis}, found {specs[OUTPUT][axis]} (a x{factor} model)"]
        return []


def _factor(inside, outside) -> int | None:
    """How many times `inside` a dim `outside` is: static sizes, or the exporter's symbolic
    "4*height" for "height"; None where it cannot be told."""
    if isinstance(inside, int) and isinstance(outside, int):
        return outside // inside if inside and outside % inside == 0 else None
    if isinstance(inside, str) and isinstance(outside, str):
        found = re.fullmatch(rf"(\d+)\*{re.escape(inside)}|{re.escape(inside)}\*(\d+)", outside)
        return int(found[1] or found[2]) if found else None
    return None


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one axis start: every `tile - overlap` pixels, the last one flush
    with the end (so it overlaps its neighbour by at least `overlap`)."""
    if length <= tile:
        return [0]
    return [*range(0, length - tile, tile - overlap), length - tile]


def blend_weights(length: int, starts: list[int], tile: int, overlap: int, radius: int) -> list[np.ndarray]:
    """One weight vector per tile along an axis, summing to 1 at every pixel. A pixel nearer than
    `margin` to a tile's inner edge (one inside the image) gets no weight from that tile, since
    part of its context was cut off there; the weight then ramps up to 1 across the rest of the
    overlap. Every pixel has at least `overlap // 2` of context in some tile, so the margin is
    the radius where the overlap allows it, else half the overlap."""
    size = min(tile, length)
    margin = min(radius, overlap // 2)
    ramp = max(overlap - 2 * margin, 0)
    position = np.arange(size)
    raw = []
    for start in starts:
        to_left = position if start > 0 else np.full(size, np.inf)
        to_right = size - 1 - position if start + size < length else np.full(size, np.inf)
        distance = np.minimum(to_left, to_right)
        raw.append(np.clip((distance - margin + 1) / (ramp + 1), 0.0, 1.0))
    total = np.zeros(length)
    for start, weights in zip(starts, raw):
        total[start:start + size] += weights
    return [(weights / total[start:start + size]).astype(np.float32) for start, weights in zip(starts, raw)]


class SRPipeline(Pipeline):
    family = "sr"
    stoppable = True   # callback= in its loops (docs/serving.md: a cancelled request stops)
    counts = "tiles"

    def __call__(self, image, **kwargs):
        return self.upscale(image, **kwargs)

    @property
    def scale(self) -> int:
        return self.config.scale

    def upscale(self, image, tile: int | None = None, overlap: int | None = None, batch: int | None = None,
                max_megapixels: float = MAX_OUTPUT_MEGAPIXELS, progress: bool | None = False,
                callback: Callable[[int, int], Any] | None = None):
        """`image` upscaled `scale` times: a Pillow image (L, LA, RGB, RGBA, P, 1, I;16, CMYK), or
        an array [H, W] (grey), [H, W, 1|2|3|4], uint8, uint16 or float in [0, 1]. The result has the
        input's form, its values in the input's range.

        tile / overlap: in input pixels (default the package's); batch: tiles per graph call;
        max_megapixels: the largest output allowed (a mistaken size fails fast, not out of memory).
        callback(tiles done, tiles) is called after each graph call: a service's progress, or an
        exception raised there stops the call (a client gone, a deadline)."""
        callback = check_callback(callback, "(tiles done, tiles)")
        progress = check_progress(progress)   # before the picture's conversion, as the callback
        if _is_pil(image):
            return self._upscale_pil(image, tile, overlap, batch, max_megapixels, progress, callback)
        pixels = _pixel_array(image)
        self._check_size(pixels.shape[:2], max_megapixels)   # before the float copy and the range scan
        out = self._upscale_planes(*_as_planes(pixels), tile, overlap, batch, progress, callback)
        return out[:, :, 0] if np.ndim(image) == 2 else out

    def upscale_rgb(self, image: np.ndarray, tile: int | None = None, overlap: int | None = None,
                    batch: int | None = None, progress: bool | None = False) -> np.ndarray:
        """[3, H, W] float32 in [0, 1] -> [3, scale H, scale W] float32 in [0, 1] (the graph clips),
        unrounded: the tiled graph calls, for evaluation."""
        progress = check_progress(progress)
        _, height, width = image.shape
        out = np.empty((3, height * self.scale, width * self.scale), np.float32)

        def keep(rows: np.ndarray, top: int) -> None:
            out[:, top:top + rows.shape[1]] = rows

        self._tiled(image, keep, tile, overlap, batch, progress)
        return out

    def _tiled(self, image: np.ndarray, finish, tile, overlap, batch, progress, callback=None) -> None:
        """Run [3, H, W] float32 through the graph tile by tile, handing each band of finished
        output rows ([3, n, scale W] float32, and the output row it starts at) to `finish`, top
        to bottom. Only one tile row's output is held at a time: the band that tile row covers,
        with the part the row above already added where they overlap. So the working memory
        grows with the tile and the image's width, not its height."""
        c = self.config
        tile, overlap, batch = tiling(tile, overlap, batch, c)
        _, height, width = image.shape
        rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
        row_weights = blend_weights(height, rows, tile, overlap, c.receptive_radius)
        col_weights = blend_weights(width, cols, tile, overlap, c.receptive_radius)
        th, tw, s = min(tile, height), min(tile, width), c.scale
        band = np.zeros((3, th * s, width * s), dtype=np.float32)
        band_top, band_row = 0, 0      # the output row band[:, 0] stands for; the tile row it holds
        tiles = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
        session = self.sessions[GRAPH]
        # progress False: silent (the Python default); None: a bar on a terminal, and in a log a line a
        # minute and one at the end
        with Progress(len(tiles), "upscale", enabled=progress) as bar:
            for first in range(0, len(tiles), batch):
                chunk = tiles[first:first + batch]
                feed = np.stack([image[:, rows[i]:rows[i] + th, cols[j]:cols[j] + tw] for i, j in chunk])
                result = session.run({INPUT: np.ascontiguousarray(feed)})[OUTPUT]
                for (i, j), upscaled in zip(chunk, result):
                    if i != band_row:   # a new tile row: the output rows above its top are finished
                        band_top, band_row = _slide(band, band_top, rows[i] * s, finish), i
                    _paste(band, upscaled, rows[i] * s - band_top, cols[j] * s, row_weights[i].repeat(s),
                           col_weights[j].repeat(s))
                bar.update(len(chunk))
                if callback is not None:
                    callback(first + len(chunk), len(tiles))
        finish(band[:, :height * s - band_top], band_top)

    def _upscale_planes(self, planes: np.ndarray, dtype, tile, overlap, batch, progress, callback=None) -> np.ndarray:
        """[1|2|3|4, H, W] float32 in [0, 1] -> [scale H, scale W, same planes] of `dtype`: colour
        through the model (grey as RGB, its luma taken back), alpha upscaled bicubic. The result is
        written band by band into the one output array, in its own dtype."""
        colour, alpha = (planes[:1], planes[1:]) if len(planes) <= 2 else (planes[:3], planes[3:])
        _, height, width = planes.shape
        out = np.empty((height * self.scale, width * self.scale, len(planes)), dtype)

        def finish(rows: np.ndarray, top: int) -> None:
            values = np.tensordot(LUMA, rows, axes=1)[None] if len(colour) == 1 else rows
            out[top:top + rows.shape[1], :, :len(colour)] = _in_range(values, dtype)

        rgb = np.repeat(colour, 3, axis=0) if len(colour) == 1 else colour
        self._tiled(np.ascontiguousarray(rgb), finish, tile, overlap, batch, progress, callback)
        if len(alpha):
            out[:, :, len(colour):] = _in_range(bicubic(alpha, self.scale), dtype)
        return out

    def _upscale_pil(self, image, tile, overlap, batch, max_megapixels, progress, callback=None):
        from PIL import Image, ImageOps

        mode = output_mode(image)
        if 0 in image.size:   # as an array of that shape is refused; ONNX Runtime's Conv refused it, naming its node
            raise InputError(f"image: expected a picture with pixels, found a Pillow image of {image.width}x{image.height}")
        warn_of_sixteen_bit_colour(image, "image")   # before load(), which drops what tells it
        self._check_size((image.height, image.width), max_megapixels)   # before a large conversion
        try:
            image.load()
        except (AssertionError, OSError, ValueError) as exc:   # Pillow asserts on a closed file
            raise InputError(f"image: expected a Pillow image whose pixels can be read, found one that cannot "
                             f"({type(exc).__name__}{': ' + str(exc) if str(exc) else ''}; closed?)") from None
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:   # upright, as `edgegen upscale` reads a photo
            image = ImageOps.exif_transpose(image)
        converted = image if image.mode == mode or mode == "I;16" else image.convert(mode)
        pixels = np.asarray(converted)
        pixels = pixels[:, :, None] if pixels.ndim == 2 else pixels
        dtype = np.uint16 if mode == "I;16" else np.uint8
        out = self._upscale_planes(from_integers(pixels.astype(dtype, copy=False)), dtype, tile, overlap, batch, progress,
                                   callback)
        upscaled = Image.fromarray(out[:, :, 0] if out.shape[2] == 1 else out)   # the mode follows: L, LA, RGB, RGBA, I;16
        if (profile := kept_profile(image, mode)) is not None:   # a phone's Display P3 shown as sRGB shifts colours
            upscaled.info["icc_profile"] = profile
        return upscaled

    def _check_size(self, size: tuple[int, int], max_megapixels: float) -> None:
        check_output_size(size, self.scale, max_megapixels)


def check_output_size(size: tuple[int, int], scale: int, max_megapixels: float) -> None:
    """Refuse an upscale of a picture of `size` (height, width) whose output passes max_megapixels."""
    if isinstance(max_megapixels, bool) or not isinstance(max_megapixels, (int, float)) or not max_megapixels > 0:
        raise InputError(f"max_megapixels: expected a positive number, found {max_megapixels!r}")
    megapixels = size[0] * size[1] * scale ** 2 / 1e6
    if megapixels > max_megapixels:
        raise InputError(f"image of {size[1]}x{size[0]} pixels: expected an output of at most {max_megapixels:.3g} "
                         f"megapixels at x{scale}, found {megapixels:.3g} (raise --max-megapixels, or "
                         "max_megapixels in Python, to allow it)")


def tiling(tile, overlap, batch, config: SRConfig | None) -> tuple:
    """The tile side, overlap and tiles per call asked for, checked; None takes the package's
    (`config`). Without a package (commands check before a shipped model's export) what holds
    for every package is checked, and None stays None."""
    max_tile = config.max_tile if config else None
    overlap_given = overlap is not None
    tile = _count(tile, "tile", max_tile) if tile is not None else config and config.tile
    overlap = _count(overlap, "overlap", None, low=0) if overlap is not None else config and config.overlap
    batch = _count(batch, "batch", MAX_TILE_BATCH) if batch is not None else config and config.tile_batch
    if tile is not None and overlap is not None and overlap >= tile:
        if not overlap_given:   # the package's own overlap: the tile asked for is what is too small
            raise InputError(f"tile: expected more pixels than the package's overlap of {overlap} (or a smaller "
                             f"overlap), found {tile}")
        raise InputError(f"overlap: expected fewer pixels than the tile's {tile}, found {overlap}")
    return tile, overlap, batch


def _paste(out: np.ndarray, tile: np.ndarray, top: int, left: int, row_weight: np.ndarray, col_weight: np.ndarray) -> None:
    """Add a tile's output, weighted, into `out` at (top, left): only where its weight is not 0,
    and as a plain copy where it is all 1 (the default overlap: each pixel comes from one tile),
    so the blend costs nothing beyond the ramps."""
    rows, cols = np.flatnonzero(row_weight), np.flatnonzero(col_weight)
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    target = out[:, top + r0:top + r1, left + c0:left + c1]
    part = tile[:, r0:r1, c0:c1]
    if (row_weight[r0:r1] == 1).all() and (col_weight[c0:c1] == 1).all():
        target += part     # the others' weights here are 0: adding is copying
    else:
        target += part * np.outer(row_weight[r0:r1], col_weight[c0:c1])


def _slide(band: np.ndarray, band_top: int, new_top: int, finish) -> int:
    """Hand the band's rows above output row `new_top` to `finish`, move the rest to the band's
    top and clear what is left below; the band now starts at `new_top`."""
    done = new_top - band_top
    finish(band[:, :done], band_top)
    band[:, :-done] = band[:, done:]      # numpy copies overlapping ranges as if through a buffer
    band[:, band.shape[1] - done:] = 0.0
    return new_top


def _in_range(values: np.ndarray, dtype) -> np.ndarray:
    """[C, H, W] float in [0, 1] (the graph's output may step outside) -> [H, W, C] of `dtype`:
    rounded to uint8 / uint16, or clipped float32."""
    if dtype == np.float32:
        return np.clip(values, 0.0, 1.0).transpose(1, 2, 0)
    return to_integers(values, dtype)


def output_mode(image, what: str = "image") -> str:
    """The Pillow mode a picture is upscaled in, and returned in: L, LA, RGB, RGBA or I;16.
    Grey and colour pictures gain alpha where they carry transparency (a PNG's tRNS chunk, a
    palette's transparent entries), a 1-bit picture becomes grey, CMYK and the other colour
    modes RGB, premultiplied alpha plain alpha, and 16-bit grey stays 16-bit (a 16-bit PGM,
    which Pillow opens as mode I, too). `what`: the picture's name in a refusal."""
    from ...images import SIXTEEN_BIT_AS_I

    transparent = image.has_transparency_data
    if image.mode in ("L", "1"):
        return "LA" if transparent else "L"
    if image.mode in ("RGB", "P", "PA", *COLOUR_MODES):
        return "RGBA" if transparent else "RGB"
    if image.mode in ("LA", "RGBA", "La", "RGBa"):
        return image.mode.upper()
    if image.mode in SIXTEEN_BIT_MODES or (image.mode == "I" and image.format in SIXTEEN_BIT_AS_I):
        return "I;16"
    kind = {"F": "floating-point pixels", "I": "32-bit integer pixels"}.get(image.mode, "pixels")
    raise InputError(f"{what}: expected a picture of 8- or 16-bit pixels (Pillow modes L, LA, RGB, RGBA, P, 1, I;16, "
                     f"CMYK), found mode {image.mode!r}: {kind}, which have no fixed range (save it as an 8- or 16-bit "
                     "PNG with the range you mean)")


def kept_profile(image, mode: str) -> bytes | None:
    """The picture's ICC colour profile where it still describes the upscale's pixels, which keep the
    picture's values: a grey or RGB profile of a picture upscaled in that colour model (a CMYK one
    does not describe the RGB its pixels were converted to); None otherwise."""
    profile = image.info.get("icc_profile")
    if isinstance(profile, bytes) and profile[16:20] == PROFILE_SPACES.get(mode):
        return profile
    return None


def _is_pil(image: Any) -> bool:
    return type(image).__module__.startswith("PIL.")


def _pixel_array(image: Any) -> np.ndarray:
    """An array [H, W] or [H, W, 1|2|3|4] of pixels as [H, W, C], its kind and shape checked
    (not its values: a size too large is refused before they are read)."""
    if isinstance(image, (str, os.PathLike)):   # said as the array of letters numpy makes of it (review 173)
        raise InputError(f"image: expected an array of pixels or a Pillow image, found the path {str(image)!r}: open "
                         "it first, PIL.Image.open(path) (edgegen upscale reads files)")
    array = user_array(image, "image", "an array or a Pillow image")
    if array.dtype.kind not in "uif":
        raise InputError(f"image: expected an array of pixels (uint8, uint16 or float) or a Pillow image, found "
                         f"{type(image).__name__} of dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or 0 in array.shape:
        raise InputError(f"image: expected [height, width] or [height, width, 1|2|3|4] pixels, found shape "
                         f"{list(np.shape(image))}")
    return array


def _as_planes(array: np.ndarray) -> tuple[np.ndarray, type]:
    """_pixel_array's [H, W, C] -> float32 planes [C, H, W] in [0, 1], and the dtype to return
    (uint8, uint16 or float32)."""
    if array.dtype in (np.uint8, np.uint16):
        return from_integers(array), array.dtype.type
    if array.dtype.kind != "f":
        raise InputError(f"image: expected uint8 or uint16 pixels or floats in [0, 1], found dtype {array.dtype}")
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        # repr, not :g: a value just past 1 after colour maths (1.0000001) showed as "to 1"
        found = ("NaN or Inf" if not np.isfinite(array).all() else
                 f"values from {array.min().item()!r} to {array.max().item()!r}")
        raise InputError(f"image: expected float pixels in [0, 1], found {found}")
    return array.transpose(2, 0, 1).astype(np.float32), np.float32


def _count(value: Any, what: str, high: int | None, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high and value > high):
        bound = f"from {low} to {high}" if high else f"at least {low}"
        raise InputError(f"{what}: expected an integer {bound}, found {value!r}")
    return int(value)
