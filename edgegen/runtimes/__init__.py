"""The thin runtime: sessions over ONNX Runtime and one pipeline per family.

Runtime code: nothing here imports torch or onnx, so it installs on a device without them.
"""

from __future__ import annotations

import os
import re

from ..errors import BackendError, ConfigError, PackageError, PrecisionWarning, not_one_of, warn_caller, where_export_runs
from ..families import package_config, require_offered_precision
from ..package import MANIFEST_NAME, PRECISIONS, Package, fp32_graphs_note
from ..shipped import resolve as resolve_shipped
from .backends import available_backends, resolve_backend
from .ort import OrtSession
from .pipeline import Pipeline
from .session import Session, check_feeds


def open_sessions(package: Package, backend: str = "auto", threads: int | None = None,
                  cache_dir: str | os.PathLike | None = None, spin: bool = True,
                  precision: str = "fp32") -> dict[str, Session]:
    """One session per graph of the package, all on the same backend (spin: see session_options).

    precision: "int8" or "fp16" runs each graph's variant where `edgegen optimize` wrote one
    (the others stay fp32); asking for a precision the package has no variant of is an error.
    """
    if precision not in PRECISIONS:
        raise ConfigError(not_one_of("precision", precision, PRECISIONS))
    require_offered_precision(package, precision)
    package.require_variants(precision, PackageError)   # the package has none of that precision
    concrete = resolve_backend(backend)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise BackendError(f"cache_dir: expected a folder's path for the TensorRT engines, found {type(cache_dir).__name__}")
    if precision != "fp32":   # its engines too are built from the variant
        warn_of_variant_gates(package, precision)
        if note := fp32_graphs_note(precision, package.fp32_graphs(precision)):   # said to a Python caller too
            warn_caller(note, PrecisionWarning)
    if concrete == "tensorrt":
        from .engines import open_tensorrt_sessions

        return open_tensorrt_sessions(package, precision, cache_dir=cache_dir)
    cache = None   # ort-cpu and ort-cuda keep no engines
    if concrete == "ort-tensorrt":
        from .engines import ort_engine_cache

        graphs = {str(package.path.resolve() / file): digest for file, digest in package.graph_digests(precision).items()}
        cache = ort_engine_cache(package.path, cache_dir, graphs=graphs)
    if precision == "int8" and concrete == "ort-cpu":
        _warn_if_int8_saturates(package)
    if concrete == "ort-cpu":
        _warn_if_slower_than_fp32(package, precision)
    sessions = {}
    for part, entry in package.graphs.items():
        record = package.variant_files(precision).get(part, {})
        try:
            sessions[part] = OrtSession(part, package.graph_path(part, precision), entry.inputs, entry.outputs,
                                        backend=concrete, threads=threads,
                                        cache_dir=cache, spin=spin,
                                        disabled_optimizers=tuple(record.get("disabled_optimizers", ())))
        except PackageError as exc:
            if (hint := _older_onnxruntime_hint(record, precision, str(exc))) is None:
                raise
            raise PackageError(f"{exc} ({hint})") from None
    return sessions


# how ONNX Runtime says a graph holds an op or opset it does not implement
MISSING_OP = re.compile(r"NOT_IMPLEMENTED|Could not find an implementation|is not a registered function/op|"
                        r"opset \d+ is under development|Unsupported model IR version", re.IGNORECASE)


def _older_onnxruntime_hint(record: dict, precision: str, error: str) -> str | None:
    """Why a variant that does not open may not (made and gated with a newer ONNX Runtime than this
    one, whose ops it may lack: int8's QuantizeLinear at opset 23 on 1.23, the KV cache form's
    TensorScatter), and what to do; None for fp32, where this ONNX Runtime is not older, or where
    the optimize recorded no version (before December 7, 2026, 10:00 UTC, but for the KV cache form)
    and the error names no missing op (a path, a signature: said alone, as fp32's are)."""
    import onnxruntime

    made_with, here = record.get("onnxruntime"), onnxruntime.__version__
    if "file" not in record or (made_with is not None and _release(here) >= _release(made_with)) \
            or (made_with is None and not MISSING_OP.search(error)):
        return None
    form = f" is in ONNX Runtime's form, {record['ort_form']}, and" if record.get("ort_form") else ""
    if made_with is not None:
        made, install = f"made with onnxruntime {made_with}; this one is {here}", f"onnxruntime {made_with} or later"
    else:
        made, install = (f"made by an edgegen optimize that did not record its onnxruntime (perhaps a later one than this, "
                         f"{here})", "the onnxruntime the optimize ran (or a later one)")
    return (f"the {precision} variant{form} was {made}, which may lack an op it uses: install {install} here, or run "
            f"edgegen optimize --precision {precision} with onnxruntime {here}{where_export_runs()}, or precision 'fp32'")


