"""The model package: the contract between export and runtime.

A package is a directory with ``edgegen.json`` at its root (the manifest) and the ONNX
graphs it names. The runtime trusts nothing in it: the format version, every field's type,
every path (it must stay inside the package), every graph file's sha256 are checked here.

This module is runtime code: it must never import torch or onnx.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import BackendError, ConfigError, EdgegenError, HashMismatchError, ManifestError, OutputExistsError, PackageError, \
    close_match, format_mismatch, where_export_runs
from .external_data import external_data_files
from .storage import atomic_write_text, can_write_files_in, creation_mode, resolved, user_cache_dir

FORMAT = "edgegen.package/1"
MANIFEST_NAME = "edgegen.json"
PACKAGE_KIND = "an edgegen package"   # what --force may replace: a folder holding MANIFEST_NAME
PACKAGE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")   # a folder name anywhere (a Triton model's), never hidden


def check_name(name: str | None) -> None:
    """A package's name as given (the default, its source folder's, made to fit by name_from_folder): one a model folder can take
    as it is, since Triton's repository names each model's folder by it."""
    if name is not None and (not isinstance(name, str) or not PACKAGE_NAME.fullmatch(name)):
        raise ConfigError(f"name (--name): expected letters, digits, '_', '.' and '-', not starting with '.' or '-' "
                          f"(a model folder's name), found {name!r}")


def name_from_folder(folder_name: str) -> str:
    """A package's default name, from the folder it came from, as check_name takes it: its other
    characters as "_" and no leading "." or "-" (a hidden folder, "." or ".." itself)."""
    if PACKAGE_NAME.fullmatch(folder_name):
        return folder_name
    return re.sub(r"[^A-Za-z0-9_.-]", "_", folder_name).lstrip(".-") or "model"


SOURCE_DATE_EPOCH = "SOURCE_DATE_EPOCH"   # reproducible-builds.org's variable: the time a build records


def created_time() -> str:
    """When a package is made, UTC: now, or $SOURCE_DATE_EPOCH's seconds where it is set, so that
    a pipeline exporting one checkpoint twice gets the same manifest bytes to cache on. A value
    that is not whole seconds is refused, an empty one too: numpy reads the variable as it imports
    its f2py (under scipy and scikit-learn) and fails on '' with a bare ValueError."""
    given = os.environ.get(SOURCE_DATE_EPOCH)
    if given is None:
        return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        if not re.fullmatch(r"[0-9]+", given):   # ASCII digits: str.isdigit takes '²' and '٣'
            raise ValueError(given)
        return datetime.datetime.fromtimestamp(int(given), datetime.timezone.utc).isoformat(timespec="seconds")
    except (ValueError, OverflowError, OSError):   # past what a date holds too (year 9999)
        unset = " (unset it for the time now)" if not given else ""
        raise ConfigError(f"{SOURCE_DATE_EPOCH}: expected whole seconds since 1970-01-01 UTC (the time a build "
                          f"records), found {given!r}{unset}") from None


CHECKPOINT_WEIGHTS = "weights.safetensors"   # the file every checkpoint holds (training.checkpoint)
# numpy dtype names that a graph input or output may carry.
DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")
# the precisions `edgegen optimize` writes variants of (fused: fp32 after ONNX Runtime's transformer
# fusions; int4 and int8-weights: block-wise weight-only quantization of token models' MatMuls)
VARIANT_PRECISIONS = ("int8", "fp16", "fused", "int4", "int8-weights")
PRECISIONS = ("fp32", *VARIANT_PRECISIONS)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def may_be_empty(dim: str) -> bool:
    """Whether a dynamic dim may be 0: a past cache's length ("past..."), empty at the first decode
    step. edgegen's TensorRT profiles and a user's module's input checks share the rule."""
    return dim.startswith("past")


def sizes_missed(dim: str, size: int, least: int, most: int, step: int = 1) -> str | None:
    """The sizes a package takes for dynamic dim `dim` ("height 8 to 64 in multiples of 4"), where
    `size` is not one of them, else None: the runtime's and optimize's refusals say it so."""
    if least <= size <= most and not size % step:
        return None
    return f"{dim} {least} to {most}" + (f" in multiples of {step}" if step > 1 else "")


def least_size(dim: str, minimums: dict) -> int:
    """The smallest size a package takes for a dynamic dim: its recorded minimum (a user's module:
    the least its export checked), else 0 for a past cache and 1 for the others. The runtime's
    refusals and TensorRT's profiles share it."""
    return int(minimums.get(dim, 0 if may_be_empty(dim) else 1))


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, numpy dtype name and shape.

    A dim is an int (static) or a string naming a dynamic axis ("batch"); the same string
    in two inputs of one graph means the two dims must be equal.
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    def describe(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class GraphEntry:
    """One ONNX graph of the package: file (relative to the package), hash and signature."""

    file: str
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            **self.extra,
        }


