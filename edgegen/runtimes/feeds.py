"""Feeds in .npz files: what a user hands `edgegen export --module`, `optimize --inputs` and
`generate --inputs`, and what a generic package records. numpy only.

One feed: one array per input name (`image`, `mask`). Several feeds (inputs of different
sizes): keys `0/image`, `0/mask`, `1/image`, ... The two forms are not mixed in one file."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError, PackageError
from ..storage import atomic_write_bytes

HELD_OUT_FILE = "held_out.npz"   # a package's recorded inputs: config.held_out = {"file", "sha256", "feeds"}


def read_feeds(path: str | os.PathLike) -> list[dict[str, np.ndarray]]:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"inputs {str(path)!r}: expected an .npz file of named arrays (numpy.savez), found a folder")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):   # an .npy: a bare array, not a context manager
            raise InputError(f"inputs {str(path)!r}: expected an .npz of named arrays (numpy.savez), found one "
                             f"bare array (.npy, shape {list(data.shape)}): save it with numpy.savez(path, NAME=array)")
        with data:
            arrays = {key: _member(data, key, path) for key in data.files}
    except FileNotFoundError:
        raise InputError(f"inputs {str(path)!r}: expected an .npz file, found nothing at that path") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:   # EOFError: an empty file
        found = ("a file that is neither an .npz nor an .npy (numpy would read it only as a pickle, which edgegen "
                 "never loads)") if "pickle" in str(exc) else "an empty file" if isinstance(exc, EOFError) else str(exc)
        raise InputError(f"inputs {str(path)!r}: expected an .npz of named arrays (numpy.savez), found {found}") from None
    if not arrays:
        raise InputError(f"inputs {str(path)!r}: expected at least one array, found none")
    numbered = [key for key in arrays if "/" in key]
    if not numbered:
        return [arrays]
    if len(numbered) != len(arrays):
        raise InputError(f"inputs {str(path)!r}: expected keys all of the form N/name or none, found {sorted(arrays)}")
    feeds: dict[int, dict[str, np.ndarray]] = {}
    for key, array in arrays.items():
        index, _, name = key.partition("/")
        if not index.isdigit() or not name:
            raise InputError(f"inputs {str(path)!r}: expected keys N/name with N a number, found {key!r}")
        if index != str(int(index)):   # 01/x beside 1/x would be one feed, one array replacing the other
            raise InputError(f"inputs {str(path)!r}: expected keys N/name with N as numpy.savez's callers write it "
                             f"({int(index)}), found {key!r}")
        feeds.setdefault(int(index), {})[name] = array
    # numbered 0, 1, 2, ...: a gap is most often a feed lost on the way (a filtered list's indices)
    if missing := sorted(set(range(max(feeds) + 1)) - set(feeds)):
        shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise InputError(f"inputs {str(path)!r}: expected feeds numbered 0 to {len(feeds) - 1}, found "
                         f"{len(feeds)} numbered up to {max(feeds)}, without {shown}: number them anew "
                         "(enumerate the feeds you keep)")
    return [feeds[i] for i in sorted(feeds)]


def _member(data, key: str, path: Path) -> np.ndarray:
    """One array of an opened .npz; one of Python objects is named (numpy reads it only as a pickle)."""
    try:
        return data[key]
    except ValueError as exc:
        if "pickle" not in str(exc):
            raise
        raise InputError(f"inputs {str(path)!r}: expected an .npz of numeric arrays, found {key!r} of Python objects "
                         "(dtype object, which numpy reads only as a pickle, which edgegen never loads): save it as "
                         "numbers (numpy.asarray(..., dtype=numpy.float32))") from None


def write_feeds(path: str | os.PathLike, feeds: list[dict[str, np.ndarray]]) -> None:
    """Several feeds as N/name keys (one feed as plain names), written atomically."""
    if not feeds:
        raise InputError(f"{str(path)!r}: expected at least one feed to write, found none")
    arrays = feeds[0] if len(feeds) == 1 else {f"{i}/{name}": a for i, feed in enumerate(feeds) for name, a in feed.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue(), follow_symlink=True)


def parse_dim_sizes(specs: list[str] | None, flag: str) -> dict[str, int]:
    """["height=512", "width=384"] or ["height=512,width=384"] -> {"height": 512, "width": 384}."""
    sizes = {}
    for spec in specs or []:
        for item in spec.split(","):
            name, _, value = item.partition("=")
            if not name or not value.isdigit() or int(value) < 1:
                raise InputError(f"{flag} {item!r}: expected NAME=SIZE with a positive integer size")
            if name in sizes:   # the last one used to win without a word
                raise InputError(f"{flag}: expected each dim once, found {name} twice ({sizes[name]} and {int(value)})")
            sizes[name] = int(value)
    return sizes


def parse_sweep(spec: str | None, flag: str = "--sweep") -> list[dict[str, int]]:
    """"height,width=64,128,256" -> [{"height": 64, "width": 64}, {"height": 128, ...}, ...]: the
    named dims set together to each size in turn (square tiles of each side)."""
    if spec is None:
        return []
    dims, _, values = spec.partition("=")
    names = [d for d in dims.split(",") if d]
    sizes = values.split(",")
    if not names or not all(v.isdigit() and int(v) > 0 for v in sizes):
        raise InputError(f"{flag} {spec!r}: expected DIM[,DIM]=SIZE[,SIZE...] with positive integer sizes, "
                         "e.g. height,width=64,128,256")
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise InputError(f"{flag} {spec!r}: expected each dim once, found {', '.join(repeated)} twice")
    if repeated := sorted({int(v) for v in sizes if sizes.count(v) > 1}):   # was timed twice over
        raise InputError(f"{flag} {spec!r}: expected each size once, found {', '.join(map(str, repeated))} more than once")
    return [{name: int(v) for name in names} for v in sizes]


def recorded_feeds(package, config) -> list[dict[str, np.ndarray]]:
    """The held-out feeds an export recorded (config.held_out) in a package with no checkpoint to
    draw inputs from (your own module, an imported diffusers pipeline), checked against their hash:
    what optimize calibrates and gates on."""
    held_out = getattr(config, "held_out", None)
    if held_out is None:
        raise PackageError(f"package {str(package.path)!r}: expected inputs recorded at export (config.held_out), "
                           "found none; pass an .npz of inputs instead")
    path = package.recorded_file(held_out, "config.held_out", "held-out inputs",
                                 " (removed, or left out of a copy): pass your own inputs instead (--inputs NPZ)",
                                 "; or pass your own inputs instead (--inputs NPZ)")
    return read_feeds(path)
