"""TensorRT engines: built on the device, cached beside the package (in the user's cache for a
package this user cannot write in: package.engine_cache_dir), never moved.

The cache key is everything an engine depends on (docs/architecture.md): the graph file's sha256, the
TensorRT version, the GPU's name and compute capability, the precision and the shape
profile. An engine is stored with a sidecar JSON holding its key, its own sha256 and a signature of both
(HMAC-SHA256 with a key kept in the user's cache, outside any package: ~/.cache/edgegen/engine.key).
An engine is code for the GPU, so only what this user's edgegen built is trusted: on load a
record without a valid signature (an engine and record dropped into a package, copied from
another machine), a key that differs (another TensorRT, another GPU, another profile or graph)
or bytes that no longer match (edited by hand, truncated) is reported and rebuilt, never
deserialized; and the bytes that were checked are the bytes deserialized (the file is not read
a second time). Writes are atomic.

Runtime code: numpy here; `tensorrt` and cuda-python are imported only where engines are
built or run.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import (BackendError, ConfigError, EdgegenWarning, InputError, PackageError, UnknownFamilyError, described,
                      warn_caller)
from ..families import package_config, require_offered_precision
from ..package import (ENGINE_CACHE, TensorSpec, engine_cache_dir, engine_folder_refused, holds_files, least_size,
                       may_be_empty, prepare_engine_folder, user_engines_dir)
from ..storage import atomic_write_bytes, atomic_write_text, can_write_files_in, user_cache_dir, writer_lock
from ..targets import get_target, this_device_target
from .backends import require_tensorrt
from .session import Session

# the fused and int8-weights variants (and int4 made for ort-cpu) hold ONNX Runtime's own ops;
# int4 made for a TensorRT target is DequantizeLinear with int4 blocks, which TensorRT reads
ENGINE_PRECISIONS = ("fp32", "int8", "fp16", "int4")
DEFAULT_BATCH_PROFILE = (1, 1, 16)
DEFAULT_WORKSPACE_BYTES = 2 << 30


@dataclass(frozen=True)
class EngineKey:
    graph_sha256: str
    tensorrt: str
    gpu: str
    compute_capability: str
    precision: str
    profile: tuple                   # ((input name, min shape, opt shape, max shape), ...)

    def to_json(self) -> dict:
        return {**asdict(self), "profile": [[n, list(a), list(b), list(c)] for n, a, b, c in self.profile]}

    def differences(self, other: dict) -> list[str]:
        mine = self.to_json()
        return [f"{k} {other.get(k)!r} (now {mine[k]!r})" for k in mine if other.get(k) != mine[k]]


def derive_profile(inputs: tuple[TensorSpec, ...], limits: dict[str, int],
                   overrides: dict[str, tuple[int, int, int]] | None = None,
                   typical: dict[str, int] | None = None, minimums: dict[str, int] | None = None) -> tuple:
    """Min/opt/max shapes for each input from the manifest's dims: static dims as they are;
    dynamic ones from `overrides`, else `batch` 1/its typical size (default 1)/16 and other dims
    their minimum (default 1, 0 for a past cache)/their typical size (default 1)/their limit (the
    model's context, the image height, ...). TensorRT tunes its kernels for the typical (opt) shapes."""
    overrides, typical, minimums = overrides or {}, typical or {}, minimums or {}
    profile = []
    for spec in inputs:
        shapes = ([], [], [])
        for dim in spec.shape:
            if isinstance(dim, int):
                values = (dim, dim, dim)
            elif dim in overrides:
                values = overrides[dim]
            elif dim == "batch":
                low, opt, high = DEFAULT_BATCH_PROFILE
                high = int(limits.get(dim, high))
                values = (low, min(int(typical.get(dim, opt)), high), high)
            elif dim in limits:
                low = least_size(dim, minimums)
                values = (low, min(max(int(typical.get(dim, 1)), low), int(limits[dim])), int(limits[dim]))
            else:
                raise ConfigError(f"input {spec.name!r}: dynamic dim {dim!r} has no profile; expected "
                                  f"--profile {dim}=MIN:OPT:MAX")
            for shape, v in zip(shapes, values):
                shape.append(int(v))
        profile.append((spec.name, tuple(shapes[0]), tuple(shapes[1]), tuple(shapes[2])))
    return tuple(profile)


def dim_limits(package) -> dict[str, int]:
    """The largest value each dynamic dim of the package's graphs can take, as its family declares
    them from the (checked) manifest config."""
    family, config = package_config(package)
    return family.limits(config)


def package_profiles(package, profiles: list[str] | None = None, strict: bool = True) -> dict[str, tuple | list]:
    """{graph: its optimization profile}: the --profile overrides, else derived from the family's
    declared limits, with the sizes bench uses as the sizes to tune for. What build builds, the
    TensorRT sessions bind and check shows. strict=False (check): a graph with dims no limit or
    override covers maps to the list of those dims instead of raising, and a package whose family
    is not installed here (a plugin's) gets the overrides alone."""
    overrides = parse_profiles(profiles)
    dims = {d for entry in package.graphs.values() for spec in entry.inputs for d in spec.shape if isinstance(d, str)}
    if unknown := sorted(set(overrides) - dims):   # was ignored without a word
        raise ConfigError(f"--profile: expected dynamic dims of the package's graphs ({', '.join(sorted(dims)) or 'none'}), "
                          f"found {', '.join(map(repr, unknown))}")
    try:
        family, config = package_config(package)
    except UnknownFamilyError:
        if strict:
            raise
        limits, typical, minimums = {}, {}, {}
    else:
        limits, typical = family.limits(config), (family.bench_dims(config) if family.bench_dims else {})
        minimums = family.minimums(config)
    for dim, (low, _, high) in overrides.items():   # an engine for sizes the model cannot take (past its context)
        if dim in limits and dim != "batch" and high > limits[dim]:
            raise ConfigError(f"--profile {dim}: expected MAX at most {limits[dim]}, the largest {dim} the "
                              f"{family.name} package takes, found {high}")
        if dim in minimums and dim != "batch" and low < minimums[dim]:   # below it, the export never checked the graph
            raise ConfigError(f"--profile {dim}: expected MIN at least {minimums[dim]}, the smallest {dim} the "
                              f"{family.name} package takes, found {low}")
        if dim == "batch" and dim in limits and high > limits[dim]:   # rows are independent: taken, but said
            warn_caller(f"--profile batch: MAX {high} is beyond the largest batch the package declares "
                        f"({limits[dim]}); taken as asked, for batches whose outputs the export never checked",
                        EdgegenWarning)
    result = {}
    for part, entry in package.graphs.items():
        try:
            result[part] = derive_profile(entry.inputs, limits, overrides, typical, minimums)
        except ConfigError:
            if strict:
                raise
            result[part] = sorted({d for spec in entry.inputs for d in spec.shape if isinstance(d, str)
                                   and d != "batch" and d not in limits and d not in overrides})
    return result


def parse_profiles(specs: list[str] | None) -> dict[str, tuple[int, int, int]]:
    """["batch=1:4:8", ...] -> {"batch": (1, 4, 8)}."""
    profiles = {}
    for spec in specs or []:
        name, _, values = spec.partition("=")
        try:
            low, opt, high = (int(v) for v in values.split(":"))
        except ValueError:
            raise ConfigError(f"--profile {spec!r}: expected NAME=MIN:OPT:MAX with integers, found another form") from None
        # MIN 0 only for a past-cache dim: the first decode step's cache is empty (the default profile's too)
        least = 0 if may_be_empty(name) else 1
        if not least <= low <= opt <= high or high < 1:
            raise ConfigError(f"--profile {spec!r}: expected {least} <= MIN <= OPT <= MAX (MAX at least 1), found {low}, "
                              f"{opt}, {high}")
        if name in profiles:   # the last one used to win without a word
            raise ConfigError(f"--profile: expected each dim once, found {name!r} twice "
                              f"({':'.join(map(str, profiles[name]))} and {low}:{opt}:{high})")
        profiles[name] = (low, opt, high)
    return profiles


class EngineCache:
    """One engine per (graph, precision) in `folder`, with its key beside it; `read_too`: folders
    looked in after it, never written (a read-only package's own engines)."""

    def __init__(self, folder: str | os.PathLike, read_too: tuple[Path, ...] = ()):
        self.folder = Path(folder)
        self.read_too = tuple(Path(f) for f in read_too if Path(f) != self.folder)
        self.rejected: list[str] = []   # why cached engines were not used, for the user
        self.found: Path | None = None   # the engine file the last lookup returned

    @staticmethod
    def _paths(folder: Path, part: str, precision: str) -> tuple[Path, Path]:
        return folder / f"{part}.{precision}.engine", folder / f"{part}.{precision}.json"

    def engine_path(self, part: str, precision: str) -> Path:
        """Where store writes the engine of `part` at `precision`."""
        return self._paths(self.folder, part, precision)[0]

    def lookup(self, part: str, key: EngineKey) -> bytes | None:
        """The cached engine for this key from the first folder that holds one (its file in
        `found`), or None (with the reasons in `rejected`) if none does: there is none, this user's
        edgegen did not sign its record, it was built for another key, or its bytes changed."""
        for folder in (self.folder, *self.read_too):
            data = self._lookup_in(folder, part, key)
            if data is not None:
                self.found = self._paths(folder, part, key.precision)[0]
                return data
        return None

    def _lookup_in(self, folder: Path, part: str, key: EngineKey) -> bytes | None:
        engine, sidecar = self._paths(folder, part, key.precision)
        if not engine.is_file() or not sidecar.is_file():
            return None
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if not isinstance(meta, dict) or not isinstance(meta.get("key"), dict):
            self.rejected.append(f"{sidecar.name}: unreadable record, rebuilding")
            return None
        if not _signed(meta):
            self.rejected.append(f"{engine.name}: not built by this user's edgegen (its record is not signed with "
                                 f"the engine key in {str(user_cache_dir())!r}), rebuilding")
            return None
        differences = key.differences(meta.get("key", {}))
        if differences:
            self.rejected.append(f"{engine.name}: built for another setup ({'; '.join(differences)}), rebuilding")
            return None
        data = engine.read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.get("engine_sha256"):
            self.rejected.append(f"{engine.name}: its bytes changed after it was built (edited or truncated), rebuilding")
            return None
        return data

    def given_profile(self, part: str, precision: str, graph_sha256: str) -> tuple | None:
        """The profile of the cached engine of `part` at `precision` where `edgegen build --profile`
        chose it for this very graph (its record says so, signed by this user's edgegen), or None:
        the one a load without profiles asks for, so that it uses that engine rather than building
        the default one over it. A graph exported again (other limits, other inputs) has its own."""
        for folder in (self.folder, *self.read_too):
            try:
                meta = json.loads(self._paths(folder, part, precision)[1].read_text(encoding="utf-8"))
                if meta.get("profile_given") and _signed(meta) and meta["key"]["graph_sha256"] == graph_sha256:
                    return tuple((name, tuple(low), tuple(opt), tuple(high))
                                 for name, low, opt, high in meta["key"]["profile"])
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                continue   # no record, or one the lookup will say is unreadable
        return None

    def store(self, part: str, key: EngineKey, data: bytes, profile_given: bool = False) -> Path:
        engine, sidecar = self._paths(self.folder, part, key.precision)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256(data).hexdigest()
            atomic_write_bytes(engine, data)
            atomic_write_text(sidecar, json.dumps({"key": key.to_json(), "engine_sha256": digest, "bytes": len(data),
                                                   "signature": _signature(key.to_json(), digest),
                                                   "profile_given": profile_given}, indent=2) + "\n")
        except OSError as exc:
            raise engine_folder_refused(self.folder, exc) from None
        return engine


ENGINE_KEY_NAME = "engine.key"
ORT_ENGINES_MARK = "edgegen-made.json"   # in ONNX Runtime's engine folder: this user's edgegen made it there
ORT_ENGINES_GRAPHS = "edgegen-graphs.json"   # in it too: {graph file: digest} of the graphs its engines came from


def ort_engine_cache(package_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                     graphs: dict[str, str] | None = None) -> Path:
    """The folder (package.engine_cache_dir, or cache_dir=) whose ort-tensorrt/ ONNX Runtime's
    TensorRT provider keeps its engines in, made. ONNX Runtime deserializes every engine it finds
    there, unchecked, and an engine is code for the GPU, so one inside a package is read only where
    this user's edgegen made that folder at that path (its mark, signed with the engine key):
    a folder that came with a received package (a colleague's, a copy from another path, one an
    older edgegen made) is left as it is, and the engines are built in the user's cache.
    graphs: {graph file's whole path: digest} of the graphs loaded (Package.graph_digests): engines
    built from others there are removed (_forget_engines_of_other_graphs), or, in a package folder
    this user cannot write in, not read, and built in the user's cache instead."""
    if cache_dir is not None:   # the caller's own folder
        prepare_engine_folder(Path(cache_dir) / "ort-tensorrt", package_path)
        _forget_engines_of_other_graphs(Path(cache_dir) / "ort-tensorrt", graphs)
        return Path(cache_dir)
    try:
        cache = engine_cache_dir(package_path, "ort-tensorrt")
        folder = cache / "ort-tensorrt"
        inside = cache == Path(package_path) / ENGINE_CACHE
        if inside and holds_files(folder) and not _marked(folder):
            cache = user_engines_dir(package_path)
            warn_caller(f"ONNX Runtime's engines in {str(folder)!r} were not made by this user's edgegen at this path (a "
                        f"received package's, or an older edgegen's): not read, and built in {str(cache)!r} instead "
                        f"(remove {str(folder)!r} to build them in the package again)", EdgegenWarning)
            folder = cache / "ort-tensorrt"
        elif inside and not can_write_files_in(folder) and (why := _engines_of_other_graphs(folder, graphs)[2]):
            cache = user_engines_dir(package_path)   # engines it cannot remove: read from neither
            warn_caller(f"ONNX Runtime's engines in {str(folder)!r} were built {why}, and this user cannot remove "
                        f"them: not read, and built in {str(cache)!r} instead", EdgegenWarning)
            folder = cache / "ort-tensorrt"
        prepare_engine_folder(folder, package_path)
        if not holds_files(folder):   # new: marked before ONNX Runtime writes in it
            try:
                atomic_write_text(folder / ORT_ENGINES_MARK, json.dumps({"signature": _folder_signature(folder)}) + "\n")
            except OSError as exc:
                raise engine_folder_refused(folder, exc) from None
    except BackendError as exc:   # the engine key, in a user's cache this user cannot write in
        raise BackendError(f"{exc}; for ONNX Runtime's engines alone, pass edgegen.load's cache_dir=") from None
    _forget_engines_of_other_graphs(folder, graphs)
    return cache


ORT_ENGINE_FILES = (".engine", ".profile")   # its timing cache stays: layer timings, whatever the weights


def _forget_engines_of_other_graphs(folder: Path, graphs: dict[str, str] | None) -> None:
    """ONNX Runtime names an engine after its graph's path and structure, not its weights: a package
    changed in place (files replaced by a retrained model's, the same layout) ran the engines of the
    old weights. Where a graph loaded now is not the one recorded for its file, or engines lie there
    without a record (an earlier edgegen's), they are removed, said, and built again."""
    if graphs is None:
        return
    engines, recorded, why = _engines_of_other_graphs(folder, graphs)
    recorded = recorded or {}
    try:
        if why:
            for engine in engines:
                engine.unlink(missing_ok=True)
            warn_caller(f"ONNX Runtime's engines in {str(folder)!r} were built {why}: removed, and built again from the "
                        "graphs loaded", EdgegenWarning)
            recorded = {}
        # a package folder this user cannot write in, its engines of these graphs: read, the record left as it is
        if any(recorded.get(file) != digest for file, digest in graphs.items()) and can_write_files_in(folder):
            atomic_write_text(folder / ORT_ENGINES_GRAPHS, json.dumps({**recorded, **graphs}, indent=1) + "\n")
    except OSError as exc:   # the caller's cache_dir, read-only: said as the folder's
        raise engine_folder_refused(folder, exc) from None


def _recorded_graphs(folder: Path) -> dict | None:
    """The {graph path: digest} record beside ONNX Runtime's engines, or None where there is none."""
    try:
        recorded = json.loads((folder / ORT_ENGINES_GRAPHS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _engines_of_other_graphs(folder: Path, graphs: dict[str, str] | None) -> tuple[list[Path], dict | None, str]:
    """(the engine files in `folder`, the record of their graphs (None: none), why they are not the
    engines of `graphs`: "" where they may be). A graph is recorded by its whole path, so packages
    sharing a cache_dir keep theirs."""
    try:
        engines = [p for p in folder.iterdir() if p.is_file() and p.suffix in ORT_ENGINE_FILES]
    except OSError:   # no folder yet
        return [], None, ""
    recorded = _recorded_graphs(folder)
    if graphs is None or not engines:
        return engines, recorded, ""
    if recorded is None:
        return engines, None, "with no record of the graphs they came from (an earlier edgegen's)"
    changed = sorted(file for file, digest in graphs.items() if recorded.get(file) not in (None, digest))
    return engines, recorded, f"from other graphs than {', '.join(changed)} now (changed since)" if changed else ""


def _marked(folder: Path) -> bool:
    try:
        signature = json.loads((folder / ORT_ENGINES_MARK).read_text(encoding="utf-8"))["signature"]
    except (OSError, ValueError, TypeError, KeyError):
        return False
    return hmac.compare_digest(str(signature).encode("utf-8", "replace"), _folder_signature(folder).encode())


def _folder_signature(folder: Path) -> str:
    """HMAC-SHA256 of the folder's resolved path, with this user's engine key."""
    message = json.dumps({"ort-tensorrt engines in": str(folder.resolve())}).encode()
    return hmac.new(_engine_key(), message, hashlib.sha256).hexdigest()


def _signed(meta: dict) -> bool:
    """Whether an engine's record (its key and sha256) carries this user's edgegen's signature."""
    signature = str(meta.get("signature", "")).encode("utf-8", "replace")
    return hmac.compare_digest(signature, _signature(meta["key"], meta.get("engine_sha256")).encode())


def _signature(key: Any, engine_sha256: Any) -> str:
    """HMAC-SHA256 of an engine record's key and hash, with this user's engine key."""
    message = json.dumps({"key": key, "engine_sha256": engine_sha256}, sort_keys=True).encode()
    return hmac.new(_engine_key(), message, hashlib.sha256).hexdigest()


ENGINE_KEY_BYTES = 32


def _engine_key() -> bytes:
    """32 random bytes in the user's cache, made once (readable by the user alone): what signs
    the engine records this user's edgegen writes. A package carries no key, so a record in
    it signs nothing unless this user's edgegen wrote it. The key is written whole under a
    temporary name and linked into place, so no process ever reads a partial (or empty) one;
    a key of another length (damaged) is replaced, which only makes engines rebuild; so is one
    another user could have written (a shared cache): whoever can write it can sign engines."""
    path = user_cache_dir() / ENGINE_KEY_NAME
    try:
        damaged = path.is_file()
        if damaged and (loose := _writable_by_others(path)) and _modes_kept(path.parent):
            warn_caller(f"engine key {str(path)!r}: expected a file only this user can write, found {loose}: replaced "
                        "(the engines it signed are built again)", EdgegenWarning)
        elif damaged and len(key := path.read_bytes()) == ENGINE_KEY_BYTES:
            return key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{ENGINE_KEY_NAME}.", suffix=".tmp", dir=path.parent)   # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(ENGINE_KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            if damaged:                  # there, but not 32 bytes: replace it
                os.replace(tmp, path)
            else:
                with contextlib.suppress(FileExistsError):   # another process linked its key first
                    os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return path.read_bytes()
    except OSError as exc:
        raise BackendError(f"engine key {str(path)!r}: expected a readable, writable file in the user's cache "
                           f"(it signs the engines this user builds), found: {exc.strerror or exc}") from None


def _writable_by_others(path: Path) -> str:
    """How a file is open to other users' writes ("one of mode 666", "one owned by uid 1001"), or
    "" where it is not (or the system has no such modes). root's (a sudo run's) is no other's."""
    if not hasattr(os, "getuid"):
        return ""
    status = path.stat()
    if status.st_uid not in (os.getuid(), 0):
        return f"one owned by uid {status.st_uid}"
    return f"one of mode {status.st_mode & 0o777:o}" if status.st_mode & 0o022 else ""


def _modes_kept(folder: Path) -> bool:
    """Whether a file made private in `folder` stays so: a file system that shows every file as
    mode 777 or as another's (WSL's /mnt/c, some network mounts) would have the key replaced at
    every call, and no engine's signature would ever hold."""
    fd, probe = tempfile.mkstemp(prefix=".edgegen-mode.", suffix=".tmp", dir=folder)   # mode 0600
    try:
        os.close(fd)
        return not _writable_by_others(Path(probe))
    finally:
        with contextlib.suppress(OSError):
            os.unlink(probe)


def _tensorrt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError("backend 'tensorrt': expected the tensorrt Python package (pip install tensorrt, or "
                           "JetPack's system package in a --system-site-packages venv), found it missing") from None
    return trt


def _parse(trt, builder, logger, onnx_path: Path):
    """(network, parser, errors): the graph through TensorRT's own ONNX parser into a strongly
    typed network (the precision is in the graph). The parser is returned with the network,
    which it must outlive."""
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return network, parser, []
    return network, parser, [str(parser.get_error(i)) for i in range(parser.num_errors)] or ["no error recorded"]


def parser_errors(onnx_path: Path) -> list[str]:
    """What this machine's TensorRT parser says of a graph: [] when it parses (`edgegen check`
    on a device that has TensorRT asks it instead of the transcribed table)."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.ERROR)
    return _parse(trt, trt.Builder(logger), logger, Path(onnx_path))[2]


def build_engine(onnx_path: Path, profile: tuple, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                 timing_cache: Path | None = None) -> bytes:
    """A serialized engine from an ONNX file with TensorRT's Python API: a strongly typed
    network (the precision is in the graph: fp32, fp16 casts or int8 Q/DQ), one optimization
    profile, a workspace limit, and a persisted timing cache. Works with TensorRT 10 and 11."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, parser, errors = _parse(trt, builder, logger, onnx_path)
    if errors:
        raise BackendError(f"graph {onnx_path.name!r}: TensorRT's ONNX parser refused it: {'; '.join(errors)} "
                           f"(edgegen check shows what it cannot take)")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    optimization = builder.create_optimization_profile()
    for name, low, opt, high in profile:
        optimization.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimization)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"graph {onnx_path.name!r}: TensorRT could not build an engine (see its log above)")
    if timing_cache is not None:
        # under its writer lock, so that `edgegen cache --prune` never takes the temporary file of a
        # write in progress for one a killed build left
        with writer_lock(timing_cache, "writing TensorRT's timing cache"):
            atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def timing_cache_path(trt_version: str, gpu: str, capability: str) -> Path:
    """TensorRT's timing cache for this TensorRT and GPU: in the user's cache, beside the engine
    key, not in a package (TensorRT deserializes it, so it is trusted like an engine: only what
    this user's builds wrote)."""
    device = "".join(c if c.isalnum() or c in ".-" else "_" for c in f"{trt_version}-{gpu}-sm{capability}")
    return user_cache_dir() / "tensorrt" / f"timing-{device}.cache"


def device_identity() -> tuple[str, str, str]:
    """(TensorRT version, GPU name, compute capability) of this machine, through TensorRT and cuda-python."""
    require_tensorrt()
    try:
        import tensorrt as trt
        from cuda.bindings import runtime as cudart
    except ImportError as exc:   # a cuda-python before its cuda.bindings module
        raise BackendError(f"backend 'tensorrt': expected cuda-python with its cuda.bindings module (12.6.1 or "
                           f"later), found {described(exc)}") from None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise BackendError(f"backend 'tensorrt': expected a CUDA device, found none (cudaGetDeviceProperties: {err})")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return trt.__version__, name.strip("\x00 "), f"{props.major}.{props.minor}"


def build_package(path: str | os.PathLike, precision: str = "fp32", profiles: list[str] | None = None,
                  cache_dir: str | os.PathLike | None = None, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                  report=print, target=None) -> dict[str, Path]:
    """`edgegen build pkg --backend tensorrt`: an engine per graph, from the cache when its key
    matches, else built here and cached. Returns {part: engine path}. A `target` (targets.Target)
    whose TensorRT release is not this machine's is refused: engines are built on the device."""
    # its mistakes first, then TensorRT's absence
    package, by_part = _buildable(path, precision, profiles, target.name if target else None)
    if target is not None:
        from ..targets import release_mismatch

        mismatch = release_mismatch(target, device_identity()[0])
        if mismatch:
            raise BackendError(f"{mismatch} (build the engines on the device they will run on)")
    return {part: path for part, (path, *_) in
            _engines(package, precision, by_part, cache_dir, workspace_bytes, report, bool(profiles)).items()}


def cached_engines(path: str | os.PathLike, precision: str = "fp32", profiles: list[str] | None = None,
                   cache_dir: str | os.PathLike | None = None, workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                   report=print) -> dict[str, tuple[Path, bytes, tuple]]:
    """{part: (engine path, its bytes as checked or built, its profile)}: build_package's work; the
    runtime deserializes these bytes, not the file read again. Without `profiles`, an engine that
    `edgegen build --profile` built is used with its profile, not replaced by the default's."""
    package, by_part = _buildable(path, precision, profiles)
    return _engines(package, precision, by_part, cache_dir, workspace_bytes, report, bool(profiles),
                    keep_given=not profiles)


def _buildable(path, precision: str, profiles: list[str] | None, target: str | None = None) -> tuple:
    """(the package, {part: profile}) once what needs no TensorRT holds: the package and its
    `precision` variants are there and unchanged, in a form TensorRT parses, and the profiles
    fit its graphs. Said before TensorRT is looked for, so that a machine without it names them
    (with the advice for the `target` built for; None, as edgegen.load builds: this device's)."""
    from ..package import Package

    package = Package(path)
    require_offered_precision(package, precision)
    package.require_variants(precision, PackageError)   # none written, or one changed since
    target = get_target(target or this_device_target())
    records = package.variant_files(precision) if precision != "fp32" else {}
    refused = [(part, why) for part, record in records.items() if (why := ort_only(record))]
    if refused or (precision != "fp32" and precision not in target.variant_precisions):   # int4 for JetPack 6
        from ..check import graphs_beyond_target

        advice = tensorrt_form_advice(precision, target.name, bool(graphs_beyond_target(package, target)))
        if refused:
            raise BackendError(f"package {str(package.path)!r}: the {precision} variant of graph {refused[0][0]!r} is "
                               f"{refused[0][1]} ({advice})")
        raise BackendError(f"package {str(package.path)!r}: --precision {precision}: expected one the target "
                           f"{target.name} builds ({', '.join(['fp32', *target.variant_precisions])}), found "
                           f"{precision} ({advice})")
    return package, package_profiles(package, profiles)


def ort_only(record: dict) -> str | None:
    """Why a variant (its manifest record) is ONNX Runtime's alone, which no engine is built from,
    or None: its MatMulNBits op, which TensorRT cannot parse; a graph rewritten into the family's
    ort_form (the GPT decoder's cache written in place into its input's memory), which TensorRT's
    parser may take, but whether TensorRT runs that aliasing is unmeasured."""
    if str(record.get("form", "")).startswith("MatMulNBits"):
        return "ONNX Runtime's MatMulNBits, which TensorRT cannot parse"
    if record.get("ort_form"):
        return f"in ONNX Runtime's form ({record['ort_form']}), made for {record.get('target')}"
    return None


def tensorrt_form_advice(precision: str, target: str = "tensorrt", export_first: bool = False) -> str:
    """What makes an engine for `target` where the `precision` variant is ONNX Runtime's alone: its
    form for that target, where the target takes that precision; else the fp32 graph or another
    precision (fused and int8-weights are ONNX Runtime's contrib ops, which optimize refuses for
    TensorRT; int4's blocks need an opset JetPack 6's TensorRT does not parse). `export_first`: the
    package's graphs are beyond what the target's TensorRT reads (check.graphs_beyond_target), so
    every way starts with an export for it, since optimize refuses such graphs."""
    from ..targets import INT4_OPSET, get_target

    chosen = get_target(target)
    first = (f"its graphs are beyond what TensorRT {chosen.tensorrt} reads: export again with --target {chosen.name}, "
             "then ") if export_first else ""
    if precision in chosen.variant_precisions:
        return f"{first}edgegen optimize --precision {precision} --target {chosen.name} writes TensorRT's form"
    # fused and int8-weights have no TensorRT form at all; int4 has one from opset 21
    why = f" form TensorRT {chosen.tensorrt} parses (its blocks need opset {INT4_OPSET})" if precision == "int4" \
        else " TensorRT form"
    return (f"{precision} has no{why}: {first}build from fp32 (TensorRT fuses by itself), or from a variant of "
            f"{', '.join(chosen.variant_precisions)} made with --target {chosen.name}")


def engine_cache(package, cache_dir=None) -> EngineCache:
    """The package's TensorRT engine cache. cache_dir as edgegen.load's: the engines in its tensorrt/
    (ONNX Runtime's TensorRT provider's in ort-tensorrt/); else the package's own, or the user's
    cache for a package that cannot be written, with the package's own read even then."""
    base = Path(cache_dir) if cache_dir else engine_cache_dir(package.path, "tensorrt")
    return EngineCache(base / "tensorrt", read_too=() if cache_dir else (package.path / ENGINE_CACHE / "tensorrt",))


def load_profiles(package, precision: str = "fp32", cache_dir=None) -> dict[str, tuple]:
    """{graph: the profile its engine has where a load (cached_engines) finds or builds it}: the one
    `edgegen build --profile` gave a cached engine, else the package's default."""
    cache = engine_cache(package, cache_dir)
    return {part: cache.given_profile(part, precision, _graph_identity(package, part, precision)) or profile
            for part, profile in package_profiles(package).items()}


def _graph_identity(package, part: str, precision: str) -> str:
    """What an engine built from graph `part` depends on of the package: the graph file's sha256
    (read from the file), with its external data's where it has some."""
    from ..package import sha256_file, with_external_data

    return with_external_data(sha256_file(package.graph_path(part, precision)), package.external_data(part, precision))


def _engines(package, precision: str, by_part: dict, cache_dir, workspace_bytes: int, report,
             profile_given: bool = False, keep_given: bool = False) -> dict[str, tuple[Path, bytes, tuple]]:
    """{part: (engine path, bytes, profile)}: each from the cache where its key matches, else built
    and cached; `profile_given`: by_part's profiles are --profile's (recorded so); `keep_given`: a
    cached engine's --profile is asked for instead of by_part's."""
    trt_version, gpu, capability = device_identity()
    cache = engine_cache(package, cache_dir)
    engines = {}
    for part, profile in by_part.items():
        graph = package.graph_path(part, precision)
        graph_sha256 = _graph_identity(package, part, precision)
        given = cache.given_profile(part, precision, graph_sha256) if keep_given else None
        key = EngineKey(graph_sha256, trt_version, gpu, capability, precision, given or profile)
        data = cache.lookup(part, key)
        for reason in cache.rejected:
            report(f"{part}: {reason}")
        cache.rejected.clear()
        if data is None:
            engines[part] = (*_build_and_store(cache, package.path, part, key, graph, workspace_bytes, report,
                                               profile_given or given is not None), key.profile)
        else:
            chosen = ", the profile edgegen build --profile gave it" if given else ""
            report(f"{part}: cached engine matches ({gpu}, TensorRT {trt_version}, {precision}{chosen})")
            engines[part] = (cache.found, data, key.profile)
    return engines


def _build_and_store(cache: EngineCache, package_path: Path, part: str, key: EngineKey, graph: Path,
                     workspace_bytes: int, report, profile_given: bool = False) -> tuple[Path, bytes]:
    """Build the engine `key` names and store it, under that engine's writer lock: a second process
    that wants the same engine waits and reads the first's, instead of building its own and storing
    it over the first's (one's engine beside the other's record, which the next load would call
    changed bytes and build again)."""
    prepare_engine_folder(cache.folder, package_path)   # a folder that cannot be written: refused before the build
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(writer_lock(cache.engine_path(part, key.precision), "building it"))
        except OSError as exc:
            raise engine_folder_refused(cache.folder, exc) from None
        data = cache.lookup(part, key)   # another process built it while this one waited
        cache.rejected.clear()           # what it found otherwise was said before the wait
        if data is not None:
            report(f"{part}: another process built its engine meanwhile: using it")
            return cache.found, data
        report(f"{part}: building a TensorRT {key.tensorrt} engine for {key.gpu} (sm {key.compute_capability}), "
               f"{key.precision}")
        data = build_engine(graph, key.profile, workspace_bytes,
                            timing_cache_path(key.tensorrt, key.gpu, key.compute_capability))
        return cache.store(part, key, data, profile_given), data


def _cuda(result):
    """cuda-python calls return (error, value...): raise on an error, return the value(s)."""
    err, *values = result
    if int(err) != 0:
        raise BackendError(f"backend 'tensorrt': a CUDA call failed with {err}")
    return values[0] if len(values) == 1 else (values or None)


class TensorRTSession(Session):
    """One engine, run with execute_async_v3: device buffers for the profile's largest shapes
    allocated once and reused, input shapes set per call, copies and the run on one stream.
    The Session base checks each feed, and its shapes against the engine's profile, before
    anything is copied to the device. The buffers, shapes and stream are the one execution
    context's, so calls from several threads take turns (_one_call_at_a_time): run at once they
    would write over each other's inputs and read each other's outputs."""

    backend = "tensorrt"

    def __init__(self, graph_name: str, engine_bytes: bytes, inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], profile: tuple):
        import tensorrt as trt
        from cuda.bindings import runtime as cudart

        super().__init__(graph_name, inputs, outputs, profile)
        self._cudart = cudart
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self._engine is None:
            raise BackendError(f"graph {graph_name!r}: TensorRT could not deserialize its engine (another TensorRT "
                               "or GPU? rebuild it with edgegen build)")
        self._context = self._engine.create_execution_context()
        self._one_call_at_a_time = threading.Lock()
        self._stream = _cuda(cudart.cudaStreamCreate())
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n)))
                        for n in [s.name for s in inputs + outputs]}
        for name, _low, _opt, high in profile:          # largest shapes -> largest outputs
            self._context.set_input_shape(name, high)
        sizes = {name: int(np.prod(high)) for name, _l, _o, high in profile}
        sizes.update({s.name: int(np.prod(tuple(self._context.get_tensor_shape(s.name)))) for s in outputs})
        self._capacity = {name: max(1, n) * self._dtypes[name].itemsize for name, n in sizes.items()}
        self._buffers = {name: _cuda(cudart.cudaMalloc(size)) for name, size in self._capacity.items()}
        for name, pointer in self._buffers.items():
            self._context.set_tensor_address(name, int(pointer))

    def _run(self, feeds) -> dict[str, np.ndarray]:
        with self._one_call_at_a_time:
            return self._run_alone(feeds)

    def _run_alone(self, feeds) -> dict[str, np.ndarray]:
        cudart, stream = self._cudart, self._stream
        for spec in self.inputs:
            array = (np.asarray(feeds[spec.name], dtype=self._dtypes[spec.name], order="C") if not spec.shape   # 0-d kept
                     else np.ascontiguousarray(feeds[spec.name], dtype=self._dtypes[spec.name]))
            if array.nbytes > self._capacity[spec.name] or not self._context.set_input_shape(spec.name, array.shape):
                raise InputError(f"graph {self.graph_name!r} input {spec.name!r}: TensorRT refused shape "
                                 f"{list(array.shape)} for this engine (outside its optimization profile)")
            _cuda(cudart.cudaMemcpyAsync(self._buffers[spec.name], array.ctypes.data, array.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))
        if not self._context.execute_async_v3(stream):
            raise BackendError(f"graph {self.graph_name!r}: TensorRT's execute_async_v3 failed")
        results = {}
        for spec in self.outputs:
            out = np.empty(tuple(self._context.get_tensor_shape(spec.name)), self._dtypes[spec.name])
            _cuda(cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[spec.name], out.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))
            results[spec.name] = out
        _cuda(cudart.cudaStreamSynchronize(stream))
        return results

    def __del__(self):
        cudart = getattr(self, "_cudart", None)
        for pointer in getattr(self, "_buffers", {}).values():
            cudart.cudaFree(pointer)


def open_tensorrt_sessions(package, precision: str = "fp32", profiles: list[str] | None = None,
                           cache_dir=None, report=lambda line: None) -> dict[str, TensorRTSession]:
    """edgegen.load(backend="tensorrt"): each graph's engine from the cache (built on a miss)."""
    engines = cached_engines(package.path, precision, profiles, cache_dir, report=report)
    return {part: TensorRTSession(part, engines[part][1], entry.inputs, entry.outputs, engines[part][2])
            for part, entry in package.graphs.items()}
