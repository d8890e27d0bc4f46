"""The text-to-image family: Stable Diffusion's layout (CLIP text encoder, cross-attention UNet on
latents, KL autoencoder), imported from a diffusers pipeline folder (docs/diffusers.md)."""

from .. import Family, register
from .cli import OPTIONS, generate
from .pipeline import TextToImageConfig, TextToImagePipeline

FAMILY = register(Family(
    name="text2image",
    summary="text-to-image latent diffusion (Stable Diffusion layout): prompts, negative prompts, img2img, inpainting",
    pipeline=TextToImagePipeline,
    config=TextToImageConfig,
    options=OPTIONS,
    generate=generate,
    serving="edgegen.families.text2image.cli:served",
    diffusers_importers={"UNet2DConditionModel": "edgegen.families.text2image.diffusers_import:export_sd_layout"},
    order=85,
))
