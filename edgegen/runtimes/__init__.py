"""The thin runtime: sessions over ONNX Runtime and one pipeline per family.

Runtime code: nothing here imports torch or onnx, so it installs on a device without them.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import UnknownFamilyError
from ..package import Package
from .backends import available_backends, resolve_backend
from .ort import OrtSession
from .pipelines import PIPELINES, Pipeline
from .session import Session, check_feeds


def open_sessions(package: Package, backend: str = "auto", threads: int | None = None,
                  cache_dir: str | os.PathLike | None = None, spin: bool = True) -> dict[str, Session]:
    """One session per graph of the package, all on the same backend (spin: see session_options)."""
    concrete = resolve_backend(backend)
    cache = Path(cache_dir) if cache_dir is not None else package.path / ".edgegen-cache"
    return {
        part: OrtSession(part, package.graph_path(part), entry.inputs, entry.outputs,
                         backend=concrete, threads=threads, cache_dir=cache if concrete == "ort-tensorrt" else None,
                         spin=spin)
        for part, entry in package.graphs.items()
    }


def load(path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
         cache_dir: str | os.PathLike | None = None) -> Pipeline:
    """Read and check the package at `path` and return its family's pipeline.

    backend: "auto" (the fastest present), "ort-cpu", "ort-cuda" or "ort-tensorrt".
    threads: ONNX Runtime intra-op threads (default: one per core).
    cache_dir: where TensorRT engines are cached (default: inside the package).
    """
    package = Package(path)
    pipeline_class = PIPELINES.get(package.family)
    if pipeline_class is None:
        raise UnknownFamilyError(
            f"package {str(package.path)!r}: expected family to be one of {', '.join(sorted(PIPELINES))}, found {package.family!r}"
        )
    spin = not pipeline_class.alternates_graphs
    return pipeline_class(package, open_sessions(package, backend, threads, cache_dir, spin))


__all__ = ["load", "open_sessions", "available_backends", "resolve_backend", "Session", "OrtSession", "check_feeds",
           "Pipeline", "PIPELINES"]
