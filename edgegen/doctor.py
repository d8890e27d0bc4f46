"""`edgegen doctor`: what this machine can run. Optional pieces are probed, never required."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

from . import __version__
from .targets import jetson_target, l4t_release


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


def _nvidia_gpus(run=subprocess.run) -> tuple[list[str], str | None]:
    """(the GPUs nvidia-smi lists, why none are listed where there are none). The reason is kept
    apart from the list, so that `doctor --json` never reads a reason as a GPU's name."""
    if shutil.which("nvidia-smi") is None:
        return [], "no nvidia-smi"
    try:
        out = run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total",
                   "--format=csv,noheader"], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        return [], f"nvidia-smi present but did not answer ({type(exc).__name__})"
    gpus = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return gpus, None if gpus else "nvidia-smi listed none"


# Jetson Linux (L4T) release -> JetPack release, from NVIDIA's JetPack release notes (7.1 and 7.2:
# jetson-stats' table and projects' JetPack images); the nvidia-jetpack Debian package's version is
# asked first where it is installed.
JETPACK_FOR_L4T = {"39.2": "7.2", "38.4": "7.1", "38.2": "7.0", "36.4.4": "6.2.1", "36.4.3": "6.2", "36.4": "6.1", "36.3": "6.0", "36.2": "6.0 DP",
                   "35.6.1": "5.1.5", "35.6": "5.1.4", "35.5": "5.1.3", "35.4.1": "5.1.2", "35.3.1": "5.1.1"}
_POWER_MODE_NAME = re.compile(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>")


def _run(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def jetson(root: Path = Path("/"), run=_run) -> dict | None:
    """A Jetson's identity from its files and tools, or None elsewhere: the module, the Jetson
    Linux (L4T) and JetPack releases, the power mode and the CUDA toolkit. `root` and `run` let
    the tests read recorded files and command output."""
    l4t = l4t_release(root)
    if l4t is None:
        return None
    packaged = (run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"]) or "").strip()
    jetpack = packaged.split("+")[0].split("-")[0] if packaged else _jetpack_for(l4t)
    return {
        "model": (_read(root / "proc" / "device-tree" / "model") or "unknown Jetson").strip("\x00 \n"),
        "l4t": l4t,
        "jetpack": jetpack,
        "power_mode": _power_mode(root, run),
        "cuda": _cuda_toolkit(root),
    }


def _jetpack_for(l4t: str) -> str | None:
    parts = l4t.split(".")
    return JETPACK_FOR_L4T.get(l4t) or JETPACK_FOR_L4T.get(".".join(parts[:2]))


def _power_mode(root: Path, run) -> str | None:
    """`nvpmodel -q` ("NV Power Mode: MAXN"), else the mode id in nvpmodel's status file named
    by /etc/nvpmodel.conf."""
    queried = run(["nvpmodel", "-q"]) or ""
    found = re.search(r"NV Power Mode:\s*(\S+)", queried)
    if found:
        return found.group(1)
    status = re.search(r"pmode:(\d+)", _read(root / "var" / "lib" / "nvpmodel" / "status") or "")
    if not status:
        return None
    names = dict(_POWER_MODE_NAME.findall(_read(root / "etc" / "nvpmodel.conf") or ""))
    mode = str(int(status.group(1)))
    return f"{names[mode]} (mode {mode})" if mode in names else f"mode {mode}"


def _cuda_toolkit(root: Path) -> str | None:
    try:
        return json.loads(_read(root / "usr" / "local" / "cuda" / "version.json") or "")["cuda"]["version"]
    except (ValueError, KeyError, TypeError):
        found = re.search(r"CUDA Version ([\d.]+)", _read(root / "usr" / "local" / "cuda" / "version.txt") or "")
        return found.group(1) if found else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


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
    gpus, no_gpus_because = _nvidia_gpus()
    return {
        "edgegen": __version__,
        "machine": machine_info(),
        "onnxruntime": {"version": ort.__version__, "device": ort.get_device(), "providers": ort.get_available_providers()},
        "backends": backends,
        "auto_backend": backends[0],
        "nvidia_gpus": gpus,
        "nvidia_gpus_none_because": no_gpus_because,
        "tensorrt": _version("tensorrt"),
        "cuda_python": _version("cuda.bindings") or _version("cuda"),
        "torch": torch_version,
        "torch_cuda": torch_cuda,
        "onnx": _version("onnx"),
        "jetson": jetson(),
        "power": _power_source(),
    }


def _power_source() -> str:
    from .power import find_power_source

    source, why = find_power_source()
    if source is None:
        return why
    source.close()
    return source.name


def format_report(info: dict) -> str:
    from .bench import cores_text, cpu_text

    m = info["machine"]
    rows = [
        ("edgegen", info["edgegen"]),
        ("machine", f"{cpu_text(m)} ({cores_text(m)}, {m['arch']}), {m['os']}"),
        ("python", m["python"]),
        ("onnxruntime", f"{info['onnxruntime']['version']} ({info['onnxruntime']['device']})"),
        ("ORT providers", ", ".join(info["onnxruntime"]["providers"])),
        ("backends", ", ".join(info["backends"]) + f"   (auto picks {info['auto_backend']})"),
        ("NVIDIA GPUs", "; ".join(info["nvidia_gpus"]) or f"none found ({info['nvidia_gpus_none_because']})"),
        ("CUDA (torch)", info["torch_cuda"] or ("not available" if info["torch"] else "no torch here")),
        ("TensorRT", info["tensorrt"] or "not installed"),
        ("cuda-python", info["cuda_python"] or "not installed"),
        ("torch", info["torch"] or "not installed (runtime-only install: train/export unavailable)"),
        ("onnx", info["onnx"] or "not installed"),
        ("power source", info["power"]),
    ]
    if info["jetson"]:
        j = info["jetson"]
        rows[1:1] = [("Jetson", f"{j['model']}: JetPack {j['jetpack'] or 'unknown (newer than edgegen knows)'}, "
                                f"L4T {j['l4t']}, power mode {j['power_mode'] or 'unknown (nvpmodel -q)'}, "
                                f"CUDA {j['cuda'] or 'not found'}"),
                     ("target", _jetson_target(j))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _jetson_target(j: dict) -> str:
    if target := jetson_target(j["l4t"]):
        return f"--target {target} for export, optimize, check and build"
    early_six = str(j["l4t"]).split(".")[0] == "36"   # r36 without a target: JetPack 6.0 or its preview
    return (f"JetPack {j['jetpack'] or 'unknown'} (L4T {j['l4t']}): edgegen's targets are jetpack6 (JetPack 6.1 and 6.2, "
            "TensorRT 10.3) and jetpack7 (JetPack 7, TensorRT 10.13 and later), and this release's TensorRT is neither"
            + (" (JetPack 6.0 carries 8.6: upgrade to 6.1 or later)" if early_six else ""))
