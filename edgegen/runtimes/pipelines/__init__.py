"""One pipeline class per family, found by the manifest's `family`."""

from .base import Pipeline
from .diffusion import DiffusionPipeline
from .flow import FlowPipeline
from .gan import GANPipeline
from .gpt import GPTPipeline
from .vae import VAEPipeline

PIPELINES: dict[str, type[Pipeline]] = {p.family: p for p in (VAEPipeline, GANPipeline, DiffusionPipeline, FlowPipeline, GPTPipeline)}

__all__ = ["PIPELINES", "Pipeline", "DiffusionPipeline", "FlowPipeline", "GANPipeline", "GPTPipeline", "VAEPipeline"]
