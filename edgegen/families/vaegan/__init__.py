"""The VAE-GAN family: the VAE's encoder and decoder, the decoder also trained adversarially; served like the VAE."""

from .. import DemoModel, Family, register
from ...runtimes.pipelines.vae import VAEConfig, VAEGANPipeline

FAMILY = register(Family(
    name="vaegan",
    summary="VAE whose decoder is also a GAN generator: sharper samples, the VAE's API",
    pipeline=VAEGANPipeline,
    config=VAEConfig,
    model="edgegen.models.vaegan",
    export="edgegen.export.spec:VAEGAN",
    demo=(DemoModel("vaegan-digits", "digits"),),
    showcase="edgegen.families.vae.demo",
    order=20,
))
