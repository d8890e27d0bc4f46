"""The text-to-image family: Stable Diffusion's layout (CLIP text encoder, cross-attention UNet on
latents, KL autoencoder), imported from a diffusers pipeline folder, or trained here on captioned
digits or a folder of captioned pictures and exported through that same import (docs/diffusers.md)."""

from .. import DemoModel, Family, register
from .cli import OPTIONS, bench_generation, check_generate, generate
from .pipeline import TextToImageConfig, TextToImagePipeline

FAMILY = register(Family(
    name="text2image",
    summary="text-to-image latent diffusion (Stable Diffusion layout): prompts, negative prompts, img2img, inpainting",
    pipeline=TextToImagePipeline,
    config=TextToImageConfig,
    graphs=("text_encoder", "unet", "decoder", "encoder"),
    picture_outputs=("image",),
    data="digits (captioned by digit and stroke thickness), or a folder of captioned pictures (metadata.jsonl, "
         "or a .txt beside each)",
    builtin_data=("digits",),
    model="edgegen.families.text2image.model",
    export="edgegen.families.text2image.export",
    options=OPTIONS,
    generate=generate,
    check_generate=check_generate,
    bench_generation=bench_generation,
    step_graphs=("unet",),
    serving="edgegen.families.text2image.cli:served",
    diffusers_importers={"UNet2DConditionModel": "edgegen.families.text2image.diffusers_import:import_stable_diffusion"},
    demo=(DemoModel("text2image-digits", "digits"),),
    showcase="edgegen.families.text2image.demo",
    smoke={"train": {"steps": 3, "batch_size": 8, "unet_channels": [8, 16], "vae_channels": [8, 8], "norm_groups": 4,
                     "cross_dim": 16, "text_intermediate": 16, "attention_head_dim": 4},
           "generate": ["--prompt", "a thick seven", "--steps", "2"]},
    order=85,
))
