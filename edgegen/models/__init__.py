"""The PyTorch side: one module per family, each with Config, build(), Trainer and defaults."""

from __future__ import annotations

from types import ModuleType

from ..errors import UnknownFamilyError
from . import cgan, controlnet, diffusion, flow, gan, gpt, ldm, pixelcnn, stylegan, vae, vaegan, wavenet

FAMILIES: dict[str, ModuleType] = {m.FAMILY: m for m in (vae, gan, vaegan, cgan, stylegan, diffusion, controlnet, ldm, flow, gpt, pixelcnn, wavenet)}


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise UnknownFamilyError(f"family {family!r}: expected one of {', '.join(FAMILIES)}, found an unknown name")
    return FAMILIES[family]