@dataclass
class Manifest:
    family: str
    name: str
    config: dict[str, Any]
    graphs: dict[str, GraphEntry]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    # variants of precisions this edgegen does not know, which a newer one wrote: never read, and
    # written back as they are, so that optimizing here keeps them for the edgegen that reads them
    foreign_variants: dict[str, Any] = field(default_factory=dict)
    # top-level fields this edgegen does not know (a newer one's records): written back as they are
    foreign_fields: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.foreign_fields,   # first: a field this edgegen writes is never one read back from disk
            "format": self.format,
            "family": self.family,
            "name": self.name,
            "config": self.config,
            "graphs": {part: g.to_json() for part, g in self.graphs.items()},
            "variants": {**self.variants, **self.foreign_variants},
            "provenance": self.provenance,
        }

    @classmethod
    def from_json(cls, data: Any, where: str) -> "Manifest":
        """Validate a parsed edgegen.json; `where` names the file in error messages."""
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: expected a JSON object at the top level, found {type(data).__name__}")
        fmt = data.get("format")
        if fmt != FORMAT:
            raise ManifestError(format_mismatch(where, FORMAT, fmt))
        family = _field(data, "family", str, where)
        name = _field(data, "name", str, where)   # never a path: triton names folders by name_from_folder(name)
        config = _field(data, "config", dict, where)
        graphs_json = _field(data, "graphs", dict, where)
        if not graphs_json:
            raise ManifestError(f"{where}: expected at least one graph in 'graphs', found none")
        graphs = {part: _graph_entry(g, f"{where}: graphs.{part}") for part, g in graphs_json.items()}
        variants = data.get("variants", {})
        if not isinstance(variants, dict):
            raise ManifestError(f"{where}: expected 'variants' to be an object, found {type(variants).__name__}")
        # a device's older runtime still runs fp32 and the precisions it knows of a newer edgegen's package
        foreign = {p: parts for p, parts in variants.items() if p not in VARIANT_PRECISIONS}
        variants = {p: parts for p, parts in variants.items() if p not in foreign}
        for precision, parts in variants.items():
            _check_variant_records(precision, parts, f"{where}: variants.{precision}")
        provenance = data.get("provenance", {})
        if not isinstance(provenance, dict):
            raise ManifestError(f"{where}: expected 'provenance' to be an object, found {type(provenance).__name__}")
        _check_source_record(provenance.get("source_checkpoint"), f"{where}: provenance.source_checkpoint")
        known = ("format", "family", "name", "config", "graphs", "variants", "provenance")
        fields = {key: value for key, value in data.items() if key not in known}
        return cls(family, name, config, graphs, variants, provenance, fmt, foreign, fields)


# the fields of a variant record that edgegen reads back (optimize writes them), with their JSON types;
# a hand-edited or damaged one is refused as the manifest's error instead of failing where it is read
_VARIANT_FIELDS = {"file": str, "sha256": str, "refused": str, "target": str, "gate": dict, "last_refused": dict,
                   "speedup_ort_cpu": (int, float), "speed_measured_at": str, "disabled_optimizers": list,
                   "weights": str, "spared_matmuls": list, "spared_weights": list, "spared_share": (int, float), "ort_form": str,
                   "onnxruntime": str, "ort_form_declined": str, "external_data": dict, "block_size": int, "form": str, "search": dict}
_JSON_TYPES = {str: "a string", dict: "an object", list: "a list", int: "an integer", (int, float): "a number"}


def _check_source_record(source: Any, where: str) -> None:
    """Where the package came from, as optimize and bench --vs-torch read it back: its checkpoint's
    path, the data export gated on, the weights' sha256."""
    if source is None:
        return
    if not isinstance(source, dict):
        raise ManifestError(f"{where}: expected an object, found {source!r:.60}")
    for key in ("path", "data", "weights_sha256"):
        if source.get(key) is not None and not isinstance(source[key], str):
            raise ManifestError(f"{where}.{key}: expected a string, found {source[key]!r:.60}")


def _check_variant_records(precision: str, parts: Any, where: str) -> None:
    if not isinstance(parts, dict):
        raise ManifestError(f"{where}: expected an object of graph records, found {parts!r:.60}")
    for part, record in parts.items():
        if not isinstance(record, dict):
            raise ManifestError(f"{where}.{part}: expected an object, found {record!r:.60}")
        for key, kind in _VARIANT_FIELDS.items():
            value = record.get(key)
            if key in record and (not isinstance(value, kind) or isinstance(value, bool)):
                raise ManifestError(f"{where}.{part}.{key}: expected {_JSON_TYPES[kind]}, found {value!r:.60}")
        if "file" in record and record.get("gate", {}).get("passed") is not True:
            raise ManifestError(f"{where}.{part}: a written variant expected a gate that passed (gate.passed true), "
                                f"found gate.passed {record.get('gate', {}).get('passed')!r:.40}")
        if not all(isinstance(name, str) for name in record.get("disabled_optimizers", [])):
            raise ManifestError(f"{where}.{part}.disabled_optimizers: expected a list of ONNX Runtime optimizer names, "
                                f"found {record['disabled_optimizers']!r:.60}")


