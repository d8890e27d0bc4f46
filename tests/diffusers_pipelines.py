"""Random-weight diffusers pipelines of small configs, saved with save_pretrained: what the
import tests (tests/test_diffusers_import.py) take through edgegen."""

from __future__ import annotations

from pathlib import Path

import torch

from edgegen.families.text2image.components import LayoutConfig, build_components, clip_tokenizer, save_pipeline

CAPTION_WORDS = ("a", "digit", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "thick", "thin", "small", "large", "slanted", "upright", "photo", "of")


def ddpm_layout(out: Path, sample_size: int = 16, channels: int = 3, seed: int = 0, attention: bool = True,
                scheduler_name: str = "DDIMScheduler", unet_config: dict | None = None, **scheduler_config) -> Path:
    """A UNet2DModel pipeline (DDPMPipeline's layout: unet/ and scheduler/); unet_config: more of
    UNet2DModel's settings, or others."""
    import diffusers

    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=sample_size, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
        up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D"), **{
            "in_channels": channels, "out_channels": channels, **(unet_config or {})})
    scheduler = getattr(diffusers, scheduler_name).from_config(scheduler_config)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out)
    return out


def sd_layout(out: Path, sample_size: int = 16, max_length: int = 16, cross: int = 32, seed: int = 0,
              scheduler_name: str = "PNDMScheduler", **scheduler_config) -> Path:
    """A small StableDiffusionPipeline folder; its tokenizer's vocab.json and merges.txt also lie
    in {out}-tokenizer."""
    source = out.parent / f"{out.name}-tokenizer"
    config = LayoutConfig(latent_size=sample_size, max_length=max_length, cross_dim=cross)
    parts = build_components(config, clip_tokenizer(source, CAPTION_WORDS, max_length), seed)
    return save_pipeline(out, parts, scheduler_name, scheduler_config, tokenizer_source=source)
