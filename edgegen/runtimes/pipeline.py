"""What every pipeline shares: the package, one session per graph, input coercion."""

from __future__ import annotations

import inspect
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, NonFiniteError, PackageError
from ..families import RuntimeConfig, dim_problems, positive
from ..package import Package, TensorSpec, may_be_empty
from .session import Session


@dataclass(kw_only=True)
class ImageConfig(RuntimeConfig):
    """What every image family's runtime config holds."""
    image_shape: list[int]               # [channels, height, width]
    data: dict = field(default_factory=dict)   # what the model was trained on (provenance, not used to run)

    def problems(self) -> list[str]:
        if len(self.image_shape) != 3:
            return [f"image_shape expected [channels, height, width], found {self.image_shape!r}"]
        return positive(self, "image_shape")

    def graph_problems(self, graphs: dict) -> list[str]:
        """Every graph's `image` tensor is [batch, *image_shape]."""
        return dim_problems(graphs, [(part, "image", axis + 1, "image_shape", size, list(self.image_shape))
                                     for part in graphs for axis, size in enumerate(self.image_shape)])


@dataclass(kw_only=True)
class LatentImageConfig(ImageConfig):
    """Image families that sample from a latent vector (VAE, GAN)."""
    latent_dim: int

    def problems(self) -> list[str]:
        return super().problems() + positive(self, "latent_dim")

    def graph_problems(self, graphs: dict) -> list[str]:
        """And every graph's latent `z` is [batch, latent_dim]."""
        return super().graph_problems(graphs) + dim_problems(graphs, [(part, "z", 1, "latent_dim", self.latent_dim)
                                                                      for part in graphs])


def class_problems(config) -> list[str]:
    """A conditional family's classes: 0 (unconditional) or more, and the "no label" index right
    after them, where every model edgegen trains or imports has it (another index would make an
    unlabelled call one of the classes, without a word)."""
    if config.num_classes < 0:
        return [f"num_classes expected 0 or more, found {config.num_classes}"]
    if config.null_label != config.num_classes:
        return [f"null_label expected num_classes ({config.num_classes}: the index after the classes, the model's "
                f"'no label'), found {config.null_label}"]
    return []


class GraphSessions(dict):
    """{part: Session} of a package. A graph its pipeline runs and the package lacks (a family that
    declares no `graphs`) is a PackageError naming what the package has, not a KeyError."""

    def __init__(self, package: Package, sessions: dict[str, Session]):
        super().__init__(sessions)
        self.package = package

    def __missing__(self, part: str):
        raise PackageError(f"package {str(self.package.path)!r}: expected a graph {part!r}, which its "
                           f"{self.package.family} pipeline runs, found {', '.join(self) or 'none'}")


class Pipeline:
    """Holds the sessions of one package and owns the generation loop of its family.

    Each pipeline's main job (sampling images, continuing a prompt, generating audio) is
    its `__call__`; `config` is the family's typed runtime config, checked at load time."""

    family: str = ""
    alternates_graphs: bool = False   # its loop runs two graphs in turn: their thread pools must not spin
    precision: str = "fp32"           # or the variant precision load() was asked for
    # its __call__ (and each call a served request makes of it) takes callback=, called during its
    # loop, and stops where that raises: a served request its client cancelled stops there
    stoppable: bool = False
    counts: str = ""   # what its callback's (done, total) count ("audio samples"; diffusion's says its step)

    def __init__(self, package: Package, sessions: dict[str, Session], config: RuntimeConfig):
        self.package = package
        self.sessions = GraphSessions(package, sessions)
        self.config = config

    def __call__(self, *args, **kwargs):
        return self.sample(*args, **kwargs)

    def __copy__(self):   # copy.copy goes the way of pickle, below: a second reference to the same sessions
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        return twin

    def __getstate__(self):
        # pickle's way in (multiprocessing hands a worker its arguments so): ONNX Runtime's own
        # TypeError named neither the pipeline nor the way out
        raise InputError(f"the pipeline of package {str(self.package.path)!r}: expected to stay in the process that "
                         "loaded it (its ONNX Runtime sessions cannot be pickled), found it pickled (handed to "
                         "another process?): load the package in each process, edgegen.load(path)")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        shape = getattr(self.config, "image_shape", None)
        if shape is None:
            raise InputError(f"package {self.package.manifest.name!r}: expected an image model, found a "
                             f"{self.family} package without image_shape")
        return tuple(shape)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def class_names(self) -> list[str] | None:
        """Its classes' names, where it was trained on a folder's subfolders (class_labels takes
        them for their ids); None for unnamed classes (the digits' ids are their digits)."""
        return class_names_in(getattr(self.config, "data", None))

    def run_finite(self, part: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph `part`'s outputs on a user's (finite) inputs, or NonFiniteError where any holds NaN or
        Inf: inputs far past what the model was trained on (latents of 1e30) overflow inside the
        graph, and the user gets an error naming them, never a NaN picture. A large batch runs in
        calls of the session's max_rows (Session.run_rows)."""
        out = self.sessions[part].run_rows(feeds)
        bad = [name for name, value in out.items() if value.dtype.kind == "f" and not np.isfinite(value).all()]
        if bad:
            largest = max((float(np.abs(v).max()) for v in feeds.values() if v.dtype.kind == "f" and v.size), default=0.0)
            raise NonFiniteError(f"graph {part!r}: expected finite outputs, found NaN or Inf in {', '.join(bad)} (its "
                                 f"inputs reach {largest:.3g} in magnitude: outside the values the model takes?)")
        return out

    @property
    def graph_precisions(self) -> dict[str, str]:
        """{part: the precision it runs at}: load()'s precision, or fp32 for a graph the package has no
        variant of it for (Package.fp32_graphs says why)."""
        fp32 = self.package.fp32_graphs(self.precision)
        return {part: "fp32" if part in fp32 else self.precision for part in self.sessions}

    @property
    def backend(self) -> str:
        return next(iter(self.sessions.values())).backend

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.package.manifest.name!r} family={self.family} backend={self.backend} graphs={list(self.sessions)}>"