def _field(obj: dict, key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise ManifestError(f"{where}: missing required field {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ManifestError(f"{where}: expected {key!r} to be {kind.__name__}, found {type(value).__name__} {value!r:.60}")
    return value


def _tensor_spec(obj: Any, where: str) -> TensorSpec:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected an object with name, dtype and shape, found {obj!r:.60}")
    name = _field(obj, "name", str, where)
    dtype = _field(obj, "dtype", str, where)
    if dtype not in DTYPES:
        raise ManifestError(f"{where}: expected dtype of {name!r} to be one of {', '.join(DTYPES)}, found {dtype!r}")
    shape = _field(obj, "shape", list, where)
    for dim in shape:
        ok = isinstance(dim, str) and dim or isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0
        if not ok:
            raise ManifestError(f"{where}: expected dims of {name!r} to be non-negative ints or axis names, found {dim!r}")
    return TensorSpec(name, dtype, tuple(shape))


def _check_sha256(sha: Any, where: str) -> None:
    """A recorded sha256 that is no digest is a broken manifest, not a file changed after export."""
    if not isinstance(sha, str) or not _SHA256.match(sha):
        raise ManifestError(f"{where}: expected sha256 to be 64 lowercase hex digits, found {sha!r:.80}")


def _graph_entry(obj: Any, where: str) -> GraphEntry:
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected an object, found {type(obj).__name__}")
    file = _field(obj, "file", str, where)
    sha = _field(obj, "sha256", str, where)
    _check_sha256(sha, where)
    inputs = tuple(_tensor_spec(t, f"{where}.inputs") for t in _field(obj, "inputs", list, where))
    outputs = tuple(_tensor_spec(t, f"{where}.outputs") for t in _field(obj, "outputs", list, where))
    if not inputs or not outputs:
        raise ManifestError(f"{where}: expected at least one input and one output")
    extra = {k: v for k, v in obj.items() if k not in ("file", "sha256", "inputs", "outputs")}
    opset = extra.get("opset")   # the targets' parsers are judged by it (a string passed every check)
    if "opset" in extra and (isinstance(opset, bool) or not isinstance(opset, int) or opset < 1):
        raise ManifestError(f"{where}: expected opset to be a positive integer, found {opset!r:.40}")
    validation = extra.get("validation")   # the export writes no graph that failed its check against PyTorch
    if validation is not None and (not isinstance(validation, dict) or validation.get("passed") is not True):
        found = validation.get("passed") if isinstance(validation, dict) else validation
        raise ManifestError(f"{where}.validation: expected the record of a check against PyTorch that passed "
                            f"(passed true: the export writes no other), found passed {found!r:.40}")
    # what info prints (a figure float JSON cannot hold is written null: write_manifest)
    for name, kinds, what in (("max_abs", (int, float, type(None)), "a number"), ("batches", list, "a list"),
                              ("feeds", list, "a list")):
        if validation is not None and name in validation and (isinstance(validation[name], bool)
                                                              or not isinstance(validation[name], kinds)):
            raise ManifestError(f"{where}.validation.{name}: expected {what}, found {validation[name]!r:.40}")
    return GraphEntry(file, sha, inputs, outputs, extra)


# what users bring from Hugging Face, by the files that mark it: (markers, the export option that
# imports it, what it is)
HUGGING_FACE_FOLDERS = ((("model_index.json",), "--from-diffusers", "a diffusers pipeline"),
                        (("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"),
                         "--from-transformers", "a transformers save_pretrained folder"))


def hugging_face_folder(path: Path) -> tuple[str, str] | None:
    """(the export option that imports it, what it is) where the folder `path` is a diffusers
    pipeline's or a transformers model's save_pretrained folder, else None."""
    for markers, route, what in HUGGING_FACE_FOLDERS:
        if any((path / marker).is_file() for marker in markers):
            return route, what
    return None


def read_json(path: Path, error: type[Exception]) -> Any:
    """Parse a JSON file, raising `error` (an EdgegenError) that names the file on bad input."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: expected valid JSON, found a parse error: {exc}") from None
    except RecursionError:
        raise error(f"{path}: expected valid JSON, found arrays or objects nested deeper than Python's parser "
                    "goes") from None
    except OSError as exc:   # unreadable (another user's mode), a FIFO that errs, a name too long
        raise error(f"{path}: expected a JSON file this user can read, found {exc.strerror or exc}") from None


def files_sha256(paths: list) -> str:
    """One hash of several files (a checkpoint's weight shards): a single file's own sha256, else
    the sha256 of their sha256s in the order given."""
    if len(paths) == 1:
        return sha256_file(paths[0])
    return hashlib.sha256("".join(sha256_file(p) for p in paths).encode()).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def spared_text(record: dict) -> str:
    """What an int4 variant's record says its search kept out of 4 bits, for a line of output
    (`edgegen optimize` and `edgegen info`, which the runtime alone runs too)."""
    share = record.get("spared_share")
    return (f"{len(record.get('spared_matmuls') or [])} of {record.get('matmuls', '?')} MatMuls ("
            + (f"{share:.0%}" if isinstance(share, (int, float)) else "?")
            + f" of the MatMul weights) in {record.get('spared_as', '?')}")


def shipped_hint(path) -> str:
    """For a bare name that is no path: the shipped model it is closest to, if one is close (a typo),
    or those it begins, as a family's name begins its shipped models' ("vae" for vae-digits)."""
    from .shipped import MODELS_MISSING, is_bare_name, shipped_names

    if not is_bare_name(path):
        return ""
    names = shipped_names()
    if not names:
        return f" (if it names a shipped model: {MODELS_MISSING})"
    begun = [name for name in names if name.startswith(f"{path}-")]
    if len(begun) > 1:
        return f" (did you mean one of the shipped models {', '.join(map(repr, begun))}?)"
    close = begun[0] if begun else close_match(str(path), names)
    return f" (did you mean the shipped model {close!r}?)" if close else " (nor a shipped model's name: edgegen list)"


def _shadows_shipped(path: Path) -> str:
    """The hint, where a folder that is no package is named like a shipped model, that the name reached
    that folder (a path that exists is taken as given), not the model."""
    from .shipped import is_shipped_name

    if not is_shipped_name(str(path)):
        return ""
    return (f"; {str(path)!r} is also a shipped model's name, and a folder that exists is read as the package: "
            "for the shipped model, run the command from another folder, or rename this one")


class Package:
    """A package read from disk and checked: the manifest is valid, every file is inside
    the package and has the recorded hash."""

    def __init__(self, path: str | os.PathLike, verify_hashes: bool = True):
        if not isinstance(path, (str, os.PathLike)):
            raise PackageError(f"package: expected a package directory's path or a shipped model's name, found "
                               f"{type(path).__name__}")
        if not os.fspath(path):   # Path("") would be the current folder, said as '.'
            raise PackageError("package: expected a package directory's path or a shipped model's name, found an "
                               "empty path")
        self.path = Path(path)
        if not self.path.exists():
            raise PackageError(f"package {str(self.path)!r}: expected a package directory, found nothing at that path"
                               + shipped_hint(path))
        if not self.path.is_dir():
            raise PackageError(f"package {str(self.path)!r}: expected a directory with {MANIFEST_NAME}, found a file")
        manifest_path = self.path / MANIFEST_NAME
        if not manifest_path.is_file():
            if (self.path / CHECKPOINT_WEIGHTS).is_file():
                raise PackageError(f"package {str(self.path)!r}: expected a package ('edgegen export' writes one), found "
                                   "a checkpoint: export it first (edgegen export CHECKPOINT --out PACKAGE)")
            if found := hugging_face_folder(self.path):   # from Hugging Face: the way in
                route, what = found
                raise PackageError(f"package {str(self.path)!r}: expected a package ('edgegen export' writes one), "
                                   f"found {what}: import it first (edgegen export {route} DIR --out PACKAGE)")
            raise PackageError(f"package {str(self.path)!r}: expected {MANIFEST_NAME} in it, found none (is this a "
                               f"package made by 'edgegen export'?){_shadows_shipped(self.path)}")
        self.resolve(MANIFEST_NAME, MANIFEST_NAME)   # a link to a file outside is refused, as a graph's is
        self.manifest = Manifest.from_json(read_json(manifest_path, ManifestError), str(manifest_path))
        for part, entry in self.manifest.graphs.items():
            path = self.resolve(entry.file, f"graphs.{part}.file")
            if not path.is_file():
                raise PackageError(f"package {str(self.path)!r}: graph {part!r} expected at {entry.file!r}, found "
                                   f"{_not_a_file(path)}")
            if verify_hashes:
                found = sha256_file(path)
                if found != entry.sha256:
                    raise HashMismatchError(
                        f"package {str(self.path)!r}: graph {part!r} file {entry.file!r} expected sha256 {entry.sha256[:16]}..., "
                        f"found {found[:16]}... ({CHANGED_AFTER_EXPORT})"
                    )
                self._check_external_data(path, entry.extra.get("external_data"), f"graph {part!r}")
        # a damaged variant (its file changed or gone) keeps the rest of the package usable: fp32, the
        # other precisions, info, and the optimize run that writes it again; only its precision is refused
        self.damaged_variants: dict[str, dict[str, PackageError]] = {}
        for precision in self.manifest.variants:
            for part, record in self.variant_files(precision).items():
                try:
                    self._check_variant(precision, part, record, verify_hashes)
                except ManifestError:
                    raise
                except PackageError as exc:
                    self.damaged_variants.setdefault(precision, {})[part] = exc

    def variant_files(self, precision: str) -> dict[str, dict]:
        """{part: record} of the variants of `precision` that were written (refusals have no file)."""
        parts = self.manifest.variants.get(precision, {})
        if not isinstance(parts, dict):
            raise ManifestError(f"package {str(self.path)!r}: expected variants.{precision} to be an object, found {parts!r:.60}")
        return {part: r for part, r in parts.items() if isinstance(r, dict) and "file" in r}

    def level_without_disabled(self, precision: str, part: str) -> str | None:
        """ONNX Runtime's highest graph optimization level ("extended" or "basic") below which the
        optimizers that graph `part`'s variant at `precision` turns off by name do not run, for a
        runner that cannot name one (GenAI's config, Triton's onnxruntime backend); None where it
        turns none off. edgegen's sessions turn them off by name (the int8 form's QDQ propagation;
        an fp16 graph's NCHWc layout, which crashed ONNX Runtime). NCHWc is the all level's: the
        extended one keeps the rest."""
        disabled = self.variant_files(precision).get(part, {}).get("disabled_optimizers") if precision != "fp32" else None
        if not disabled:
            return None
        return "extended" if set(disabled) <= {"NchwcTransformer"} else "basic"

    def missing_variants(self, precision: str, part: str | None = None) -> str | None:
        """Why the package cannot run at `precision` (graph `part`'s variant, or any variant): a
        message naming what to run, or None where `edgegen optimize` wrote them (or for fp32)."""
        damage = self._damage(precision, part)
        if damage is not None:
            return str(damage)
        written = self.variant_files(precision)
        if precision == "fp32" or (part in written if part else written):
            return None
        records = self.manifest.variants.get(precision) or {}
        refusals = {p: r.get("refused") for p, r in records.items() if isinstance(r, dict) and (part is None or p == part)}
        what = f"the {precision} variant of graph {part!r}" if part else f"{precision} variants"
        why = "; ".join(f"{p}: {reason}" for p, reason in refusals.items())
        return (f"package {str(self.path)!r}: expected {what} (made by 'edgegen optimize --precision {precision}'"
                f"{self._optimized_copy(precision)}{where_export_runs()}), found {f'none written ({why})' if refusals else 'none'}")

    def _optimized_copy(self, precision: str) -> str:
        """For a shipped model's package, how its variants are made: optimize refuses the package every
        use of the name shares (this said to run what optimize then refused)."""
        from .shipped import shared_package_of

        if (shipped := shared_package_of(self.path)) is None:
            return ""
        copy = f"pkg-{shipped}"
        return (f" on a copy of a shipped model's package, which every use of its name shares: cp -r {self.path} "
                f"{copy}, edgegen optimize {copy} --precision {precision}, then run {copy} in its place")

    def fp32_graphs(self, precision: str) -> dict[str, str]:
        """{part: why} of the graphs that run in fp32 when the package runs at `precision`: those
        without a variant of it. Variants are gated per graph, so one graph's refusal leaves the
        others at `precision` (docs/optimization.md); a user should still be told which ran fp32."""
        if precision == "fp32":
            return {}
        written = self.variant_files(precision)
        records = self.manifest.variants.get(precision) or {}

        def why(part: str) -> str:
            record = records.get(part)
            if isinstance(record, dict) and record.get("refused"):
                return f"its {precision} variant was refused: {record['refused']}"
            return f"no {precision} variant was made of it"

        return {part: why(part) for part in self.graphs if part not in written}

    def require_variants(self, precision: str, error: type[EdgegenError]) -> None:
        """Raise where the package cannot run at `precision`: a variant changed since optimize wrote
        it as its own error (HashMismatchError, PackageError), none written as `error`."""
        damage = self._damage(precision, None)
        if damage is not None:
            raise damage
        missing = self.missing_variants(precision)
        if missing:
            raise error(missing)

    def _damage(self, precision: str, part: str | None) -> PackageError | None:
        """The first damaged variant of `precision` (of graph `part`), its message saying how to mend it."""
        found = [exc for p, exc in self.damaged_variants.get(precision, {}).items() if part is None or p == part]
        if not found:
            return None
        return type(found[0])(f"{found[0]} (edgegen optimize {str(self.path)!r} --precision {precision} writes it "
                              f"again{where_export_runs()}; the package's other precisions still run)")

    def _check_variant(self, precision: str, part: str, record: dict, verify_hashes: bool) -> None:
        where = f"variants.{precision}.{part}"
        if not isinstance(record.get("file"), str):   # a broken manifest, not a variant to write again
            raise ManifestError(f"package {str(self.path)!r}: {where}.file expected a string, found "
                                f"{record.get('file')!r:.60}")
        _check_sha256(record.get("sha256"), f"package {str(self.path)!r}: {where}")
        if part not in self.manifest.graphs:
            raise ManifestError(f"package {str(self.path)!r}: {where} expected to name a graph of the package, found {part!r}")
        path = self.resolve(str(record["file"]), f"{where}.file")
        if not path.is_file():
            raise PackageError(f"package {str(self.path)!r}: {where} expected at {record['file']!r}, found {_not_a_file(path)}")
        if verify_hashes and sha256_file(path) != record.get("sha256"):
            raise HashMismatchError(f"package {str(self.path)!r}: {precision} variant of graph {part!r} ({record['file']!r}) "
                                    f"expected sha256 {str(record.get('sha256'))[:16]}..., found another (changed after optimize)")
        if verify_hashes:
            self._check_external_data(path, record.get("external_data"), f"{precision} variant of graph {part!r}")

    def _check_external_data(self, graph: Path, recorded: Any, what: str) -> None:
        """Every external-data file the graph reads (ONNX Runtime loads them with it) is inside
        the package and has the sha256 its manifest record gives (`external_data`: {location:
        sha256}, written by external_data_record); an unrecorded one is refused."""
        recorded = recorded if isinstance(recorded, dict) else {}
        for location in external_data_files(graph):
            if os.path.isabs(location):   # said as the graph names it, not as a path climbing out of the package
                raise ManifestError(f"package {str(self.path)!r}: {what}'s external data expected a path relative to "
                                    f"the graph, inside the package, found absolute {location!r}")
            relative = os.path.relpath(os.path.join(graph.parent, location), self.path.resolve())
            path = self.resolve(relative, f"{what} external data")   # refused if it leaves the package
            if location not in recorded:
                raise HashMismatchError(f"package {str(self.path)!r}: {what} reads external data {location!r}, expected "
                                        "its sha256 in the manifest, found none (added after export?)")
            _check_sha256(recorded[location], f"package {str(self.path)!r}: {what}'s external data {location!r}")
            if not path.is_file() or sha256_file(path) != recorded[location]:
                raise HashMismatchError(f"package {str(self.path)!r}: {what}'s external data {location!r} expected sha256 "
                                        f"{str(recorded[location])[:16]}..., found "
                                        + ("no such file" if not path.is_file() else f"another ({CHANGED_AFTER_EXPORT})"))

    @property
    def family(self) -> str:
        return self.manifest.family

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.config

    @property
    def graphs(self) -> dict[str, GraphEntry]:
        return self.manifest.graphs

    def resolve(self, relative: str, what: str) -> Path:
        """The absolute path of a file named in the manifest, refusing any that leaves the package."""
        root = self.path.resolve()
        if os.path.isabs(relative):
            raise ManifestError(f"package {str(self.path)!r}: {what} expected a path relative to the package, found absolute {relative!r}")
        try:
            target = (root / relative).resolve()
            os.stat(target)   # a link to itself or a name too long is refused here, not where the file is opened
        except (FileNotFoundError, NotADirectoryError):
            pass   # said by the caller, which knows what was expected there
        except (ValueError, RuntimeError, OSError) as exc:   # a NUL in the name; a link loop (Python < 3.13 raises)
            found = getattr(exc, "strerror", None) or str(exc)
            if isinstance(exc, OSError) and exc.errno not in (errno.ELOOP, errno.ENAMETOOLONG):
                raise PackageError(f"package {str(self.path)!r}: {what} {relative!r} expected a file this user can "
                                   f"read, found {found}") from None
            raise ManifestError(f"package {str(self.path)!r}: {what} expected a file name the system can open, found "
                                f"{relative!r:.100} ({found})") from None
        if target != root and root not in target.parents:
            link = next((p for p in (root / relative, *(root / relative).parents) if p.is_symlink()), None)
            how = f" (a symbolic link: {str(link)!r} points to {os.readlink(link)!r}; copy the file in)" if link else ""
            raise ManifestError(f"package {str(self.path)!r}: {what} expected a path inside the package, found "
                                f"{relative!r} which leaves it{how}")
        return target

    def recorded_file(self, record: Any, field: str, what: str, missing: str = "", instead: str = "") -> Path:
        """The file a config record names with its sha256 ({"file", "sha256"}: the tokenizer, the
        held-out inputs), inside the package, there, and with the bytes recorded. `field` names the
        record in the manifest, `what` the file in messages, `missing` what to do if it is gone,
        `instead` what else to do if it changed."""
        file = record.get("file") if isinstance(record, dict) else None
        if not isinstance(file, str) or not file:
            raise ManifestError(f"package {str(self.path)!r}: {field}.file expected a file name, found {file!r:.80}")
        sha = record.get("sha256")
        _check_sha256(sha, f"package {str(self.path)!r}: {field}")
        path = self.resolve(file, f"{field}.file")
        if not path.is_file():
            raise PackageError(f"package {str(self.path)!r}: {what} expected at {file!r}, found {_not_a_file(path)}{missing}")
        if sha256_file(path) != sha:
            raise HashMismatchError(f"package {str(self.path)!r}: {what} {file!r} expected sha256 {sha[:16]}..., found "
                                    f"another ({CHANGED_AFTER_EXPORT}{instead})")
        return path

    def graph_digests(self, precision: str = "fp32") -> dict[str, str]:
        """{graph file: digest} of the graphs loaded at `precision`: each file's sha256 and its
        external data's, as the manifest records them. An engine built from a graph is that graph's
        only while its file's digest holds (ONNX Runtime names its engines by the graph's path and
        structure, not its weights)."""
        digests = {}
        for part, entry in self.graphs.items():
            record = self.variant_record(part, precision)
            file, sha = (record["file"], record.get("sha256")) if record else (entry.file, entry.sha256)
            digests[file] = with_external_data(sha, self.external_data(part, precision))
        return digests

    def external_data(self, part: str, precision: str = "fp32") -> dict[str, str]:
        """{location: sha256} of the external-data files graph `part` reads at `precision`, as its
        record in the manifest gives them (none for a graph under 2 GB)."""
        record = self.variant_record(part, precision)
        return dict((record if record is not None else self.graphs[part].extra).get("external_data") or {})

    def variant_record(self, part: str, precision: str) -> dict | None:
        """The record of graph `part`'s variant run at `precision`: None at fp32, or where none was
        written (the graph runs in fp32 then)."""
        return self.variant_files(precision).get(part) if precision != "fp32" else None

    def graph_path(self, part: str, precision: str = "fp32") -> Path:
        """The graph file of `part`; for another precision its variant where one was written, else fp32's."""
        record = self.variant_record(part, precision)
        if record is not None:
            return self.resolve(record["file"], f"variants.{precision}.{part}.file")
        return self.resolve(self.manifest.graphs[part].file, f"graphs.{part}.file")


def _not_a_file(path: Path) -> str:
    """What lies at a path where a file was expected: a folder, something else (a FIFO), or nothing."""
    return "a folder" if path.is_dir() else "something other than a file" if path.exists() else "no such file"


def refuse_output_inside_edgegens(what: str, out: str | os.PathLike) -> None:
    """An output (a file or a folder) never goes inside an edgegen package or checkpoint: their
    files are hashed, and one replaced (a graph, the manifest) breaks it; a file or folder added
    makes --force refuse to replace it."""
    if not isinstance(out, (str, os.PathLike)):   # Path(None)'s TypeError named neither (an empty one: refuse_empty)
        raise ConfigError(f"{what}: expected a path, found {out!r:.60}")
    for folder in resolved(out, what).parents:
        for kind, markers in (("package", (MANIFEST_NAME,)), ("checkpoint", (CHECKPOINT_WEIGHTS, "config.json"))):
            if all((folder / marker).is_file() for marker in markers):
                raise OutputExistsError(f"{what} {str(out)!r}: expected a path outside edgegen's packages and "
                                        f"checkpoints, found it inside the {kind} {str(folder)!r}")


def fp32_graphs_note(precision: str, graphs: dict[str, str]) -> str | None:
    """One line naming the graphs that run in fp32 at `precision` and why ({part: why}, from
    Package.fp32_graphs), or None where none do."""
    if not graphs:
        return None
    return f"precision {precision}: " + "; ".join(f"graph {part!r} runs in fp32 ({why})" for part, why in graphs.items())


def with_external_data(graph_sha256: str, external: dict[str, str]) -> str:
    """A graph's identity: its file's sha256, and where it reads external data (its weights, over
    2 GB), a digest of both: the graph file stays the same when only those weights change."""
    if not external:
        return graph_sha256
    return hashlib.sha256(json.dumps([graph_sha256, external], sort_keys=True).encode()).hexdigest()


def external_data_record(graph: str | os.PathLike) -> dict[str, str]:
    """{location: sha256} of the external-data files a graph reads: what a writer puts in the
    graph's (or variant's) manifest record as `external_data`, for Package to check."""
    graph = Path(graph)
    return {location: sha256_file(graph.parent / location) for location in external_data_files(graph)}


# the name `edgegen optimize` gives a variant file; one the manifest does not name is a killed
# run's, which the next writer removes. The hash is part of it: without it, a user's own
# generator.fp16.onnx beside the graphs was taken for one and deleted (an earlier edgegen's unhashed
# variant files are named by their manifests)
VARIANT_FILE = re.compile(r"^.+\.(int8|fp16|fused|int4|int8-weights)\.[0-9a-f]{12}\.onnx$")
GENAI_CONFIG = "genai_config.json"
# written into packages that do not record them: ONNX Runtime GenAI's config and an imported
# tokenizer's settings (packages exported before provenance.files_beside), the engine cache
ENGINE_CACHE = ".edgegen-cache"   # engines built from a package on the machine that uses it (runtimes.engines)
# how a user names another engine folder than one this user cannot write in
ANOTHER_ENGINE_FOLDER = ("pass edgegen.load's cache_dir= or edgegen build's --cache-dir, or set XDG_CACHE_HOME for "
                         "the user's cache")
USER_ENGINES = "engines"   # the user's cache's folder for the engines of packages this user cannot write in
ENGINES_PACKAGE_RECORD = "package-path.txt"   # in each of its folders: the package the engines were built from
UNRECORDED_FILES = (GENAI_CONFIG, "tokenizer_config.json", ENGINE_CACHE)
# what an export writes, by name, for a package whose manifest cannot be read (a re-export mends it)
EXPORTED_NAME = re.compile(r"^[^.].*\.(onnx|onnx\.data|data|npz|json)$")
# why a file hashed at export no longer matches its record, and the way out
CHANGED_AFTER_EXPORT = ("the file was changed after export: copy or install the package again from where it was "
                        "made, or export it again")   # a device may have no export
# where a hash-checked graph file and the manifest disagree: the manifest may be what changed
MANIFEST_OR_GRAPH_CHANGED = ("the manifest or the graph file was changed after export: copy or install the package "
                             "again from where it was made, or export it again")


def refuse_other_names(graph_name: str, kind: str, declared, found) -> None:
    """Refuse a graph file whose input or output names (found) are not its manifest's (declared: TensorSpecs)."""
    if sorted(spec.name for spec in declared) != sorted(found):
        raise PackageError(f"graph {graph_name!r}: manifest {kind}s {sorted(spec.name for spec in declared)} differ from "
                           f"the graph file's {sorted(found)} ({MANIFEST_OR_GRAPH_CHANGED})")


def package_files(folder: Path) -> set[str]:
    """The names at the top of a package folder that edgegen wrote: the manifest, every file it
    records (graphs, variants, their external data, held-out feeds, the tokenizer, the files the
    export wrote beside the graphs), a killed optimize's variant files and UNRECORDED_FILES.
    Anything else in it is someone else's (storage.refuse_replacing_other)."""
    names = {entry.name for entry in Path(folder).iterdir()}
    try:
        manifest = json.loads((Path(folder) / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {MANIFEST_NAME, *UNRECORDED_FILES, *(n for n in names if EXPORTED_NAME.match(n))}

    beside = manifest.get("provenance", {}).get("files_beside", []) if isinstance(manifest, dict) else []
    return {MANIFEST_NAME, *UNRECORDED_FILES, *(n for n in names if VARIANT_FILE.match(n)),
            *(n for n in beside if isinstance(n, str)),
            *(Path(name).parts[0] for name in _recorded_files(manifest) if Path(name).parts)}


def _recorded_files(value) -> list[str]:
    """Every file a manifest's (or a part of it's) records name: their "file" and external data."""
    if isinstance(value, dict):
        named = [value["file"]] if isinstance(value.get("file"), str) else []
        if isinstance(value.get("external_data"), dict):
            named += [k for k in value["external_data"] if isinstance(k, str)]
        return named + [n for v in value.values() for n in _recorded_files(v)]
    return [n for v in value for n in _recorded_files(v)] if isinstance(value, list) else []


def engine_cache_dir(package_path: str | os.PathLike, kind: str) -> Path:
    """The folder under which `kind`'s engines ("tensorrt": edgegen's, "ort-tensorrt": ONNX
    Runtime's), built from the package at `package_path`, are kept unless cache_dir= says: inside
    it (ENGINE_CACHE), beside the graphs they were built from and removed with them, where this user
    can make files in the nearest of ENGINE_CACHE/kind, ENGINE_CACHE and the package that exists.
    Else (a package on read-only storage or another user's, as a shipped model installed
    system-wide is) user_engines_dir, except that ONNX Runtime's engines already inside stay read
    there (it takes one folder) where runtimes.engines.ort_engine_cache trusts them. edgegen's own engines inside are read too (runtimes.engines).
    Nothing is made here: prepare_engine_folder makes the folder before engines are written."""
    package_path = Path(package_path)
    inside = package_path / ENGINE_CACHE
    nearest = next((p for p in (inside / kind, inside) if p.is_dir()), package_path)
    if can_write_files_in(nearest) or (kind == "ort-tensorrt" and holds_files(inside / kind)):
        return inside
    return user_engines_dir(package_path)


def user_engines_dir(package_path: str | os.PathLike) -> Path:
    """The user's cache's folder for the engines of the package at `package_path`, which this user
    cannot write in: one per resolved path (every spelling of it the same), named after the package."""
    where = Path(package_path).resolve()
    digest = hashlib.sha256(str(where).encode()).hexdigest()[:16]
    return user_cache_dir() / USER_ENGINES / f"{where.name[:64]}-{digest}"


def prepare_engine_folder(folder: Path, package_path: str | os.PathLike) -> None:
    """Make `folder` before engines are written into it and, where it lies in the package's
    user_engines_dir, record the package's path there for `edgegen cache` (which prunes the engines
    once the package is gone). A folder this user cannot make is refused, naming cache_dir=."""
    where = Path(package_path).resolve()
    own = user_engines_dir(where)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if folder.resolve().is_relative_to(own.resolve()) and engines_package(own) != str(where):
            atomic_write_text(own / ENGINES_PACKAGE_RECORD, str(where))
    except OSError as exc:
        raise engine_folder_refused(folder, exc) from None


def engine_folder_refused(folder: Path, exc: OSError) -> BackendError:
    """The error for an engine folder the system would not let this user make or write in."""
    return BackendError(f"engine cache {str(folder)!r}: expected a folder this user can write engines in, found "
                        f"{exc.strerror or exc} ({ANOTHER_ENGINE_FOLDER})")


def holds_files(folder: Path) -> bool:
    try:
        return any(p.is_file() for p in folder.iterdir())
    except OSError:
        return False


def engines_package(folder: Path) -> str | None:
    """The package path a user_engines_dir records, or None where it records none that can be read."""
    try:
        return (Path(folder) / ENGINES_PACKAGE_RECORD).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def copy_package(source: Path, dest: Path, precisions: Iterable[str] | None = None) -> None:
    """A copy of what edgegen wrote in the package `source` (package_files), never other files a
    user keeps beside them, nor its engine cache (the using machine's to build), in the umask's
    modes, not the source's: a copy of a package on read-only storage can be optimized and
    replaced. precisions: only these variants come, and the copy's manifest lists only them (a
    Triton model serving one precision: a Llama's other variants are gigabytes it never reads);
    None: all of them."""
    import shutil

    source = Path(source)
    kept = package_files(source) - {ENGINE_CACHE}
    manifest = None
    if precisions is not None:   # the fp32 graphs, and only the variants asked for
        manifest = read_json(source / MANIFEST_NAME, ManifestError)
        variants = manifest.get("variants") if isinstance(manifest.get("variants"), dict) else {}
        manifest["variants"] = {p: v for p, v in variants.items() if p in set(precisions)}
        # what the copy's manifest names, and nothing else of a variant's (a killed optimize's files neither)
        recorded, of_variants = set(_recorded_files(manifest)), set(_recorded_files(variants))
        kept = {n for n in kept if n in recorded or not (VARIANT_FILE.match(n) or n in of_variants)}
    _refuse_links_leaving(source, kept)
    shutil.copytree(source, dest, copy_function=shutil.copyfile,
                    ignore=lambda folder, names: [] if Path(folder) != source else [n for n in names if n not in kept])
    if manifest is not None:
        atomic_write_text(Path(dest) / MANIFEST_NAME, manifest_text(manifest))
    for copied, _, _ in os.walk(dest):
        os.chmod(copied, creation_mode(directory=True))


def _refuse_links_leaving(source: Path, names: set[str]) -> None:
    """A symbolic link among a package's files that points outside it is refused before a copy,
    which would follow it and put the file it points to (anything this user can read) into the copy."""
    root = source.resolve()
    for name in sorted(names & {entry.name for entry in source.iterdir()}):   # the manifest may name '..' or '/'

        for path in [source / name, *((source / name).rglob("*") if (source / name).is_dir() else ())]:
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise PackageError(f"package {str(source)!r}: expected its files inside it, found {str(path)!r}, a "
                                   f"symbolic link to {os.readlink(path)!r} that leaves it (copy the file in)")


def write_manifest(directory: str | os.PathLike, manifest: Manifest) -> None:
    atomic_write_text(Path(directory) / MANIFEST_NAME, manifest_text(manifest.to_json()))


def manifest_text(manifest: dict) -> str:
    """A manifest as edgegen writes it: indented, strict JSON (strict_json)."""
    return json.dumps(strict_json(manifest), indent=2, allow_nan=False) + "\n"


def strict_json(value: Any) -> Any:
    """`value` with each infinite or NaN float as null: JSON has none, and Python's Infinity (a
    no-op variant's PSNR) made the manifest one that other languages' parsers refuse; the gate's
    `line` beside it keeps the figure in words."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value
