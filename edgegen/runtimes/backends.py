"""Which backends exist, which this machine can run, and what `backend="auto"` picks.

Runtime code: never imports torch or onnx.
"""

from __future__ import annotations

import importlib.util

from ..errors import BackendError

# Fastest first: the order `auto` tries them in.
ORT_BACKENDS = {
    "ort-tensorrt": "TensorrtExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-cpu": "CPUExecutionProvider",
}
# The native TensorRT backend (engines run through the tensorrt API) is named so that
# asking for it gives a clear answer rather than "unknown backend".
NATIVE_BACKENDS = ("tensorrt",)
KNOWN_BACKENDS = ("auto", *NATIVE_BACKENDS, *ORT_BACKENDS)


def ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def available_backends() -> list[str]:
    """The ONNX Runtime backends this machine can use, fastest first.

    The TensorRT provider is listed by every onnxruntime-gpu build, even where the
    TensorRT libraries are missing, so it counts only when `tensorrt` is importable.
    """
    providers = set(ort_providers())
    found = []
    for backend, provider in ORT_BACKENDS.items():
        if provider not in providers:
            continue
        if backend == "ort-tensorrt" and not tensorrt_installed():
            continue
        found.append(backend)
    return found


def resolve_backend(backend: str) -> str:
    """Turn a user's backend choice into a concrete one, or raise BackendError."""
    if backend not in KNOWN_BACKENDS:
        raise BackendError(f"backend {backend!r}: expected one of {', '.join(KNOWN_BACKENDS)}, found an unknown name")
    if backend in NATIVE_BACKENDS:
        raise BackendError(
            f"backend {backend!r}: native TensorRT engines are not supported by this version of edgegen; "
            f"expected one of {', '.join(ORT_BACKENDS)} (ort-tensorrt runs TensorRT through ONNX Runtime)"
        )
    available = available_backends()
    if backend == "auto":
        return available[0]
    if backend not in available:
        raise BackendError(
            f"backend {backend!r}: expected ONNX Runtime's {ORT_BACKENDS[backend]} on this machine, found only "
            f"{', '.join(available)} (install the [gpu] extra, and TensorRT for ort-tensorrt)"
        )
    return backend
