"""edgegen's pretrained models: one checkpoint per shipped model in checkpoints/, and in a built
wheel, beside each, its exported fp32 package in packages/ (`python -m edgegen_models.build`
writes them). edgegen finds them by name: `edgegen generate vae-digits`, `edgegen.load("vae-digits")`.

Data only, no code of its own: edgegen/shipped.py reads these folders."""

from pathlib import Path

__version__ = "0.1.0"
CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"
PACKAGES = Path(__file__).resolve().parent / "packages"
