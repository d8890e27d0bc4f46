"""One pipeline class per family, found by the manifest's `family`."""

from .base import Pipeline
from .controlnet import ControlNetPipeline
from .diffusion import DiffusionPipeline
from .flow import FlowPipeline
from .gan import ConditionalGANPipeline, GANPipeline
from .gpt import GPTPipeline
from .ldm import LatentDiffusionPipeline
from .pixelcnn import PixelCNNPipeline
from .stylegan import StyleGANPipeline
from .vae import VAEGANPipeline, VAEPipeline
from .wavenet import WaveNetPipeline

PIPELINES: dict[str, type[Pipeline]] = {p.family: p for p in (
    VAEPipeline, GANPipeline, ConditionalGANPipeline, DiffusionPipeline, FlowPipeline, GPTPipeline, PixelCNNPipeline, WaveNetPipeline,
    VAEGANPipeline, StyleGANPipeline, ControlNetPipeline, LatentDiffusionPipeline)}

__all__ = ["PIPELINES", "Pipeline", "ConditionalGANPipeline", "ControlNetPipeline", "DiffusionPipeline", "FlowPipeline", "GANPipeline", "GPTPipeline", "LatentDiffusionPipeline",
           "PixelCNNPipeline", "StyleGANPipeline", "WaveNetPipeline", "VAEPipeline", "VAEGANPipeline"]