def _release(version: str) -> tuple[int, ...]:
    """(1, 23, 2) of "1.23.2" (or "1.23.2.dev20251101+cpu"), for ordering releases."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


SLOWER = 0.9   # a variant's speed against fp32 said at load below this: further than one timing's noise from even


def _warn_if_slower_than_fp32(package: Package, precision: str) -> None:
    """A variant made for another target (TensorRT: kept for its gate alone) that its optimize timed
    slower than fp32 on ONNX Runtime's CPU provider: asked for here, it runs, and is said."""
    variants = package.variant_files(precision)
    slower = {part: record["speedup_ort_cpu"] for part, record in variants.items()
              if record.get("target") not in (None, "ort-cpu")
              and isinstance(record.get("speedup_ort_cpu"), (int, float)) and record["speedup_ort_cpu"] < SLOWER}
    if slower:
        timed = ", ".join(f"{part} {speed:.2f}x" for part, speed in sorted(slower.items()))
        target = variants[next(iter(slower))]["target"]
        warn_caller(f"{precision} variant in {str(package.path)!r}: made for {target}, and timed slower than fp32 on "
                    f"ort-cpu when it was made ({timed} fp32's speed): on this backend fp32 (precision 'fp32') is "
                    "likely the faster", PrecisionWarning)


# a gate kind's check beside PSNR that variants written before it lack: (the gate record's figure,
# what it measures, the output of the graphs it judges (None: every graph)); a flow's from
# 2026-12-05, the others' from 2026-12-06
CHECKS_ADDED_TO_PSNR = {"density": ("log_density_error", "the log densities it gives (anomaly scores rank by them)",
                                    "logdet"),
                        "categorical": ("kl_nats", "its distributions' KL divergence from fp32's", "logits"),
                        "detail": ("detail_db", "the learned detail it keeps (the part its network adds to its "
                                                "input's bilinear upscale)", None)}


def warn_of_variant_gates(package: Package, precision: str) -> None:
    """What the `precision` variants' gate records leave unsaid, said where they are used (a load,
    a Triton model): each graph at most once."""
    unjudged = _judged_before_its_check(package, precision)
    _warn_if_gated_before_its_check(package, precision, unjudged)
    _warn_if_a_later_gate_refused(package, precision, unjudged)


def _warn_if_gated_before_its_check(package: Package, precision: str, unjudged: list[str]) -> None:
    """A variant written before its family's gate checked more than PSNR: a flow's density graph
    before its log densities (flow-digits' int8 passed PSNR up to 29 nats off), a WaveNet's or
    PixelCNN's logits variant before the KL divergence of its distributions (its PSNR passed a
    variant whose sampling moved: wavenet-tones' int8 network), an SR variant before the learned
    detail kept (the bilinear upscale alone passed PSNR). A refused re-run keeps it, so it is said
    each load."""
    if unjudged:
        measure = CHECKS_ADDED_TO_PSNR[_family_gate(package)][1]
        records = package.variant_files(precision)
        # again for the target it was made for: the default target's would replace a TensorRT variant
        targets = _made_for_gpus(records, unjudged)
        again = f"edgegen optimize --precision {precision}" + "".join(f" --target {t}" for t in targets[:1])
        advice = ("a later optimize refused what would have replaced it (edgegen info says why): export the package "
                  "again to be rid of it" if any("last_refused" in records[part] for part in unjudged) else
                  f"run {again} again to judge it")
        warn_caller(f"{precision} variant of {', '.join(unjudged)} in {str(package.path)!r}: expected a gate record of "
                    f"{measure}, found one of PSNR alone (written before that check): {advice} (docs/upgrading.md)",
                    PrecisionWarning)


def _warn_if_a_later_gate_refused(package: Package, precision: str, said: list[str]) -> None:
    """A variant a later optimize's gate refused to replace (a stricter threshold, an edgegen whose
    gate judges more: a flow's inverse at sampling's temperature) stays, since a failed command
    takes nothing away; it ran without a word, its recorded figure the earlier run's (reviews 174
    and 178). The graphs `said` before its check already are not said twice."""
    refused = {}
    for part, record in package.variant_files(precision).items():
        later = record.get("last_refused")
        if isinstance(later, dict) and str(later.get("refused", "")).startswith("gate ") and part not in said:
            refused[part] = later["refused"]
    if refused:
        why = "; ".join(f"{part}: {reason}" for part, reason in refused.items())
        warn_caller(f"{precision} variant of {', '.join(refused)} in {str(package.path)!r}: expected one its latest "
                    f"optimize passed, found one kept from an earlier run after a later gate refused its replacement "
                    f"({why}): the figure edgegen info shows is that earlier run's; optimize again to judge it anew "
                    "(a pass replaces it), or export the package again to drop it", PrecisionWarning)


