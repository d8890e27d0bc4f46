"""Anomaly scores of picture files (`edgegen score`): a package's `anomaly_score` over pictures
read as its training read a folder's, and a threshold calibrated on pictures known to be normal
(docs/python-api.md, "Anomaly scores"). numpy and Pillow only: it runs where the runtime runs."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import ConfigError, EdgegenWarning, InputError
from .storage import refuse_empty
from .training.data import IMAGE_SUFFIXES, image_files, pictures_as_trained

SCORE_VALUES = 1 << 24   # float32 pixel values read and scored at once (64 MB): a folder is never held whole
DEFAULT_QUANTILE = 0.99


def picture_files(given: Iterable[str], what: str) -> list[Path]:
    """Each given path a picture file, or a folder whose pictures (IMAGE_SUFFIXES, hidden files
    left out, as training lists a folder) are taken in name order."""
    files = []
    for path in given:
        refuse_empty(path, what)
        if Path(path).is_dir():
            found = image_files(Path(path), what)
            if not found:
                raise InputError(f"{what} {str(path)!r}: expected a picture file or a folder of pictures "
                                 f"({', '.join(IMAGE_SUFFIXES)}), found a folder without any")
            files += found
        elif Path(path).is_file():
            files.append(Path(path))
        else:
            raise InputError(f"{what} {str(path)!r}: expected a picture file or a folder of pictures, found nothing "
                             "at that path")
    return files


def picture_shape(pipe) -> tuple[int, int]:
    """(channels, side) of the pictures a package scores; refused for one without anomaly scores
    or without pictures (a flow over points)."""
    if not callable(getattr(pipe, "anomaly_score", None)):
        raise ConfigError(f"package {str(pipe.package.path)!r}: expected one with anomaly scores (vae, vaegan, "
                          f"pixelcnn, or a flow over images), found a {pipe.family} package")
    try:
        channels, height, width = pipe.image_shape
    except InputError:
        raise ConfigError(f"package {str(pipe.package.path)!r}: expected a model of pictures, found a {pipe.family} "
                          "model of points (score arrays in Python: anomaly_score)") from None
    if height != width:   # training makes square models; a folder's pictures are cropped square for them
        raise ConfigError(f"package {str(pipe.package.path)!r}: expected square pictures, found {height}x{width}")
    return channels, height


def score_pictures(pipe, files: list[Path]) -> np.ndarray:
    """The package's anomaly score of each picture file, float64: higher, less like its training data."""
    channels, side = picture_shape(pipe)
    chunk = max(1, SCORE_VALUES // (channels * side * side))
    scores = [pipe.anomaly_score(pictures_as_trained(files[i:i + chunk], side, channels))
              for i in range(0, len(files), chunk)]
    return np.concatenate(scores).astype(np.float64)


def check_quantile(quantile: float) -> float:
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ConfigError(f"--quantile: expected a fraction of normal pictures to pass, above 0 and below 1, found "
                          f"{quantile!r}")
    return float(quantile)


def check_threshold(threshold: float) -> float:
    if not math.isfinite(threshold):
        raise ConfigError(f"--threshold: expected a finite score, found {threshold}")
    return float(threshold)


def calibrated_threshold(pipe, normal: list[Path], quantile: float) -> float:
    """The least normal picture's score that `quantile` of their scores fall at or below: one of
    them, not between two (numpy's default interpolates, and under 1/(1 - quantile) pictures its
    threshold flagged the highest normal one)."""
    _say_training_pictures(pipe, normal)
    return quantile_score(score_pictures(pipe, normal), check_quantile(quantile))


def _say_training_pictures(pipe, normal: list[Path]) -> None:
    """Normal pictures from the folder the model was trained on: said, since they score lower than
    pictures it never saw, and a threshold calibrated on them flagged held-out normal ones (helper 156)."""
    source = pipe.config.data.get("source") if isinstance(pipe.config.data, dict) else None
    if not isinstance(source, str) or not Path(source).is_absolute():   # a built-in set's name, not a folder
        return
    trained = [p for p in normal if Path(os.path.realpath(p)).is_relative_to(os.path.realpath(source))]
    if trained:
        warnings.warn(f"--normal: {len(trained)} of its {len(normal)} pictures lie in the folder the model was trained "
                      f"on ({source!r}), most of whose pictures it trained on (a tenth held out); pictures it trained "
                      "on score lower than ones it never saw, and a threshold "
                      "calibrated on them flags more normal pictures: calibrate on normal pictures kept out of training",
                      EdgegenWarning, stacklevel=3)


def quantile_score(scores: np.ndarray, quantile: float) -> float:
    """The least of `scores` that `quantile` of them are at or below (the inverted CDF: of 100, at
    0.99, the 99th; numpy's "higher" took the 100th, the highest). The rank is counted with a
    little slack: 0.07 x 100 is 7.000000000000001 in floating point, whose ceiling took the 8th."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    rank = max(1, math.ceil(quantile * len(ordered) - 1e-9))
    return float(ordered[rank - 1])
