"""The latent diffusion family: the diffusion UNet over a KL autoencoder's latents."""

from .. import DemoModel, Family, register
from ..diffusion.cli import PICTURE_OPTIONS, SAMPLING_OPTIONS, bench_generation, check_generate, generate
from .pipeline import LatentDiffusionConfig, LatentDiffusionPipeline

FAMILY = register(Family(
    name="ldm",
    summary="latent diffusion: encoder, UNet on latents, decoder",
    pipeline=LatentDiffusionPipeline,
    config=LatentDiffusionConfig,
    graphs=("encoder", "unet", "decoder"),
    picture_outputs=("image",),
    model="edgegen.families.ldm.model",
    export="edgegen.families.ldm.export",
    options=(*SAMPLING_OPTIONS, *PICTURE_OPTIONS),
    generate=generate,
    check_generate=check_generate,
    bench_generation=bench_generation,
    step_graphs=("unet",),
    serving="edgegen.families.diffusion.cli:served",
    demo=(DemoModel("ldm-digits", "digits"),),
    showcase="edgegen.families.diffusion.demo",
    smoke={"train": {"steps": 3, "batch_size": 8, "image_size": 16, "width": 8, "autoencoder_width": 8},
           "generate": ["--steps", "2"]},
    order=80,
))
