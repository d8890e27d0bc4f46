"""The VAE-GAN family: the VAE's encoder and decoder, the decoder also trained adversarially; served like the VAE."""

from .. import DemoModel, Family, register
from ..vae.pipeline import VAEConfig
from .pipeline import VAEGANPipeline

FAMILY = register(Family(
    name="vaegan",
    summary="VAE whose decoder is also a GAN generator: sharper samples, the VAE's API",
    pipeline=VAEGANPipeline,
    config=VAEConfig,
    graphs=("encoder", "decoder"),
    picture_outputs=("image",),
    model="edgegen.families.vaegan.model",
    export="edgegen.families.vaegan.export",
    demo=(DemoModel("vaegan-digits", "digits"),),
    served_graph="decoder",
    showcase="edgegen.families.vae.demo",
    smoke={"train": {"steps": 2, "batch_size": 8, "image_size": 16, "width": 8}},
    order=20,
))
