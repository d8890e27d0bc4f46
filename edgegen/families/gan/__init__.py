"""The GAN family: a DCGAN-sized generator, latent vectors in, images out."""

from .. import DemoModel, Family, register
from ...runtimes.pipelines.gan import GANConfig, GANPipeline

FAMILY = register(Family(
    name="gan",
    summary="DCGAN-sized GAN: latent vectors in, images out",
    pipeline=GANPipeline,
    config=GANConfig,
    model="edgegen.models.gan",
    export="edgegen.export.spec:GAN",
    demo=(DemoModel("gan-digits", "digits"),),
    showcase="edgegen.families.gan.demo",
    order=15,
))
