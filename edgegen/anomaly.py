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

from .errors import ConfigError, DataError, EdgegenWarning, InputError, NonFiniteError
from .runtimes.audio import AUDIO_SUFFIXES, read_wav
from .storage import data_files, refuse_empty
from .training.data import IMAGE_SUFFIXES, image_files, pictures_as_trained
from .wording import counted

SCORE_VALUES = 1 << 24   # float32 pixel values read and scored at once (64 MB): a folder is never held whole
DEFAULT_QUANTILE = 0.99


def scored_files(given: Iterable[str], what: str, audio: bool | None) -> list[Path]:
    """Each given path a file, or a folder whose pictures (IMAGE_SUFFIXES), or WAV files for a
    package of audio, are taken in name order, hidden files left out as training lists a folder.
    audio=None, before the package is loaded (a shipped name's first export takes a minute): a
    folder's files of either kind, so that a missing path or an empty folder is said first."""
    kind, suffixes = {False: ("a picture file or a folder of pictures", IMAGE_SUFFIXES),
                      True: ("a WAV file or a folder of them", AUDIO_SUFFIXES),
                      None: ("a picture or WAV file, or a folder of them", (*IMAGE_SUFFIXES, *AUDIO_SUFFIXES))}[audio]
    files = []
    for path in given:
        refuse_empty(path, what)
        if Path(path).is_dir():
            # a folder's pictures as training lists them (image_files names the formats it leaves out)
            found = image_files(Path(path), what) if audio is False else data_files(Path(path), suffixes)
            if not found:
                raise InputError(f"{what} {str(path)!r}: expected {kind} ({', '.join(suffixes)}), found a folder "
                                 "without any")
            files += found
        elif Path(path).is_file():
            files.append(Path(path))
        else:
            raise InputError(f"{what} {str(path)!r}: expected {kind}, found nothing at that path")
    return files


def scores_audio(pipe) -> bool:
    """Whether a package's anomaly scores are of audio clips (a sample rate), not pictures;
    refused for one without anomaly scores."""
    if not callable(getattr(pipe, "anomaly_score", None)):
        raise ConfigError(f"package {str(pipe.package.path)!r}: expected one with anomaly scores (vae, vaegan, "
                          f"pixelcnn, a flow over images, wavenet), found a {pipe.family} package")
    return getattr(pipe, "sample_rate", None) is not None


def noun(audio: bool) -> str:
    return "clips" if audio else "pictures"


def picture_shape(pipe) -> tuple[int, int]:
    """(channels, side) of the pictures a package scores; refused for one without pictures (a
    flow over points)."""
    try:
        channels, height, width = pipe.image_shape
    except InputError:
        raise ConfigError(f"package {str(pipe.package.path)!r}: expected a model of pictures, found a {pipe.family} "
                          "model of points (score arrays in Python: anomaly_score)") from None
    if height != width:   # training makes square models; a folder's pictures are cropped square for them
        raise ConfigError(f"package {str(pipe.package.path)!r}: expected square pictures, found {height}x{width}")
    return channels, height


