"""The demo's showcase of text2image packages trained on captioned digits."""

from __future__ import annotations

from ...images import save_grid
from .model import ATTRIBUTES, DIGIT_NAMES, caption

SHOWN_PER_CAPTION = 3
SHOWN_GUIDANCE = 2.0


def caption_grid(pipe, per_caption: int = SHOWN_PER_CAPTION, guidance_scale: float = SHOWN_GUIDANCE, seed: int = 0):
    """Images [len(ATTRIBUTES) * per_caption * 10, C, H, W] for a grid of 10 columns: column d is
    DIGIT_NAMES[d]; the first per_caption rows are asked "thin", the next "thick"."""
    prompts = [caption(d, a) for d in range(len(DIGIT_NAMES)) for a in ATTRIBUTES]
    images = pipe(prompts, n=per_caption, steps=20, sampler="dpmpp-2m", guidance_scale=guidance_scale, seed=seed)
    by_prompt = images.reshape(len(DIGIT_NAMES), len(ATTRIBUTES) * per_caption, *images.shape[1:])
    return by_prompt.transpose(1, 0, *range(2, images.ndim + 1)).reshape(images.shape)


def showcase(pipe, folder, name: str) -> tuple[dict, list[str]]:
    from .quality import caption_quality

    save_grid(caption_grid(pipe), folder / f"{name}_samples.png", nrow=len(DIGIT_NAMES))
    quality = caption_quality(pipe, guidance_scale=SHOWN_GUIDANCE)
    lines = [f"![{name} samples]({name}_samples.png)", "",
             f"Columns are the prompts \"a ... zero\" to \"a ... nine\"; the top {SHOWN_PER_CAPTION} rows say \"thin\", "
             f"the bottom {SHOWN_PER_CAPTION} \"thick\" (DPM-Solver++, 20 steps, guidance {SHOWN_GUIDANCE:g}).", "",
             f"Over {quality['samples']} samples: the digit classifier reads the digit asked for in "
             f"{quality['digit_accuracy']:.1%}; {quality['attribute_agreement']:.1%} lie on the requested side of "
             f"their digit's median ink; Frechet distance to held-out digits {quality['frechet_distance']:.2f} "
             f"(the training digits': {quality['frechet_distance_training_digits']:.2f}).", ""]
    return {"quality": quality}, lines
