"""The GAN family: a DCGAN-sized generator, latent vectors in, images out."""

from .. import DemoModel, Family, register
from .pipeline import GANConfig, GANPipeline

FAMILY = register(Family(
    name="gan",
    summary="DCGAN-sized GAN: latent vectors in, images out",
    pipeline=GANPipeline,
    config=GANConfig,
    graphs=("generator",),
    picture_outputs=("image",),
    model="edgegen.families.gan.model",
    export="edgegen.families.gan.export",
    demo=(DemoModel("gan-digits", "digits"),),
    served_graph="generator",
    showcase="edgegen.families.gan.demo",
    smoke={"train": {"steps": 2, "batch_size": 8, "image_size": 16, "width": 8}},
    order=15,
))
