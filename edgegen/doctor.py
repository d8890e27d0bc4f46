"""`edgegen doctor`: what this machine can run. Optional pieces are probed, never required."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess

from . import __version__


def _version(module: str) -> str | None:
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ModuleNotFoundError:  # the parent package of a dotted name is missing
        return None
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as exc:  # noqa: BLE001 - a broken optional install is reported, not fatal
        return f"broken ({type(exc).__name__}: {exc})"


def _nvidia_gpus() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return ["nvidia-smi present but did not answer"]
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def report() -> dict:
    import onnxruntime as ort

    from .bench import machine_info
    from .runtimes.backends import available_backends

    backends = available_backends()
    torch_version = _version("torch")
    torch_cuda = None
    if torch_version and not torch_version.startswith("broken"):
        import torch

        torch_cuda = torch.version.cuda if torch.cuda.is_available() else None
    return {
        "edgegen": __version__,
        "machine": machine_info(),
        "onnxruntime": {"version": ort.__version__, "device": ort.get_device(), "providers": ort.get_available_providers()},
        "backends": backends,
        "auto_backend": backends[0],
        "nvidia_gpus": _nvidia_gpus(),
        "tensorrt": _version("tensorrt"),
        "cuda_python": _version("cuda.bindings") or _version("cuda"),
        "torch": torch_version,
        "torch_cuda": torch_cuda,
        "onnx": _version("onnx"),
    }


def format_report(info: dict) -> str:
    m = info["machine"]
    rows = [
        ("edgegen", info["edgegen"]),
        ("machine", f"{m['cpu']} ({m['cores']} cores, {m['arch']}), {m['os']}"),
        ("python", m["python"]),
        ("onnxruntime", f"{info['onnxruntime']['version']} ({info['onnxruntime']['device']})"),
        ("ORT providers", ", ".join(info["onnxruntime"]["providers"])),
        ("backends", ", ".join(info["backends"]) + f"   (auto picks {info['auto_backend']})"),
        ("NVIDIA GPUs", "; ".join(info["nvidia_gpus"]) or "none found (no nvidia-smi)"),
        ("CUDA (torch)", info["torch_cuda"] or "not available"),
        ("TensorRT", info["tensorrt"] or "not installed"),
        ("cuda-python", info["cuda_python"] or "not installed"),
        ("torch", info["torch"] or "not installed (runtime-only install: train/export unavailable)"),
        ("onnx", info["onnx"] or "not installed"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
