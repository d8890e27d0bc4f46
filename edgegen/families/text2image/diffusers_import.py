"""Import a diffusers Stable Diffusion-layout pipeline (CLIP text encoder and tokenizer, a
UNet2DConditionModel, an AutoencoderKL and the scheduler) as a text2image package: four graphs,
each gated against PyTorch, and the tokenizer's tokenizer.json beside them.

The graphs:
- text_encoder: input_ids [batch, max_length] -> last_hidden_state, as the pipeline feeds the UNet;
- unet: (sample, timestep, encoder_hidden_states) -> prediction;
- decoder: scaled latents -> images in [0, 1] (diffusers' `vae.decode(latents / scaling_factor)`
  and its postprocessing, in one graph);
- encoder: images in [0, 1] -> scaled latents, the posterior's mean (img2img and inpainting).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ...errors import CheckpointError, ImportedSettingWarning
from ...export.diffusers_import import component_class, load_component, read_scheduler
from ...export.hugging_face import special_token, transformers_tokenizer
from ...export.spec import ExportSpec, GraphSpec
from ...package import TensorSpec, files_sha256, read_json, sha256_file
from ...runtimes.samplers import make_sampler
from ...runtimes.tokenizer import ids_beyond
from ...training.checkpoint import Checkpoint
from ..diffusion.diffusers_import import RECORDED_FEEDS, sample_sides, smooth_images
from ..diffusion.export import noised_inputs
from .pipeline import TextToImageConfig

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
# None in the folders this imports: a safety checker filters the pipeline's images, which the package
# would not, without a word
REFUSED = ("safety_checker",)
# not imported: the safety checker's image preprocessing (Stable Diffusion 2.x's folders keep it
# beside safety_checker None), and IP-Adapter's image encoder (image prompts: the package takes text)
NOT_IMPORTED = ("feature_extractor", "image_encoder")


class StableDiffusionParts(torch.nn.Module):
    """The pipeline's models as the graphs' modules, with diffusers' scaling and postprocessing.
    The latents are scaled by the VAE's scaling_factor alone: Stable Diffusion's pipelines never
    read its shift_factor (SD3's and Flux's do), so neither does the package."""

    def __init__(self, text_encoder, unet, vae):
        super().__init__()
        self.text_encoder, self.unet, self.vae = text_encoder, unet, vae
        self.scaling = float(vae.config.scaling_factor)


class TextEncoder(torch.nn.Module):
    def __init__(self, parts):
        super().__init__()
        self.model = parts.text_encoder

    def forward(self, input_ids):
        return self.model(input_ids)[0]


class ConditionedUNet(torch.nn.Module):
    def __init__(self, parts):
        super().__init__()
        self.unet = parts.unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states).sample


class Decoder(torch.nn.Module):
    def __init__(self, parts):
        super().__init__()
        self.vae, self.scaling = parts.vae, parts.scaling

    def forward(self, latent):
        image = self.vae.decode(latent / self.scaling).sample
        return (image / 2 + 0.5).clamp(0, 1)


class Encoder(torch.nn.Module):
    def __init__(self, parts):
        super().__init__()
        self.vae, self.scaling = parts.vae, parts.scaling

    def forward(self, image):
        return self.vae.encode(image * 2 - 1).latent_dist.mean * self.scaling


def _check_layout(folder: Path, layout: dict) -> None:
    missing = [c for c in COMPONENTS if not layout.get(c) or layout[c][0] is None]
    extra = [k for k in layout if not k.startswith("_") and k not in COMPONENTS + REFUSED + NOT_IMPORTED
             and isinstance(layout[k], list) and layout[k][0] is not None]
    present = [k for k in REFUSED if isinstance(layout.get(k), list) and layout[k][0] is not None]
    if missing or extra or present:
        found = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                             f"also {extra + present}" if extra or present else "") if part)
        raise CheckpointError(f"diffusers pipeline {str(folder)!r} ({layout.get('_class_name')}): expected Stable "
                              f"Diffusion's {', '.join(COMPONENTS)} (a safety checker is not imported: save the "
                              f"pipeline with safety_checker=None), found {found}")
    if isinstance(layout.get("image_encoder"), list) and layout["image_encoder"][0] is not None:
        warnings.warn(f"diffusers pipeline {str(folder)!r}: its image_encoder (IP-Adapter's image prompts) is not "
                      "imported; the package takes text prompts", ImportedSettingWarning, stacklevel=3)


def _tokenizer_file(folder: Path, layout: dict, scratch: Path) -> tuple[Path, dict]:
    """The tokenizer transformers builds from the pipeline's tokenizer folder (tokenizer.json, or
    CLIP's vocab.json and merges.txt), as the class model_index.json names (CLIPTokenizer), which
    the pipeline's prompts are encoded with; and the tokenizer's settings (model_max_length, pad token)."""
    source = folder / "tokenizer"
    settings = read_json(source / "tokenizer_config.json", CheckpointError) if (source / "tokenizer_config.json").is_file() else {}
    if not ((source / "tokenizer.json").is_file() or ((source / "vocab.json").is_file() and (source / "merges.txt").is_file())):
        raise CheckpointError(f"{source}: expected tokenizer.json, or CLIP's vocab.json and merges.txt, found neither")
    transformers_tokenizer(source, component_class(folder, layout, "tokenizer")).save(str(scratch / "tokenizer.json"))
    return scratch / "tokenizer.json", settings


def import_stable_diffusion(folder: Path, layout: dict, scratch: Path) -> tuple[Checkpoint, ExportSpec]:
    _check_layout(folder, layout)
    unet, unet_weights = load_component(folder, layout, "unet", ("UNet2DConditionModel",))
    vae, vae_weights = load_component(folder, layout, "vae", ("AutoencoderKL",))
    text_encoder, text_weights = load_component(folder, layout, "text_encoder", ("CLIPTextModel",))
    if vae.config.get("shift_factor"):   # as diffusers' pipeline runs it: said, since the VAE's config names it
        warnings.warn(f"{folder / 'vae' / 'config.json'}: shift_factor {vae.config.shift_factor} is not applied, as "
                      "diffusers' Stable Diffusion pipelines do not apply it (the latents are scaled by "
                      "scaling_factor alone)", ImportedSettingWarning, stacklevel=2)
    settings = read_scheduler(folder, layout.get("_class_name"))
    uc = unet.config
    refused = {k: uc.get(k) for k in ("class_embed_type", "addition_embed_type", "num_class_embeds",
                                      "encoder_hid_dim") if uc.get(k)}
    if refused:
        raise CheckpointError(f"{folder / 'unet'}: expected a UNet conditioned on text states only (Stable Diffusion "
                              f"1.x and 2.x), found {refused} (SDXL-style extra conditioning is not imported)")
    if uc.in_channels != vae.config.latent_channels:
        inpainting = " (an inpainting UNet's 9 channels are not imported)" if uc.in_channels == 9 else ""
        raise CheckpointError(f"{folder / 'unet'}: expected in_channels {vae.config.latent_channels} (the VAE's latent "
                              f"channels), found {uc.in_channels}{inpainting}")
    if uc.cross_attention_dim != text_encoder.config.hidden_size:   # else torch.export's hundreds of lines
        raise CheckpointError(f"{folder / 'unet'}: expected cross_attention_dim {text_encoder.config.hidden_size} (the "
                              f"text encoder's hidden_size, which its attention reads), found {uc.cross_attention_dim}")
    if uc.out_channels != uc.in_channels:
        raise CheckpointError(f"{folder / 'unet'}: expected out_channels {uc.in_channels} (a prediction of the latents' "
                              f"shape), found {uc.out_channels}")
    height, width = sample_sides(uc.sample_size, folder / "unet")   # the latents' sides
    tokenizer_file, tokenizer_settings = _tokenizer_file(folder, layout, scratch)
    from tokenizers import Tokenizer

    max_length = int(tokenizer_settings.get("model_max_length") or text_encoder.config.max_position_embeddings)
    max_length = min(max_length, text_encoder.config.max_position_embeddings)
    pad = special_token(tokenizer_settings, "pad_token", special_token(tokenizer_settings, "eos_token", "<|endoftext|>"))
    # said of the user's file, not of the one transformers built in scratch
    shown = folder / "tokenizer" / ("tokenizer.json" if (folder / "tokenizer" / "tokenizer.json").is_file() else "vocab.json")
    pad_id = Tokenizer.from_file(str(tokenizer_file)).token_to_id(pad)
    if pad_id is None:
        raise CheckpointError(f"{shown}: expected the pad token {pad!r} in the vocabulary, found it missing")
    # the text encoder's rows: a prompt's ids are not checked at run time, and the import's own check fed
    # them (an IndexError)
    if beyond := ids_beyond(tokenizer_file, text_encoder.config.vocab_size, added_tokens=True):
        raise CheckpointError(f"{shown}: {beyond}")

    down = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = [uc.in_channels, height, width]
    image = [vae.config.in_channels, height * down, width * down]
    hidden = text_encoder.config.hidden_size
    vocab = text_encoder.config.vocab_size
    parts = StableDiffusionParts(text_encoder, unet, vae).eval()
    alphas = make_sampler("ddim", **settings.schedule).alphas_cumprod

    def prompt_ids(batch, rng) -> np.ndarray:
        """Token ids shaped as prompts are: start, a few words, end, padding."""
        ids = np.full((batch, max_length), pad_id, np.int64)
        for row in ids:
            words = int(rng.integers(1, max_length - 1))
            row[0] = text_encoder.config.bos_token_id if text_encoder.config.bos_token_id < vocab else 0
            row[1:1 + words] = rng.integers(0, vocab, words)
            row[1 + words] = text_encoder.config.eos_token_id if text_encoder.config.eos_token_id < vocab else pad_id
        return ids

    def states(batch, rng) -> np.ndarray:
        with torch.inference_mode():
            return text_encoder(torch.from_numpy(prompt_ids(batch, rng)))[0].numpy()

    def latents(batch, rng) -> np.ndarray:
        with torch.inference_mode():
            return Encoder(parts)(torch.from_numpy((smooth_images((batch, *image), rng) + 1) / 2)).numpy()

    def unet_inputs(ckpt, batch, rng, data):
        sample, t = noised_inputs(alphas, latents(batch, rng), rng)
        return {"sample": sample, "timestep": t, "encoder_hidden_states": states(batch, rng)}

    graphs = (
        GraphSpec("text_encoder", TextEncoder, lambda c: (TensorSpec("input_ids", "int64", ("batch", max_length)),),
                  ("last_hidden_state",), lambda ckpt, batch, rng, data: {"input_ids": prompt_ids(batch, rng)}),
        GraphSpec("unet", ConditionedUNet, lambda c: (
            TensorSpec("sample", "float32", ("batch", *latent)), TensorSpec("timestep", "float32", ("batch",)),
            TensorSpec("encoder_hidden_states", "float32", ("batch", max_length, hidden))), ("prediction",), unet_inputs),
        GraphSpec("decoder", Decoder, lambda c: (TensorSpec("latent", "float32", ("batch", *latent)),), ("image",),
                  lambda ckpt, batch, rng, data: {"latent": latents(batch, rng)}),
        GraphSpec("encoder", Encoder, lambda c: (TensorSpec("image", "float32", ("batch", *image)),), ("latent",),
                  lambda ckpt, batch, rng, data: {"image": (smooth_images((batch, *image), rng) + 1) / 2}),
    )
    source = {"source": "diffusers", "pipeline": layout.get("_class_name"), "unet": "UNet2DConditionModel",
              "scheduler": layout["scheduler"][1], "text_encoder": layout["text_encoder"][1]}

    def runtime_config(ckpt) -> TextToImageConfig:
        return TextToImageConfig(
            image_shape=image, latent_shape=latent, scale_factor=parts.scaling, num_classes=0, null_label=0,
            tokenizer={"kind": "bpe", "file": "tokenizer.json", "sha256": sha256_file(tokenizer_file)},
            max_length=max_length, pad_token_id=int(pad_id), data=source, **settings.config_fields())

    spec = ExportSpec(family="text2image", graphs=graphs, runtime_config=runtime_config, needs_data=False,
                      recorded_feeds=RECORDED_FEEDS)
    weights = files_sha256(text_weights + unet_weights + vae_weights)
    ckpt = Checkpoint(folder, "text2image", dict(uc), parts, source, {}, weights, {"tokenizer.json": tokenizer_file})
    return ckpt, spec