def check_range(array: np.ndarray, what: str, low: float, high: float) -> np.ndarray:
    """`array` (finite) if its values lie in [low, high], else InputError naming the range found: a
    value outside it is clipped or quantized away by the model's encoding, and what comes back (a
    likelihood, a completion) would mean nothing. An empty array passes: its caller says what
    size it needs."""
    if not array.size:
        return array
    least, most = float(array.min()), float(array.max())
    if least < low or most > high:
        raise InputError(f"{what}: expected values in [{low:g}, {high:g}], found {shown_against(least, low, high)}.."
                         f"{shown_against(most, low, high)}")
    return array


def shown_against(value: float, low: float, high: float, digits: int = 3) -> str:
    """`value` to `digits` significant digits, or to as many more as show it on its side of each
    bound: 1.0001 against [0, 1] is not "1", which would hide what a range refusal refuses."""
    for places in range(digits, 18):
        text = f"{value:.{places}g}"
        if all(np.sign(float(text) - bound) == np.sign(value - bound) for bound in (low, high)):
            return text
    return repr(value)


PICTURE_ARGUMENTS = ("image", "images", "control")   # the arguments of pixels in [0, 1]: uint8 ones are told to scale


def as_float_array(value: Any, what: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """Coerce a user's array to float32 with the given shape (None = any size).

    Any real floating dtype is accepted and cast; integers are refused because they
    almost always mean 0..255 pixels where the model wants [0, 1].
    """
    if (type(value) is np.ndarray and value.dtype == np.float32 and value.flags.c_contiguous
            and value.shape[1:] == shape[1:] and value.ndim == len(shape) and value.shape[0] > 0):
        return check_finite(value, what)  # the common case (any batch, exact item shape), without copies
    array = user_array(value, what, "a floating-point array")
    if array.dtype.kind in "US":   # a text where an array belongs: often arguments in another order
        kind = "an array" if isinstance(value, np.ndarray) else f"a {type(value).__name__}"
        shown = f"{array.item()!r:.60}" if array.ndim == 0 else f"{kind} of text"
        raise InputError(f"{what}: expected a floating-point array, found {shown} (are the arguments in the order the "
                         "call takes them?)")
    if array.dtype.kind != "f":
        # integer dtypes that mean a scale, where the argument holds pictures or audio (not z or noise)
        hint = ""
        if array.dtype == np.uint8 and what in PICTURE_ARGUMENTS:
            hint = " (divide uint8 pixels by 255)"
        elif array.dtype == np.int16 and what == "waveform":
            hint = " (divide int16 samples by 32768)"
        raise InputError(f"{what}: expected a floating-point array, found dtype {array.dtype}{hint}")
    expected = "[" + ", ".join("n" if d is None else str(d) for d in shape) + "]"
    if array.ndim != len(shape) or any(d is not None and d != s for d, s in zip(shape, array.shape)):
        raise InputError(f"{what}: expected shape {expected}, found {list(array.shape)}")
    if array.shape[0] == 0:
        raise InputError(f"{what}: expected at least one item, found an empty batch")
    check_finite(array, what)   # before the cast, which turns a float64 beyond float32's range into Inf
    with np.errstate(over="ignore"):
        cast = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(cast).all():
        largest = float(np.abs(array).max())
        raise InputError(f"{what}: expected numbers float32 can hold (magnitude up to "
                         f"{float(np.finfo(np.float32).max):.3g}), found {largest:.3g}")
    return cast


def user_array(value: Any, what: str, expected: str) -> np.ndarray:
    """np.asarray of what a user gave, or InputError naming the argument where numpy cannot make
    one array of it (a ragged list: rows of different lengths), not numpy's ValueError."""
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - anything numpy cannot take is the user's input error
        raise InputError(f"{what}: expected {expected}, found a {type(value).__name__} numpy cannot make one array of "
                         f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def input_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """A user's value as the graph's dtype when that keeps its kind (lists, float64 -> float32);
    an integer array for a float input, or the reverse, is refused rather than cast. The pipeline's
    call and `optimize --inputs` take feeds by it."""
    array = user_array(value, f"input {spec.name!r}", spec.describe())
    expected = np.dtype(spec.dtype)
    if array.dtype.kind != expected.kind and not (array.dtype.kind in "iu" and expected.kind in "iu"):
        raise InputError(f"input {spec.name!r}: expected {spec.describe()}, found dtype {array.dtype}")
    leading = spec.shape[0] if spec.shape else None   # a dynamic leading dim, whatever the export named it
    if array.ndim and isinstance(leading, str) and not may_be_empty(leading) and array.shape[0] == 0:
        empty = "batch" if leading == "batch" else f"dim {leading!r}"
        raise InputError(f"input {spec.name!r}: expected at least one item, found an empty {empty} of shape "
                         f"{list(array.shape)}")
    # NaN is refused; an infinity may be meant (an additive -inf attention mask), as in PyTorch
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise InputError(f"input {spec.name!r}: expected numbers, found {int(np.isnan(array).sum())} NaN value(s)")
    if array.dtype != expected and array.size:
        _refuse_values_the_cast_changes(array, expected, spec.name)
    if not spec.shape:   # a scalar input: a 0-d value stays one (ascontiguousarray makes it [1])
        return np.asarray(array, dtype=expected, order="C")
    if array.ndim == 0 and len(spec.shape) > 1:   # made [1] below, it was said as "found shape [1]"
        raise InputError(f"input {spec.name!r}: expected {spec.describe()}, found a single number ({array.item()!r})")
    return np.ascontiguousarray(array, dtype=expected)   # a plain number for a [batch] input: one row, as before


def _refuse_values_the_cast_changes(array: np.ndarray, expected: np.dtype, name: str) -> None:
    """The cast to the graph's dtype wraps an integer past its range (2**32 + 1 as int32 is 1) and
    makes a finite float past it infinite: refused, as the values they are."""
    if expected.kind in "iu":
        held = np.iinfo(expected)
        low, high = int(array.min()), int(array.max())
        if low < held.min or high > held.max:
            raise InputError(f"input {name!r}: expected integers {expected.name} holds ({held.min} to {held.max}), "
                             f"found {low}..{high}")
    elif expected.kind == "f" and array.dtype.itemsize > expected.itemsize:
        finite = np.abs(array[np.isfinite(array)])
        if finite.size and finite.max() > np.finfo(expected).max:
            raise InputError(f"input {name!r}: expected values {expected.name} holds (magnitudes up to "
                             f"{np.finfo(expected).max:.3g}), found {finite.max():.3g}")


def check_finite(array: np.ndarray, what: str) -> np.ndarray:
    """`array` itself, or InputError if any value is NaN or Inf (a range check lets NaN through)."""
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise InputError(f"{what}: expected finite numbers, found {bad} NaN or Inf value(s)")
    return array


def mask_array(mask: Any) -> np.ndarray:
    """A user's inpainting mask as float32, refused unless every value is 0 (keep) or 1 (generate):
    a 0.5 would be rounded one way or the other without a word."""
    if mask is None:   # numpy would make it NaN
        raise InputError("mask: expected an array of 0 (keep) and 1 (generate), found None")
    try:
        m = np.asarray(mask, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"mask: expected an array of 0 and 1, found {type(mask).__name__}") from None
    if not np.isfinite(m).all():   # said here: numpy's nanmax below warns on an all-NaN mask
        raise InputError(f"mask: expected 0 (keep) and 1 (generate) only, found {int(np.size(m) - np.isfinite(m).sum())} "
                         "NaN or Inf value(s)")
    others = m[~np.isin(m, (0.0, 1.0))]
    if others.size:
        shown = ", ".join(f"{v:g}" for v in np.unique(others)[:3])
        hint = " (divide a 0/255 mask by 255)" if m.max() == 255 else ""
        raise InputError(f"mask: expected 0 (keep) and 1 (generate) only, found other values such as {shown}{hint}")
    return m


def broadcast_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A user's mask of 0/1 for images of `shape` [n, C, H, W], as a read-only view of that shape:
    one for all [H, W], or per image [n, H, W] or [n, 1 or C, H, W] (n may be 1). Every family
    that inpaints takes these same shapes, and refuses a mask without a 1: it would run to give
    back the images themselves."""
    m = mask_array(mask)
    m = m[None, None] if m.ndim == 2 else m[:, None] if m.ndim == 3 else m
    try:
        if m.ndim != 4:   # a number or a row [W] would broadcast over everything without a word
            raise ValueError
        m = np.broadcast_to(m, shape)
    except ValueError:
        n, c, h, w = shape
        channels = "1" if c == 1 else f"1 or {c}"
        raise InputError(f"mask: expected [{h}, {w}] (one for all), [{n}, {h}, {w}] or [{n}, {channels}, {h}, {w}], "
                         f"found {list(np.shape(mask))}") from None
    if not m.any():
        raise InputError("mask: expected some 1s (pixels to generate), found only 0s (every pixel kept)")
    return m


def finite_result(array: np.ndarray, what: str, cause: str) -> np.ndarray:
    """A pipeline's result, or NonFiniteError naming what the settings made (never a NaN picture)."""
    if not np.isfinite(array).all():
        raise NonFiniteError(f"{what}: expected finite values, found NaN or Inf in the result ({cause})")
    return array


MAX_COUNT = 100_000   # samples per call: beyond this a request allocates without bound (call in batches)


def check_count(n: Any, what: str = "n", limit: int | None = None, per_call: str = "per call (call in batches)") -> int:
    """A positive integer up to `limit` (default MAX_COUNT), or InputError; `per_call`: what the
    limit is, where calls in batches are not the way past it."""
    limit = MAX_COUNT if limit is None else limit
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"{what}: expected a positive integer, found {n!r}")
    if n > limit:
        raise InputError(f"{what}: expected at most {limit} {per_call}, found {n}")
    return int(n)


def class_labels(labels, n: int, num_classes: int, null_label: int | None, what: str = "labels",
                 names: list[str] | None = None) -> np.ndarray | None:
    """None -> the "no label" index (None where null_label is None: an unconditional call); one id
    or n ids -> int64 [n], each in [0, num_classes); a class's name or n of them, where the model's
    classes have `names` (Pipeline.class_names), as their ids. Every family with classes reads them here."""
    if labels is None:
        return None if null_label is None else np.full(n, null_label, np.int64)
    if num_classes == 0:
        raise InputError(f"{what}: expected none for this unconditional model (it takes no class labels), "
                         f"found {labels!r:.60}")
    labels = _named_ids(labels, names, what)
    array = user_array(labels, what, f"one class id or {n} of them")
    if array.size == 0:   # before its dtype: an empty list is numpy's float64
        raise InputError(f"{what}: expected one class id or {n} of them, found none (shape {list(array.shape)})")
    if array.dtype == object and all(isinstance(v, int) and not isinstance(v, bool) for v in array.reshape(-1)):
        if outside := [v for v in array.reshape(-1) if not 0 <= v < num_classes]:   # Python ints past int64 (10**20)
            raise InputError(f"{what}: expected class ids from 0 to {num_classes - 1}, found {outside[0]}")
        array = array.astype(np.int64)   # ids in range, in an object array of the caller's
    if array.dtype.kind not in "iu":
        raise InputError(f"{what}: expected integer class ids, found dtype {array.dtype}")
    if array.ndim > 1 or (array.ndim == 1 and len(array) != n):
        raise InputError(f"{what}: expected one class id or {n} of them, found shape {list(array.shape)}")
    if ((array < 0) | (array >= num_classes)).any():
        outside = sorted({int(v) for v in array.reshape(-1) if not 0 <= v < num_classes})
        raise InputError(f"{what}: expected class ids from 0 to {num_classes - 1}"
                         + (f" or the class names ({', '.join(names)})" if names else "") + ", found "
                         + ", ".join(map(str, outside[:5])) + (", ..." if len(outside) > 5 else ""))
    return np.broadcast_to(array, (n,)).astype(np.int64)


def _named_ids(labels, names: list[str] | None, what: str):
    """Classes given as text (alone, in a list or a numpy array of text, beside ids), as ids: a name
    of `names` first (a folder's classes "0" to "12" sort as 0, 1, 10, ...: "2" is the one named 2),
    else a number written out (the command line's --label 7), unless the names look like numbers
    themselves (then a number that names none is refused, not taken as an id); ids as they are."""
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "UO":
        labels = labels.tolist()
    given = [labels] if isinstance(labels, str) else labels
    if not isinstance(given, (list, tuple)) or not any(isinstance(v, str) for v in given):
        return labels
    normal = [unicodedata.normalize("NFC", n).strip() for n in names or []]   # as the text given is taken
    numbered = numbered_names(normal)
    ids = []
    for value in given:
        text = unicodedata.normalize("NFC", value).strip() if isinstance(value, str) else None
        if text is None:
            ids.append(value)
        elif text in normal:
            ids.append(normal.index(text))
        elif _NUMBER.match(text) and not numbered:
            ids.append(int(text))
        else:
            raise InputError(f"{what}: expected " + (f"one of the model's class names ({', '.join(names)}): as some are "
                             "numbers, a number is read as a name only" if numbered else
                             f"class ids or the model's class names ({', '.join(names)})" if names else
                             "class ids (this model's classes have no names)") + f", found {value!r:.60}")
    return ids[0] if isinstance(labels, str) else ids


_NUMBER = re.compile(r"^[+-]?\d+$")


def class_names_in(data) -> list[str] | None:
    """The class names a package's config's `data` records (`classes`: a folder's subfolders), or None."""
    names = data.get("classes") if isinstance(data, dict) else None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def numbered_names(names: list[str]) -> bool:
    """Whether some of a model's class names look like numbers: then a number given is read as a
    name only, never as an id."""
    return any(_NUMBER.match(unicodedata.normalize("NFC", name).strip()) for name in names)


def line_steps(steps: Any) -> int:
    """The points of an interpolation line, both ends included: at least 2, or InputError."""
    steps = check_count(steps, "steps", per_call="images on one line")
    if steps < 2:
        raise InputError(f"steps: expected at least 2 images (both ends of the line), found {steps}")
    return steps


def make_rng(seed: Any) -> np.random.Generator:
    """numpy's PCG64 generator: the same seed gives the same numbers on every machine."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise InputError(f"seed: expected a non-negative integer or None, found {seed!r}")
    return np.random.default_rng(seed)


def check_flag(value: Any, what: str) -> bool:
    """True or False (numpy's too), or InputError: 'yes', 1 or None taken as a truth value would
    run another mode than asked without a word."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what}: expected True or False, found {value!r}")
    return bool(value)


def check_callback(callback: Any, arguments: str) -> Any:
    """None or a function, called with `arguments` during a loop (progress, or a raise that stops
    it): a value that cannot be called is refused before the loop's work, not at its first report."""
    if callback is not None and not callable(callback):
        raise InputError(f"callback: expected a function {arguments} or None, found {type(callback).__name__} "
                         f"{callback!r}")
    try:   # a function of other arguments: refused now, not by Python after the loop's first step
        signature = inspect.signature(callback) if callback is not None else None
    except (TypeError, ValueError):   # a builtin without a signature: taken as it is
        signature = None
    if signature is not None:
        try:
            signature.bind(*range(arguments.count(",") + 1))
        except TypeError:
            raise InputError(f"callback: expected a function taking {arguments}, found one taking "
                             f"{signature}") from None
    return callback


def check_progress(progress: Any) -> bool | None:
    """A call's progress setting: False (silent), None (a bar on a terminal, lines in a log) or True
    (a bar); anything else refused, where "yes" or 2 showed a bar without a word."""
    if not (progress is None or isinstance(progress, (bool, np.bool_))):   # 1, "yes", an array: refused
        raise InputError(f"progress: expected False, None (a bar on a terminal) or True, found {progress!r}")
    return progress


def check_number(value: Any, what: str, low: float | None = None, high: float | None = None) -> float:
    """A real number within [low, high], or InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
        raise InputError(f"{what}: expected a number, found {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low:g} to {high:g}" if low is not None and high is not None else (
            f"at least {low:g}" if low is not None else f"at most {high:g}")
        raise InputError(f"{what}: expected a number {bounds}, found {value!r}")
    return float(value)


def standard_normal(n: int, dim: int, seed: Any) -> np.ndarray:
    """Latent noise; the same seed gives the same array on every machine."""
    return make_rng(seed).standard_normal((n, dim), dtype=np.float32)
