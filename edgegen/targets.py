"""Deployment targets: where a package will run, and what that decides for export, optimize,
check and build (docs/tensorrt-and-jetson.md). Runtime code: no torch, no onnx.

A TensorRT target names the TensorRT release its ONNX parser comes from. That release
decides the opset to export at, the parser table `check` uses off the device, and the engine
precisions `build` takes. ONNX's Attention op is parsed from TensorRT 10.14 on, its
RMSNormalization, RotaryEmbedding and TensorScatter from 10.15 (onnx-tensorrt's changelog), and
they exist from opset 23 (TensorScatter 24): below it attention stays MatMul-Softmax-MatMul,
which TensorRT fuses itself. So JetPack 6 (TensorRT 10.3) gets opset 18, and JetPack 7, whose
7.0 and 7.1 carry TensorRT 10.13, opset 21: the first with DequantizeLinear of int4 blocks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, not_one_of

DEFAULT_OPSET = 23   # ONNX Runtime's fused Attention op; the ort-cpu and desktop TensorRT targets


INT4_OPSET = 21   # ONNX's DequantizeLinear takes int4 blocks from it: int4 for TensorRT needs a parser of it


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    opset: int                       # what `export --target` exports at
    tensorrt: str | None = None      # the parser table `check` uses; None: not a TensorRT target
    tensorrt_releases: tuple[str, str | None] | None = None   # the oldest and newest release `build` expects there
    variant_precisions: tuple[str, ...] = ("int8", "fp16", "fused", "int4", "int8-weights")   # what `optimize` may add

    @property
    def uses_tensorrt(self) -> bool:
        return self.tensorrt is not None


TARGETS = {
    "ort-cpu": Target("ort-cpu", "ONNX Runtime on a CPU (keeps a variant only where it is faster here)", opset=DEFAULT_OPSET),
    "tensorrt": Target("tensorrt", "a desktop or server NVIDIA GPU with TensorRT 10.15 or later", opset=DEFAULT_OPSET,
                       tensorrt="10.15", variant_precisions=("int8", "fp16", "int4")),
    "jetpack6": Target("jetpack6", "Jetson Orin on JetPack 6.1 or 6.2 (L4T r36.4): TensorRT 10.3, CUDA 12.6",
                       opset=18,
                       tensorrt="10.3", tensorrt_releases=("10.3", "10.3"),
                       variant_precisions=("int8", "fp16")),
    "jetpack7": Target("jetpack7", "a Jetson Orin or Thor on JetPack 7: TensorRT 10.13 (7.0 and 7.1, L4T r38) or later "
                       "(7.2, L4T r39: 10.16), CUDA 13", opset=INT4_OPSET, tensorrt="10.13",
                       tensorrt_releases=("10.13", None), variant_precisions=("int8", "fp16", "int4")),
}
TENSORRT_TARGETS = tuple(name for name, target in TARGETS.items() if target.uses_tensorrt)


# /etc/nv_tegra_release's first line on a Jetson: "# R36 (release), REVISION: 4.3, GCID: ..."
L4T_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")
# Jetson Linux (L4T) major release -> (its first release that carries the target's TensorRT, the
# target): r36.4 is JetPack 6.1 and 6.2 (TensorRT 10.3), while r36.2 and r36.3 (JetPack 6.0 and its
# preview) carry TensorRT 8.6, which no target covers; r38 (7.0, 7.1) and r39 (7.2) are JetPack 7
TARGET_FOR_L4T = {"36": ((36, 4), "jetpack6"), "38": ((38, 0), "jetpack7"), "39": ((39, 0), "jetpack7")}


def l4t_release(root: Path = Path("/")) -> str | None:
    """This Jetson's Jetson Linux release ("36.4.3"), or None on a machine that is not one."""
    try:
        match = L4T_RELEASE.search((root / "etc" / "nv_tegra_release").read_text(errors="replace"))
    except OSError:
        return None
    return f"{match.group(1)}.{match.group(2)}" if match else None


def jetson_target(l4t: str | None) -> str | None:
    """edgegen's target for a Jetson on Jetson Linux `l4t`, or None for a release it has none for."""
    parts = [int(part) for part in (l4t or "").split(".") if part.isdigit()]
    first, target = TARGET_FOR_L4T.get(str(parts[0]) if parts else "", (None, None))
    return target if target and tuple(parts[:2]) >= first else None


def this_device_target(root: Path = Path("/")) -> str:
    """The TensorRT target of this machine, where no --target says it (edgegen.load builds its
    engines on the device it runs on): a Jetson's own JetPack's, else the desktop's."""
    return jetson_target(l4t_release(root)) or "tensorrt"


def get_target(name: str, allowed: tuple[str, ...] | None = None) -> Target:
    allowed = allowed or tuple(TARGETS)
    if name not in allowed:
        raise ConfigError(not_one_of("target", name, allowed))
    return TARGETS[name]


def describe_targets(names: tuple[str, ...]) -> str:
    """Help text: one clause per target."""
    return "; ".join(f"{name}: {TARGETS[name].description}" for name in names)


def release_mismatch(target: Target, version: str, where: str = "on this machine") -> str | None:
    """Why this machine's TensorRT `version` is not the one `target` names, or None. Engines
    are built on the device itself; one built against another release would not load there.
    `where`: where the version came from, for the message."""
    if target.tensorrt_releases is None:
        return None
    oldest, newest = target.tensorrt_releases
    found = _major_minor(version)
    if found < _major_minor(oldest) or (newest is not None and found > _major_minor(newest)):
        expected = oldest if oldest == newest else f"{oldest} or later" if newest is None else f"{oldest} to {newest}"
        return (f"target {target.name}: expected TensorRT {expected} ({target.description}), found TensorRT {version} "
                f"{where}")
    return None


def _major_minor(version: str) -> tuple[int, int]:
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]
