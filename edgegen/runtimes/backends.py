"""Which backends exist, which this machine can run, and what `backend="auto"` picks.

Runtime code: never imports torch or onnx.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import BackendError, not_one_of

# Fastest first: the order `auto` tries them in.
ORT_BACKENDS = {
    "ort-tensorrt": "TensorrtExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-cpu": "CPUExecutionProvider",
}
# The native TensorRT backend: engines built by edgegen and run through TensorRT's own API
# (cuda-python for memory). Never picked by "auto" until it has been measured on a GPU.
NATIVE_BACKENDS = ("tensorrt",)
KNOWN_BACKENDS = ("auto", *NATIVE_BACKENDS, *ORT_BACKENDS)


def ort_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def tensorrt_installed() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def tensorrt_version() -> str | None:
    """This environment's TensorRT version ("10.3.0.30"), or None where it has none."""
    if not tensorrt_installed():
        return None
    try:
        import tensorrt
    except Exception:  # noqa: BLE001 - installed but unloadable (no libnvinfer): none this environment runs
        return None
    return str(tensorrt.__version__)


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


# what a machine with an NVIDIA GPU has: the driver's control node and one node per GPU (Linux; a
# container given GPU 1 alone has /dev/nvidia1), /dev/dxg under WSL 2, or Jetson Linux's release file
GPU_SIGNS = ("dev/nvidiactl", "dev/nvidia[0-9]*", "dev/dxg", "etc/nv_tegra_release")


def no_nvidia_gpu_here(root: Path = Path("/")) -> bool:
    return not any(any(root.glob(sign)) for sign in GPU_SIGNS)


def require_tensorrt(backend: str = "tensorrt") -> None:
    """BackendError, with the way to install them, where TensorRT's or cuda-python's module is missing
    (on a machine without a GPU, what to do instead: installing them cannot help there)."""
    missing = [m for m in ("tensorrt", "cuda") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    found = f"found {' and '.join(missing)} missing"
    if no_nvidia_gpu_here():
        raise BackendError(f"backend {backend!r}: expected the tensorrt and cuda-python packages and an NVIDIA GPU, "
                           f"{found} and no NVIDIA GPU on this machine (none of /{', /'.join(GPU_SIGNS)}): TensorRT "
                           "engines are built on the GPU that runs them; here, 'edgegen check PACKAGE --target "
                           "TARGET' says what TensorRT's parser will refuse")
    raise BackendError(f"backend {backend!r}: expected the tensorrt and cuda-python packages and an NVIDIA GPU, "
                       f"{found} (pip install 'edgegen[tensorrt]'; on a Jetson, JetPack's TensorRT and pip install "
                       "'cuda-python>=12.6.1,<13' on JetPack 6, 'cuda-python>=13,<14' on JetPack 7: its major is CUDA's)")


def resolve_backend(backend: str) -> str:
    """Turn a user's backend choice into a concrete one, or raise BackendError."""
    if backend not in KNOWN_BACKENDS:
        raise BackendError(not_one_of("backend", backend, KNOWN_BACKENDS))
    if backend in NATIVE_BACKENDS:
        require_tensorrt(backend)
        return backend
    available = available_backends()
    if backend == "auto":
        return available[0]
    if backend not in available:
        raise BackendError(
            f"backend {backend!r}: expected ONNX Runtime's {ORT_BACKENDS[backend]} on this machine, found only "
            f"{', '.join(available)} (pip uninstall -y onnxruntime && pip install onnxruntime-gpu: one module, two "
            "wheels, keep the GPU one; and TensorRT for ort-tensorrt; PyPI has none for a Jetson: "
            "docs/tensorrt-and-jetson.md says where)"
        )
    return backend
