"""Random-weight diffusers pipelines of small configs, saved with save_pretrained: what the
import tests (tests/test_diffusers_import.py) and the benchmark take through edgegen."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CAPTION_WORDS = ("a", "digit", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "thick", "thin", "small", "large", "slanted", "upright", "photo", "of")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's and CLIP's byte -> printable character table (byte-level BPE's alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def clip_tokenizer_files(folder: Path, words=CAPTION_WORDS) -> None:
    """vocab.json and merges.txt of a small CLIP BPE: every byte alone and word-final, and merges
    that spell each of `words` as one token."""
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars]
    merges = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merges.append(f"{pieces[0]} {pieces[1]}")
            pieces = [pieces[0] + pieces[1]] + pieces[2:]
            vocab.append(pieces[0])
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(dict.fromkeys(vocab))}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")


def clip_tokenizer(scratch: Path, max_length: int = 16):
    from transformers import CLIPTokenizer

    clip_tokenizer_files(scratch)
    return CLIPTokenizer(vocab=str(scratch / "vocab.json"), merges=str(scratch / "merges.txt"),
                         model_max_length=max_length)


def scheduler(name: str, **config):
    """A scheduler from a config that may hold other classes' settings (ignored, as from_config does)."""
    import diffusers

    return getattr(diffusers, name).from_config(config)


def ddpm_layout(out: Path, sample_size: int = 16, channels: int = 3, seed: int = 0, attention: bool = True,
                scheduler_name: str = "DDIMScheduler", **scheduler_config) -> Path:
    """A UNet2DModel pipeline (DDIMPipeline's layout: unet/ and scheduler/)."""
    import diffusers

    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D" if attention else "DownBlock2D"),
        up_block_types=("AttnUpBlock2D" if attention else "UpBlock2D", "UpBlock2D"))
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler(scheduler_name, **scheduler_config))
    pipe.save_pretrained(out)
    return out


def sd_components(scratch: Path, sample_size: int = 16, seed: int = 0, max_length: int = 16, cross: int = 32,
                  scheduler_name: str = "PNDMScheduler", **scheduler_config) -> dict:
    """A Stable Diffusion layout's parts, small: CLIP text encoder and BPE tokenizer, a
    cross-attention UNet on 4-channel latents, a KL autoencoder downsampling 2x."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross, attention_head_dim=8, norm_num_groups=8)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=8,
        sample_size=sample_size * 2)
    tokenizer = clip_tokenizer(scratch / "tokenizer-source", max_length)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cross, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=max_length, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)).eval()
    # Stable Diffusion 1.x's scheduler_config.json, whichever class reads it. Its clip_sample False
    # matters: DDIM's default, x0 clipped to [-1, 1] in latent space, makes a guided loop chaotic
    # (diffusers itself moved 7e-3 per pixel for a 1e-6 nudge of the starting latents).
    config = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "clip_sample": False,
              "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, **scheduler_config}
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer,
            "scheduler": scheduler(scheduler_name, **config), "scheduler_config": config}


def sd_layout(out: Path, **options) -> Path:
    """A StableDiffusionPipeline saved with save_pretrained (no safety checker)."""
    import diffusers

    parts = sd_components(out.parent / f"{out.name}-scratch", **options)
    config = parts.pop("scheduler_config")
    pipe = diffusers.StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(out)
    # the scheduler's file as Stable Diffusion ships it: every key of `config`, the class's or not
    path = out / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}, indent=2))
    return out
