"""The photographs super-resolution trains and is judged on (numpy and Pillow; no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ...training.data import folder_images, photographs, random_crops, what_else

# Whole photographs the built-in data never trains on: the held-out set of the quality report.
HELD_OUT_PHOTOS = ("chelsea", "coffee")
TEST_CROPS = 200
MAX_ZOOM = 2.0    # crops 1x to 2x the crop size, shrunk: cleaner high-resolution targets


def photo_split(source: str, seed: int, crop: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(training photographs, held-out photographs) of "natural" or a folder, uint8 RGB: for a
    folder, a tenth of its images (at least one) held out, each at least `crop` pixels a side."""
    if source == "natural":
        photos = photographs()
        return [p for name, p in photos.items() if name not in HELD_OUT_PHOTOS], [photos[n] for n in HELD_OUT_PHOTOS]
    if not Path(source).is_dir():
        raise DataError(f"data {source!r}: expected natural or a folder of photographs, found "
                        f"{what_else(source, 'photographs')}")
    images = []
    for path, image in folder_images(Path(source)):
        if min(image.shape[:2]) < crop:   # named here: the crops only see arrays
            raise DataError(f"image {str(path)!r}: expected at least {crop} pixels on each side for the model's "
                            f"{crop}-pixel crops, found {image.shape[1]}x{image.shape[0]}")
        images.append(image)
    if len(images) < 2:
        raise DataError(f"data folder {source!r}: expected at least 2 images (one held out), found {len(images)}")
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = max(1, len(images) // 10)
    return [images[i] for i in order[n_test:]], [images[i] for i in order[:n_test]]


def held_out_crops(source: str, size: int, seed: int, count: int = TEST_CROPS) -> np.ndarray:
    """Crops [count, 3, size, size] in [0, 1] of the held-out photographs only."""
    _, test = photo_split(source, seed, size)
    return random_crops(test, size, count, np.random.default_rng(seed + 1), MAX_ZOOM)
