"""Image datasets that need no network: scikit-learn's digits, crops of the photographs
that scikit-learn and scikit-image ship in their wheels, and a folder of the user's images.

Every loader returns float32 arrays [N, C, H, W] in [0, 1], split into train and test.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError, EdgegenWarning, InputError
from ..images import opened_picture, picture_rgb, read_picture
from ..storage import data_files, data_files_and_others
from ..wording import counted

BUILTIN_IMAGE_DATA = ("digits", "natural")
NATURAL_MAX_SIZE = 128
DIGITS_MAX_SIZE = 256   # scikit-learn's 8x8 digits, scaled up: more pixels only take memory
DIGIT_CLASSES = 10      # the digits' labels; a folder's classes are its subfolders (folder_classes)
CLASS_FAMILIES = ("cgan", "diffusion", "ldm", "pixelcnn")   # those that train on a folder's classes (and controlnet)
FOLDER_MAX_SIZE = 512
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".gif", ".webp", ".tif", ".tiff")
# pictures of other formats a camera, an editor or a phone writes, which a folder's training leaves out, said
# (not every suffix Pillow registers: .h5, .mpg and .ps are no one's pictures to convert)
OTHER_PICTURE_SUFFIXES = (".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".psd", ".heic", ".heif", ".avif", ".jp2", ".j2k",
                          ".jxl", ".ico", ".pcx", ".dng", ".cr2", ".nef", ".arw", ".raw", ".exr", ".hdr", ".svg")
# Photographs inside the scikit-image wheel (no download); grey ones are repeated to RGB.
_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "brick", "grass", "gravel",
                   "hubble_deep_field", "immunohistochemistry")


@dataclass
class ImageData:
    name: str
    train: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray | None = None   # int64 class ids where the data has classes
    test_labels: np.ndarray | None = None
    num_classes: int = 0
    least_side: int | None = None   # a folder's: its smallest picture's short side, in pixels, before resizing
    class_names: list[str] | None = None   # a folder's classes: its subfolders (folder_classes)
    colour_dropped: bool = False   # a folder of colour pictures read as grey (channels 1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train.shape[1:])

    def describe(self) -> dict:
        shape = {"channels": self.shape[0], "image_size": self.shape[1]} if len(self.shape) == 3 else {"dim": self.shape[0]}
        return {"source": self.name, **shape, "train": len(self.train), "test": len(self.test),
                "num_classes": self.num_classes, **({"classes": self.class_names} if self.class_names else {})}


def data_classes(source: str) -> int:
    """How many classes the data `source` has, known before it loads: the digits' ten, a folder's
    subfolders (folder_classes), or none."""
    return DIGIT_CLASSES if source == "digits" else len(data_class_names(source) or ())


def data_class_names(source: str) -> list[str] | None:
    """The names of the classes of `source`, known before it loads: a folder's subfolders; None
    for data without named classes (the digits' are their ids)."""
    return (folder_classes(Path(source)) or None) if Path(source).is_dir() and source not in BUILTIN_IMAGE_DATA else None


def folder_classes(folder: Path) -> list[str]:
    """A folder's classes, as torchvision's ImageFolder reads them: the subfolders its pictures lie
    in, sorted by name, where every picture lies in one and there are two or more; else none."""
    places = [path.relative_to(folder).parts for path in data_files(folder, IMAGE_SUFFIXES)]
    if not places or any(len(parts) == 1 for parts in places):
        return []
    names = sorted({parts[0] for parts in places})   # as stored: a name's spaces and accents are its folder's
    return names if len(names) > 1 else []


def why_no_classes(folder: Path) -> str:
    """Why a folder has no classes (folder_classes' none), naming what is in the way: the pictures at
    its top, its one subfolder, or no subfolders at all."""
    places = [path.relative_to(folder).parts for path in data_files(folder, IMAGE_SUFFIXES)]
    at_top = [parts[0] for parts in places if len(parts) == 1]
    subfolders = sorted({parts[0] for parts in places if len(parts) > 1})
    if not places:
        return f"it holds no pictures ({', '.join(IMAGE_SUFFIXES)})"
    if not subfolders:
        return "its pictures lie in no subfolders"
    if not at_top:   # one subfolder: its own subfolders may be the classes (data/root/cats, data/root/dogs)
        inner = folder / subfolders[0]
        return f"its pictures all lie in one subfolder, {subfolders[0]}" + (
            f" (give --data {str(inner)!r}, whose subfolders are classes)" if folder_classes(inner) else "")
    named = ", ".join(at_top[:3]) + (f" and {len(at_top) - 3} more" if len(at_top) > 3 else "")
    return f"{counted(len(at_top), 'picture')} at its top ({named}) outside its {counted(len(subfolders), 'subfolder')}"


def refuse_empty_data(data: str | None) -> None:
    """--data "$DATA" with DATA unset: an empty string was taken for no --data (train trained on the
    built-in set, export gated on the training data) without a word."""
    if isinstance(data, str) and not data.strip():
        raise ConfigError(f"data (--data): expected a built-in data set's name or a path, found {data!r}")


def load_images(source: str, image_size: int = 32, channels: int | None = None, seed: int = 0,
                labels_of: Callable[[list[Path]], np.ndarray] | None = None, classes: bool = False) -> ImageData:
    """Load a built-in dataset by name or the images in a folder.

    channels: 1 (grey) or 3 (RGB); None keeps the source's own (digits 1, photographs 3).
    labels_of: a folder's pictures' files -> their class ids (text2image's captions, by index),
    called before the pictures are read, so that its refusals come before minutes of reading.
    classes: a folder's subfolders as its classes (folder_classes), for the families that take classes.
    """
    if channels not in (None, 1, 3):
        raise DataError(f"channels: expected 1 or 3, found {channels!r}")
    refuse_small_image_size(image_size)
    if source == "digits":
        if image_size > DIGITS_MAX_SIZE:
            raise DataError(f"image_size: expected at most {DIGITS_MAX_SIZE} for the digits (8x8 pictures scaled up: "
                            f"more pixels add memory, not detail), found {image_size}")
        x_train, y_train, x_test, y_test = digit_labels(image_size)
        return ImageData(source, _to_channels(x_train.copy(), channels), _to_channels(x_test.copy(), channels),
                         y_train.astype(np.int64), y_test.astype(np.int64), DIGIT_CLASSES)
    if source == "natural":
        if image_size > NATURAL_MAX_SIZE:
            raise DataError(f"image_size: expected at most {NATURAL_MAX_SIZE} for the natural crops (the smallest shipped "
                            f"photograph is 300 pixels high), found {image_size}")
        train, test = _natural_crops(image_size, seed)
    elif Path(source).is_dir():
        if image_size > FOLDER_MAX_SIZE:
            raise DataError(f"--image-size: expected at most {FOLDER_MAX_SIZE} for a folder of images (the families "
                            f"train at 8 to 64 pixels; every image is held at that size), found {image_size}")
        names = folder_classes(Path(source)) if classes and labels_of is None else []
        if names:
            labels_of = functools.partial(_subfolder_labels, Path(source), names)
        (train, test), labels, least_side = _folder(Path(source), image_size, seed, labels_of)
        train_labels, test_labels = labels if labels is not None else (None, None)
        return ImageData(source, _to_channels(train, channels), _to_channels(test, channels), train_labels, test_labels,
                         len(names) if names else 0 if labels is None else int(max(train_labels.max(), test_labels.max())) + 1,
                         least_side, names or None, channels == 1 and not all(map(all_grey, (train, test))))
    else:
        raise DataError(f"data {source!r}: expected one of {', '.join(BUILTIN_IMAGE_DATA)} or a folder of images, "
                        f"found {what_else(source, 'images')}")
    return ImageData(source, _to_channels(train, channels), _to_channels(test, channels))


MIN_IMAGE_SIZE = 8   # the digits' own size: the smallest every image family trains at


def refuse_small_image_size(image_size) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise DataError(f"image_size: expected an integer of at least {MIN_IMAGE_SIZE}, found {image_size!r}")


def what_else(source: str, wanted: str, missing: str = "no such folder") -> str:
    """What a family's --data names instead of the `wanted` data (images, photographs): another
    family's data set, a file, or nothing (`missing` says it)."""
    from ..families import families

    takers = [f.name for f in families() if source in f.builtin_data and f.model]   # those that train
    if takers:
        return f"a data set of the {', '.join(takers)} {'family' if len(takers) == 1 else 'families'}, not of {wanted}"
    return "a file" if Path(source).exists() else missing


def all_grey(images: np.ndarray) -> bool:
    """Whether every picture of RGB `images` [n, 3, H, W] is grey: its three channels equal."""
    return bool(np.array_equal(images[:, 0], images[:, 1]) and np.array_equal(images[:, 1], images[:, 2]))


def _to_channels(images: np.ndarray, channels: int | None) -> np.ndarray:
    have = images.shape[1]
    if channels is None or channels == have:
        return images
    if channels == 1:  # ITU-R 601 luma, as PIL's "L" conversion
        weights = np.array([0.299, 0.587, 0.114], dtype=np.float32).reshape(1, 3, 1, 1)
        return (images * weights).sum(axis=1, keepdims=True).astype(np.float32)
    return np.repeat(images, 3, axis=1)


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    """One image HxW or HxWxC in [0, 1] -> C x size x size, bicubic, clipped to [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    planes = [np.asarray(Image.fromarray(array[:, :, c].astype(np.float32), mode="F").resize((size, size), Image.BICUBIC))
              for c in range(array.shape[2])]
    return np.clip(np.stack(planes), 0.0, 1.0)


def _split(images: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = max(1, int(round(len(images) * test_fraction)))
    return images[order[n_test:]], images[order[:n_test]]


@functools.lru_cache(maxsize=4)
def digit_labels(size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits with their labels, in the split load_images('digits') uses: x_train, y_train, x_test, y_test.

    The split is fixed, the same for every family, so "held-out digits" always means the same images.
    Cached, so the arrays are read-only: copy before changing them.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack([_resize(img / 16.0, size) for img in digits.images]).astype(np.float32)
    order = np.random.default_rng(1234).permutation(len(images))
    n_test = int(round(len(images) * 0.15))
    test, train = order[:n_test], order[n_test:]
    arrays = (images[train], digits.target[train], images[test], digits.target[test])
    for array in arrays:
        array.setflags(write=False)
    return arrays


def photographs(names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The shipped photographs as uint8 RGB arrays [H, W, 3] by name (grey ones repeated to RGB):
    scikit-learn's china and flower, then scikit-image's; `names` picks some of them."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos = {Path(f).stem: np.asarray(img) for f, img in zip(sample.filenames, sample.images)}
    photos.update({name: np.asarray(getattr(skimage.data, name)()) for name in _SKIMAGE_PHOTOS})
    if names is not None:
        unknown = sorted(set(names) - set(photos))
        if unknown:
            raise DataError(f"photographs {unknown}: expected names among {sorted(photos)}, found unknown ones")
        photos = {name: photos[name] for name in names}
    return {k: np.repeat(p[:, :, None], 3, axis=2) if p.ndim == 2 else p[:, :, :3] for k, p in photos.items()}


def random_crops(photos: list[np.ndarray], size: int, n: int, rng: np.random.Generator,
                 max_zoom: float = 4.0) -> np.ndarray:
    """n random square crops [n, C, size, size] in [0, 1] of uint8 or [0, 1] photographs: each
    crop's side drawn between 1x and max_zoom x `size`, resized to `size` (bicubic)."""
    out = np.empty((n, photos[0].shape[2], size, size), dtype=np.float32)
    for i in range(n):
        photo = photos[rng.integers(len(photos))]
        if min(photo.shape[:2]) < size:
            raise DataError(f"photograph of {photo.shape[1]}x{photo.shape[0]} pixels: expected at least {size} on each "
                            "side for crops of that size, found a smaller one")
        side = int(rng.integers(size, min(int(max_zoom * size), *photo.shape[:2]) + 1))
        top = rng.integers(photo.shape[0] - side + 1)
        left = rng.integers(photo.shape[1] - side + 1)
        crop = photo[top:top + side, left:left + side]
        crop = crop.astype(np.float32) / 255.0 if crop.dtype == np.uint8 else crop
        out[i] = _resize(crop, size)
    return out


def _natural_crops(size: int, seed: int, n_train: int = 4000, n_test: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Random square crops (side 1x to 4x the output size) of the shipped photographs, resized."""
    photos = list(photographs().values())
    return (random_crops(photos, size, n_train, np.random.default_rng(seed)),
            random_crops(photos, size, n_test, np.random.default_rng(seed + 1_000_003)))


MAX_NAMED_BAD_FILES = 10   # a folder's unreadable files named in one refusal, the count of the rest after them


def folder_images(folder: Path, least_side: int | None = None,
                  files: list[Path] | None = None) -> list[tuple[Path, np.ndarray]]:
    """Every image under `folder` as uint8 RGB [H, W, 3], with its path, as a viewer shows it:
    turned upright by its EXIF tag, 16-bit grey scaled to 8 bits, transparency over white; hidden
    files left out (storage.data_files). `least_side`: read_picture's, for a caller that resizes
    every image down to that. `files`: image_files(folder), where the caller has them."""
    files = image_files(folder, "data folder") if files is None else files
    if not files:
        raise DataError(f"data folder {str(folder)!r}: expected image files ({', '.join(IMAGE_SUFFIXES)}), found none")
    images, refused = [], []
    for path in files:   # every file read, so that one run names every file it cannot take, not the first
        try:
            images.append((path, picture_rgb(read_picture(path, least_side), path)))
        except InputError as exc:
            refused.append(str(exc))
    if len(refused) == 1:
        raise DataError(refused[0])
    if refused:
        shown = "; ".join(refused[:MAX_NAMED_BAD_FILES]) + (f"; and {len(refused) - MAX_NAMED_BAD_FILES} more"
                                                         if len(refused) > MAX_NAMED_BAD_FILES else "")
        raise DataError(f"data folder {str(folder)!r}: {len(refused)} of its {len(files)} image files cannot be read: "
                        f"{shown}")
    return images


def image_files(folder: Path, what: str) -> list[Path]:
    """The image files under `folder` (IMAGE_SUFFIXES; storage.data_files), with a warning that
    names the files of other picture formats (OTHER_PICTURE_SUFFIXES), which are left out: a folder
    of mixed formats lost some of its pictures without a word."""
    files, others = data_files_and_others(folder, IMAGE_SUFFIXES, OTHER_PICTURE_SUFFIXES)
    if others:
        named = ", ".join(repr(str(p.relative_to(folder))) for p in others[:3]) + (
            f" and {len(others) - 3} more" if len(others) > 3 else "")
        warnings.warn(f"{what} {str(folder)!r}: left out {len(others)} file{'s' * (len(others) > 1)} of picture formats "
                      f"edgegen does not take ({named}); expected {', '.join(IMAGE_SUFFIXES)}: convert them to PNG to "
                      "take them", EdgegenWarning, stacklevel=3)
    return files


def square_picture(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> [3, size, size] in [0, 1], as training reads a folder's picture:
    centre-cropped to a square, resized (bicubic)."""
    side = min(rgb.shape[:2])
    top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
    return _resize(rgb[top:top + side, left:left + side].astype(np.float32) / 255.0, size)


def pictures_as_trained(paths: list[Path], size: int, channels: int) -> np.ndarray:
    """Picture files [n, channels, size, size] as `edgegen train` reads a folder's (square_picture,
    grey by luma): what a model trained on a folder is fed later, its anomaly scores' pictures."""
    squares = [square_picture(picture_rgb(read_picture(path, least_side=size, what="picture"), path, "picture"), size)
               for path in paths]
    return _to_channels(np.stack(squares).astype(np.float32), channels)


def _folder(folder: Path, size: int, seed: int, labels_of=None):
    """(train and test: every image under `folder`, centre-cropped to a square and resized, as RGB;
    their labels' train and test (labels_of's), or None; the smallest picture's short side as stored)."""
    files = image_files(folder, "data folder")
    labels = np.asarray(labels_of(files), dtype=np.int64) if labels_of is not None and files else None
    # a photograph is decoded near the size it becomes: least_side keeps it at `size` or more
    read = folder_images(folder, least_side=size, files=files)
    if len(read) < 2:
        raise DataError(f"data folder {str(folder)!r}: expected at least 2 images (one held out), found {len(read)}")
    if labels_of is None:
        _say_subfolders_pooled(folder, [path for path, _ in read])
    images = [square_picture(rgb, size) for _path, rgb in read]
    # the same seed and count: the labels split as their pictures are
    return (_split(np.stack(images).astype(np.float32), 0.1, seed), None if labels is None else _split(labels, 0.1, seed),
            min(_stored_short_side(path) for path, _ in read))


def _subfolder_labels(folder: Path, names: list[str], files: list[Path]) -> list[int]:
    return [names.index(path.relative_to(folder).parts[0]) for path in files]


def _stored_short_side(path: Path) -> int:
    """A picture's short side as stored (its header), not as read: a JPEG is decoded near the
    size training needs (read_picture's draft), and 256-pixel photographs read as 32."""
    with opened_picture(path, "picture") as image:
        return min(image.size)


def _say_subfolders_pooled(folder: Path, paths: list[Path]) -> None:
    """A folder whose pictures lie in several subfolders, an ImageFolder's classes, trained on as
    one set without classes (a family without them, or pictures at the folder's top too): said,
    since it was done without a word and --label refused only at generation (helper 150)."""
    subfolders = sorted({p.relative_to(folder).parts[0] for p in paths if len(p.relative_to(folder).parts) > 1})
    if len(subfolders) > 1:
        named = ", ".join(subfolders[:4]) + (f" and {len(subfolders) - 4} more" if len(subfolders) > 4 else "")
        at_top = any(len(p.relative_to(folder).parts) == 1 for p in paths)
        why = ("some lie at its top: subfolders are read as classes where every picture lies in one" if at_top else
               f"the families with classes ({', '.join(CLASS_FAMILIES)}) read them as classes; this one takes none")
        warnings.warn(f"data folder {str(folder)!r}: its pictures lie in {len(subfolders)} subfolders ({named}), taken "
                      f"together as one set without classes ({why})", EdgegenWarning, stacklevel=4)


def noise_images(n: int, shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """Uniform noise images: the out-of-distribution baseline for anomaly scores."""
    return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)
