"""The export of a trained text2image checkpoint: its EMA text encoder and UNet and its
autoencoder saved as a Stable Diffusion pipeline folder (diffusers' save_pretrained, CLIP's
tokenizer files), then imported from that folder as any diffusers pipeline is
(diffusers_import.py). The package records the edgegen checkpoint as its source, and the
captions the model was trained on."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

from ...export.hugging_face import quiet_hugging_face
from ...export.diffusers_import import read_layout
from ...export.spec import ExportSpec
from ...training.checkpoint import Checkpoint
from .components import clip_tokenizer, save_pipeline
from .diffusers_import import import_stable_diffusion
from .model import DIGIT_NAMES, Config, caption, words_of

SCHEDULER = "DPMSolverMultistepScheduler"   # the package's sampler: DPM-Solver++ 2M, good in 20 steps


def captions_described(c: Config) -> dict:
    """What the manifest says about the prompts the model knows: a folder's captions' count,
    vocabulary and first few; for the digits, the medians its thick and thin were measured
    against (what quality.caption_quality measures samples against). The examples' first is the
    prompt `edgegen bench` times."""
    if c.captions:
        return {"form": "the captions of the training pictures", "distinct": len(c.captions),
                "vocabulary_words": len(words_of(c)), "examples": [t for t in c.captions if t][:3]}
    ink_medians = c.ink_medians
    return {"form": "a|an [thin|thick] DIGIT", "digits": list(DIGIT_NAMES), "attributes": {
        "thin": "ink (the sum of the pixels in [0, 1]) below the median of the digit's training images",
        "thick": "ink above that median"}, "ink_medians": list(ink_medians),
        "examples": [caption(7, "thick"), caption(8, "thin"), caption(3)]}


def as_pipeline_folder(ckpt: Checkpoint, folder: Path, scheduler: str = SCHEDULER) -> Path:
    """The checkpoint as a diffusers StableDiffusionPipeline folder (no safety checker), at
    folder/pipeline; `scheduler` names the diffusers class its scheduler config is saved as."""
    model, c = ckpt.model, ckpt.config
    vae = copy.deepcopy(model.autoencoder.vae)   # the latents' scale goes into its config, as Stable Diffusion's does
    vae.register_to_config(scaling_factor=float(model.autoencoder.scale_factor))
    tokenizer = clip_tokenizer(folder / "caption-vocabulary", words_of(c), c.max_length)
    schedule = {"num_train_timesteps": c.num_train_timesteps, "beta_schedule": c.beta_schedule,
                "beta_start": c.beta_start, "beta_end": c.beta_end, "prediction_type": c.prediction_type}
    parts = {"unet": model.denoiser.unet, "vae": vae, "text_encoder": model.denoiser.text_encoder,
             "tokenizer": tokenizer}
    return save_pipeline(folder / "pipeline", parts, scheduler, schedule, tokenizer_source=folder / "caption-vocabulary")


def through_import(ckpt: Checkpoint, scratch: Path) -> tuple[Checkpoint, ExportSpec]:
    """ExportSpec.via_import: the import of as_pipeline_folder(ckpt), as coming from ckpt."""
    with quiet_hugging_face():   # a pipeline folder of edgegen's own making: its bars are noise in the export's
        imported, spec = import_stable_diffusion(*read_layout(as_pipeline_folder(ckpt, scratch)), scratch)
    described = {**ckpt.data, "captions": captions_described(ckpt.config)}

    def runtime_config(_):
        return dataclasses.replace(spec.runtime_config(imported), data=described)

    source = dataclasses.replace(imported, path=ckpt.path, family=ckpt.family, data=ckpt.data, training=ckpt.training,
                                 weights_sha256=ckpt.weights_sha256)
    return source, dataclasses.replace(spec, runtime_config=runtime_config)


SPEC = ExportSpec(family="text2image", needs_data=False, via_import=through_import)