def _judged_before_its_check(package: Package, precision: str) -> list[str]:
    """The graphs whose `precision` variant was gated before its family's check beyond PSNR."""
    if (check := CHECKS_ADDED_TO_PSNR.get(_family_gate(package))) is None:
        return []
    figure, _, output = check
    return sorted(part for part, record in package.variant_files(precision).items()
                  if (output is None or output in {o.name for o in package.graphs[part].outputs})
                  and figure not in (record.get("gate") or {}))


def _family_gate(package: Package) -> str:
    from ..families import get

    return get(package.family).gate


def _made_for_gpus(records: dict, parts: list[str]) -> list[str]:
    """The targets other than ort-cpu that these graphs' variant records name (none recorded: ort-cpu)."""
    return sorted({records[part].get("target") or "ort-cpu" for part in parts} - {"ort-cpu"})


def _warn_if_int8_saturates(package: Package) -> None:
    """An int8 variant with 8-bit weights, made on a CPU whose int8 sums do not saturate (or for
    TensorRT), computes less exactly on one whose do: its gate's figure does not hold here."""
    from .ort import int8_sums_saturate

    records = package.variant_files("int8")
    eight_bit = sorted(part for part, record in records.items() if not str(record.get("weights", "")).startswith("7-bit"))
    why = int8_sums_saturate() if eight_bit else None
    if why:
        # one made for TensorRT keeps 8 bits wherever it was made: the advice names the CPU's target
        made_for = _made_for_gpus(records, eight_bit)
        advice = (f"made for {', '.join(made_for)}, which keeps 8 bits; edgegen optimize --precision int8 --target "
                  "ort-cpu" if made_for else "edgegen optimize --precision int8")
        warn_caller(f"int8 variant of {', '.join(eight_bit)} in {str(package.path)!r}: expected 7-bit weights on {why}, "
                    "found 8-bit ones, whose sums ONNX Runtime's int8 kernels saturate here: its outputs may be "
                    f"further from fp32's than its gate measured ({advice} on this kind of CPU makes 7-bit ones)",
                    PrecisionWarning)


def load(path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
         cache_dir: str | os.PathLike | None = None, precision: str = "fp32") -> Pipeline:
    """Read and check the package at `path` (or of a shipped model's name, "vae-digits") and
    return its family's pipeline.

    backend: "auto" (the fastest present), "ort-cpu", "ort-cuda", "ort-tensorrt", or "tensorrt"
    (engines built and cached by edgegen, run through TensorRT's API; not yet measured on a GPU).
    threads: ONNX Runtime intra-op threads (default: ONNX Runtime's, a thread per physical core or
        ORT_INTRA_OP_NUM_THREADS; one per core allowed where a container's CPU quota or a cpuset
        allows fewer physical cores than the machine's: edgegen.cpus).
    cache_dir: where TensorRT engines are cached (default: inside the package; in the user's cache,
        ~/.cache/edgegen/engines/, for a package this user cannot write in: package.engine_cache_dir).
    precision: "fp32", or "int8" / "fp16" for the variants `edgegen optimize` added.

    A package another command replaces while this reads it (an export --force, an optimize: each
    switches a whole new version in) is read once more, whole: its files are read one by one, so a
    load may meet the old manifest and the new graphs, or a graph gone with the old version.
    """
    where = resolve_shipped(path)
    for last in (False, True):
        version = _manifest_version(where)
        try:
            return _load(where, backend, threads, cache_dir, precision)
        except (PackageError, OSError) as exc:
            if last or _manifest_version(where) == version:   # not replaced meanwhile: the package's own fault
                if isinstance(exc, OSError):
                    raise PackageError(f"package {str(where)!r}: expected to read its files, found {exc}") from None
                raise


def _manifest_version(path) -> tuple | None:
    """Which version of the package's manifest is there now: writers replace it by renaming a new
    file over it (or the whole folder), so another inode, or a new change time, is another version."""
    try:
        found = os.stat(os.path.join(path, MANIFEST_NAME))
    except (OSError, TypeError, ValueError):   # no package there, or no path (Package says which)
        return None
    return found.st_ino, found.st_ctime_ns


def _load(path, backend: str, threads: int | None, cache_dir, precision: str) -> Pipeline:
    package = Package(path)
    family, config = package_config(package)   # the family's typed config: a bad value fails here, named
    spin = not family.pipeline.alternates_graphs
    pipe = family.pipeline(package, open_sessions(package, backend, threads, cache_dir, spin, precision), config)
    pipe.precision = precision
    pipe.family = family.name   # the registry's name, whatever a family's Pipeline class says (or leaves out)
    return pipe


__all__ = ["load", "open_sessions", "available_backends", "resolve_backend", "Session", "OrtSession", "check_feeds",
           "Pipeline"]
