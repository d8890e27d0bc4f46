"""The latent diffusion family: the diffusion UNet over a KL autoencoder's latents."""

from .. import DemoModel, Family, register
from ...runtimes.pipelines.ldm import LatentDiffusionConfig, LatentDiffusionPipeline
from ..diffusion.cli import SAMPLING_OPTIONS, generate

FAMILY = register(Family(
    name="ldm",
    summary="latent diffusion: encoder, UNet on latents, decoder",
    pipeline=LatentDiffusionPipeline,
    config=LatentDiffusionConfig,
    model="edgegen.models.ldm",
    export="edgegen.export.spec:LDM",
    options=SAMPLING_OPTIONS,
    generate=generate,
    demo=(DemoModel("ldm-digits", "digits"),),
    showcase="edgegen.families.diffusion.demo",
    order=80,
))
