"""The captions of a folder of pictures, for training a text-to-image model on them, in the two
forms such folders come in:

- a metadata file at the folder's top, as Hugging Face's imagefolder and diffusers' text-to-image
  training read it: `metadata.jsonl` (one JSON object per line) or `metadata.csv`, each row a
  picture's `file_name` (relative to the folder) and its caption under `text` (or `caption`);
- a text file beside each picture, as kohya's and most LoRA trainers read them: `cat.png` and
  `cat.txt` (or `cat.caption`).

Every picture needs a caption (an empty one trains it as the unconditional), and every caption a
picture: a name mistyped in the metadata or a picture without its text file is refused, named,
before minutes of training on part of the folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import warnings
from pathlib import Path

from ..errors import DataError, EdgegenWarning
from .data import IMAGE_SUFFIXES

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_COLUMNS = ("text", "caption")   # diffusers' text-to-image script's default column, then the other usual one
SIDECAR_SUFFIXES = (".txt", ".caption")
MAX_NAMED = 3   # files named in a refusal, the count of the rest after them

HOW = (f"a {' or '.join(METADATA_FILES)} at the folder's top (file_name and {' or '.join(CAPTION_COLUMNS)} per "
       f"picture), or a text file beside each picture ({' or '.join(SIDECAR_SUFFIXES)}: cat.png and cat.txt)")


def folder_captions(folder: Path, pictures: list[Path]) -> tuple[list[str], str]:
    """(each picture's caption, in `pictures`' order; the form they came in: the metadata file's
    name, or "text files beside the pictures")."""
    metadata = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    if len(metadata) > 1:
        raise DataError(f"data folder {str(folder)!r}: expected one metadata file, found {len(metadata)} "
                        f"({', '.join(p.name for p in metadata)}): remove the one that is not current")
    if metadata:
        _say_sidecars_unread(folder, pictures, metadata[0].name)
        return _from_metadata(folder, metadata[0], pictures), metadata[0].name
    return _from_sidecars(folder, pictures), "text files beside the pictures"


def _from_metadata(folder: Path, metadata: Path, pictures: list[Path]) -> list[str]:
    rows = _metadata_rows(metadata)
    captions: dict[Path, str] = {}
    # both sides as absolute normal paths: --data cap/../cap, or a file_name given whole, named the same file
    taken = {Path(os.path.abspath(p)): p for p in pictures}
    missing, others = [], []
    for where, row in rows:
        name, text = row.get("file_name"), _caption_of(row, metadata, where)
        if not isinstance(name, str) or not name.strip():
            found = f"{name!r}" if "file_name" in row else f"the columns {sorted(row)}"
            raise DataError(f"{str(metadata)!r} {where}: expected a file_name (the picture's path within the folder), "
                            f"found {found}")
        path = Path(os.path.abspath(folder / name.strip()))
        if taken.get(path, path) in captions:
            raise DataError(f"{str(metadata)!r} {where}: expected each picture once, found {name!r} again")
        if path not in taken:   # no such file, or one training does not read: every caption names a picture
            (others if path.is_file() else missing).append(name)
        captions[taken.get(path, path)] = text
    if missing:
        raise DataError(f"{str(metadata)!r}: expected its file_names to name pictures in {str(folder)!r}, found "
                        f"{len(missing)} that do not: {_named(missing)}")
    if others:
        raise DataError(f"{str(metadata)!r}: expected its file_names to name pictures training reads, found "
                        f"{len(others)} files it does not (hidden, outside the folder, or not of "
                        f"{', '.join(IMAGE_SUFFIXES)}): {_named(others)}")
    return _every_picture_captioned(folder, pictures, captions, f"a row in {metadata.name}")


def _metadata_rows(metadata: Path) -> list[tuple[str, dict]]:
    """(where: "line N", the row as a dict) for every row of a .jsonl or .csv metadata file."""
    text = _read_text(metadata)
    if metadata.suffix == ".csv":   # newline="": a quoted caption may hold a line break, as csv.writer writes it
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = []
        for row in reader:
            if None in row:   # fields past the header's: an unquoted comma in a caption, whose rest was dropped
                raise DataError(f"{str(metadata)!r} line {reader.line_num}: expected {len(reader.fieldnames)} fields "
                                f"({', '.join(reader.fieldnames)}), found {len(reader.fieldnames) + len(row[None])}: "
                                "quote a caption that holds commas (\"a red car, shiny\"), as a spreadsheet writes it")
            rows.append((f"line {reader.line_num}", row))
        return rows
    rows = []
    # lines at "\n" alone: str.splitlines() also splits at U+2028 and U+0085, which JSON strings hold unescaped
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{str(metadata)!r} line {i}: expected one JSON object per line, found {line[:60]!r} "
                            f"({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{str(metadata)!r} line {i}: expected a JSON object, found {line[:60]!r}")
        rows.append((f"line {i}", row))
    return rows


def _caption_of(row: dict, metadata: Path, where: str) -> str:
    columns = [c for c in CAPTION_COLUMNS if c in row]
    if len(columns) != 1:
        raise DataError(f"{str(metadata)!r} {where}: expected one caption column ({' or '.join(map(repr, CAPTION_COLUMNS))}), "
                        f"found the columns {sorted(row)}")
    if not isinstance(row[columns[0]], str):
        raise DataError(f"{str(metadata)!r} {where}: expected the caption {columns[0]!r} as text, found "
                        f"{row[columns[0]]!r:.60}")
    return row[columns[0]].strip()


def _from_sidecars(folder: Path, pictures: list[Path]) -> list[str]:
    captions = {}
    for picture in pictures:
        beside = [picture.with_suffix(s) for s in SIDECAR_SUFFIXES if picture.with_suffix(s).is_file()]
        if beside:
            captions[picture] = _read_text(beside[0]).strip()
    if not captions:
        raise DataError(f"data folder {str(folder)!r}: expected captions for text2image, {HOW}; found none")
    return _every_picture_captioned(folder, pictures, captions, f"a text file beside it ({' or '.join(SIDECAR_SUFFIXES)})")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")   # a spreadsheet's CSV, Notepad's UTF-8, start with a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"caption file {str(path)!r}: expected UTF-8 text, found it unreadable ({exc}): save it as "
                        "UTF-8") from None


def _every_picture_captioned(folder: Path, pictures: list[Path], captions: dict[Path, str], form: str) -> list[str]:
    uncaptioned = [str(p.relative_to(folder)) for p in pictures if p not in captions]
    if uncaptioned:
        raise DataError(f"data folder {str(folder)!r}: expected a caption for every picture ({form}; an empty one "
                        f"trains the picture as unconditional), found {len(uncaptioned)} of its {len(pictures)} "
                        f"pictures without one: {_named(uncaptioned)}")
    return [captions[p] for p in pictures]


def _say_sidecars_unread(folder: Path, pictures: list[Path], metadata: str) -> None:
    """Text files beside the pictures as well as a metadata file: the metadata is read, said."""
    beside = [p for p in pictures if any(p.with_suffix(s).is_file() for s in SIDECAR_SUFFIXES)]
    if beside:
        warnings.warn(f"data folder {str(folder)!r}: captions read from {metadata}; the text files beside "
                      f"{len(beside)} of its pictures are not read", EdgegenWarning, stacklevel=4)


def _named(names: list[str]) -> str:
    return ", ".join(map(repr, names[:MAX_NAMED])) + (f" and {len(names) - MAX_NAMED} more" if len(names) > MAX_NAMED else "")
