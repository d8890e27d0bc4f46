"""The diffusion family: a class-conditional UNet denoiser with edgegen's numpy samplers, or an
imported diffusers UNet2DModel pipeline (DDPM/DDIM layout)."""

from .. import DemoModel, Family, register
from .cli import PICTURE_OPTIONS, SAMPLING_OPTIONS, bench_generation, check_generate, generate
from .pipeline import DiffusionConfig, DiffusionPipeline

FAMILY = register(Family(
    name="diffusion",
    summary="class-conditional DDPM UNet: 7 samplers, guidance, img2img, inpainting",
    pipeline=DiffusionPipeline,
    config=DiffusionConfig,
    graphs=("unet",),
    picture_outputs=(),
    model="edgegen.families.diffusion.model",
    export="edgegen.families.diffusion.export",
    options=(*SAMPLING_OPTIONS, *PICTURE_OPTIONS),
    generate=generate,
    check_generate=check_generate,
    bench_generation=bench_generation,
    step_graphs=("unet",),
    serving="edgegen.families.diffusion.cli:served",
    demo=(DemoModel("diffusion-digits", "digits"),),
    showcase="edgegen.families.diffusion.demo",
    smoke={"train": {"steps": 2, "batch_size": 8, "width": 8}, "generate": ["--steps", "2"]},
    diffusers_importers={"UNet2DModel": "edgegen.families.diffusion.diffusers_import:import_ddpm_layout"},
    order=60,
))
