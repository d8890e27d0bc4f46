"""One pipeline class per family, found by the manifest's `family`."""

from .base import Pipeline
from .diffusion import DiffusionPipeline
from .flow import FlowPipeline
from .gan import ConditionalGANPipeline, GANPipeline
from .gpt import GPTPipeline
from .pixelcnn import PixelCNNPipeline
from .vae import VAEGANPipeline, VAEPipeline
from .wavenet import WaveNetPipeline

PIPELINES: dict[str, type[Pipeline]] = {p.family: p for p in (
    VAEPipeline, GANPipeline, ConditionalGANPipeline, DiffusionPipeline, FlowPipeline, GPTPipeline, PixelCNNPipeline, WaveNetPipeline,
    VAEGANPipeline)}

__all__ = ["PIPELINES", "Pipeline", "ConditionalGANPipeline", "DiffusionPipeline", "FlowPipeline", "GANPipeline", "GPTPipeline",
           "PixelCNNPipeline", "WaveNetPipeline", "VAEPipeline", "VAEGANPipeline"]