def score_files(pipe, files: list[Path], audio: bool) -> tuple[np.ndarray, dict[Path, str]]:
    """(the package's anomaly score of each picture or WAV file (audio: scores_audio's), float64:
    higher, less like its training data; the files that could not be read, each with why). One the
    model cannot score (its graph overflows to NaN or Inf on it, or its score does) scores infinity,
    above any threshold: one so far from the training data is the first a station should flag. One
    that cannot be read (a camera's upload cut short) scores NaN. Either way the others are scored
    all the same (one such file ended the run)."""
    unreadable: dict[Path, str] = {}
    if audio:   # a clip at a time: clips differ in length, and a long one is scored in windows
        scores = np.array([_file_score(pipe, path, lambda p: clip_as_trained(p, pipe.sample_rate)[None], unreadable)
                           for path in files], np.float64)
    else:
        channels, side = picture_shape(pipe)
        chunk = max(1, SCORE_VALUES // (channels * side * side))
        scores = np.concatenate([_chunk_scores(pipe, files[i:i + chunk], side, channels, unreadable)
                                 for i in range(0, len(files), chunk)]).astype(np.float64)
    return scores, unreadable


def clip_as_trained(path: Path, sample_rate: int) -> np.ndarray:
    """A WAV file [T] as a WaveNet's training reads a folder's: mono, at its sample rate, and within
    [-1, 1], as mu-law encoding clips it there (resampling a clipped recording overshoots: a loud
    one came back at -1.13..1.14, which the runtime refuses)."""
    audio = np.clip(read_wav(path, sample_rate), -1.0, 1.0)
    if len(audio) < 2:   # the first sample is the context of the second: nothing to score
        raise InputError(f"{path}: expected a clip of at least 2 samples at {sample_rate} Hz, found {len(audio)}")
    return audio


def _chunk_scores(pipe, files: list[Path], side: int, channels: int, unreadable: dict) -> np.ndarray:
    """The scores of a chunk of picture files; where one cannot be read, or the graph refuses the
    chunk for non-finite outputs, each picture's alone."""
    try:
        pictures = pictures_as_trained(files, side, channels)
    except (DataError, InputError):
        return np.array([_file_score(pipe, path, lambda p: pictures_as_trained([p], side, channels), unreadable)
                         for path in files])
    try:
        scores = pipe.anomaly_score(pictures).astype(np.float64)
    except NonFiniteError:
        return np.array([_one_score(pipe, picture[None]) for picture in pictures])
    return np.where(np.isfinite(scores), scores, np.inf)   # a NaN would be above no threshold


def _file_score(pipe, path: Path, read, unreadable: dict) -> float:
    """The score of the file `read` makes a batch of one of; NaN, its reason kept in `unreadable`,
    where it cannot be read."""
    try:
        batch_of_one = read(path)
    except (DataError, InputError) as exc:
        unreadable[path] = str(exc)
        return math.nan
    return _one_score(pipe, batch_of_one)


def _one_score(pipe, batch_of_one: np.ndarray) -> float:
    """The score of one picture or clip, a batch of one; infinity where the graph refuses it for
    non-finite outputs, or its score is not finite."""
    try:
        score = float(pipe.anomaly_score(batch_of_one)[0])
    except NonFiniteError:
        return math.inf
    return score if math.isfinite(score) else math.inf


def unscorable(files: list[Path], scores: np.ndarray) -> list[Path]:
    """The files score_files could not score (their scores infinite)."""
    return [path for path, score in zip(files, scores) if math.isinf(score)]


def said_unreadable(unreadable: dict[Path, str]) -> str:
    """The files score_files could not read, counted, and the first ones' reasons (each names its file)."""
    reasons = "; ".join(list(unreadable.values())[:3]) + ("; ..." if len(unreadable) > 3 else "")
    return f"{counted(len(unreadable), 'file')} that could not be read ({reasons})"


def said_unscorable(files: list[Path], audio: bool) -> str:
    shown = ", ".join(str(path) for path in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return (f"{counted(len(files), 'clip' if audio else 'picture')} the model cannot score (NaN or Inf "
            f"inside it: far from the {noun(audio)} it was trained on): {shown}")


def check_quantile(quantile: float) -> float:
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ConfigError(f"--quantile: expected a fraction of normal pictures to pass, above 0 and below 1, found "
                          f"{quantile!r}")
    return float(quantile)


def check_threshold(threshold: float) -> float:
    if not math.isfinite(threshold):
        raise ConfigError(f"--threshold: expected a finite score, found {threshold}")
    return float(threshold)


def calibrated_threshold(pipe, normal: list[Path], quantile: float, audio: bool) -> float:
    """The least normal picture's (or clip's) score that `quantile` of their scores fall at or
    below: one of them, not between two (numpy's default interpolates, and under 1/(1 - quantile)
    pictures its threshold flagged the highest normal one)."""
    _say_training_files(pipe, normal, audio)
    scores, unreadable = score_files(pipe, normal, audio)
    if unreadable:   # a threshold from the others would not be the one asked for
        raise InputError(f"--normal: expected {noun(audio)} that read, found {said_unreadable(unreadable)}")
    if failed := unscorable(normal, scores):
        raise InputError(f"--normal: expected {noun(audio)} the model scores, found {said_unscorable(failed, audio)}: "
                         f"leave them out of the normal {noun(audio)}, or train on {noun(audio)} like them")
    return quantile_score(scores, check_quantile(quantile))


def _say_training_files(pipe, normal: list[Path], audio: bool) -> None:
    """Normal pictures (or clips) from the folder the model was trained on: said, since they score
    lower than ones it never saw, and a threshold calibrated on them flagged held-out normal
    pictures (helper 156)."""
    source = pipe.config.data.get("source") if isinstance(pipe.config.data, dict) else None
    if not isinstance(source, str) or not Path(source).is_absolute():   # a built-in set's name, not a folder
        return
    trained = [p for p in normal if Path(os.path.realpath(p)).is_relative_to(os.path.realpath(source))]
    if trained:
        things = noun(audio)
        warnings.warn(f"--normal: {len(trained)} of its {len(normal)} {things} lie in the folder the model was trained "
                      f"on ({source!r}), most of whose {things} it trained on (a tenth held out); {things} it trained "
                      f"on score lower than ones it never saw, and a threshold calibrated on them flags more normal "
                      f"{things}: calibrate on normal {things} kept out of training",
                      EdgegenWarning, stacklevel=3)


def quantile_score(scores: np.ndarray, quantile: float) -> float:
    """The least of `scores` that `quantile` of them are at or below (the inverted CDF: of 100, at
    0.99, the 99th; numpy's "higher" took the 100th, the highest). The rank is counted with a
    little slack: 0.07 x 100 is 7.000000000000001 in floating point, whose ceiling took the 8th."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    rank = max(1, math.ceil(quantile * len(ordered) - 1e-9))
    return float(ordered[rank - 1])
