"""How well a text2image package trained on captioned digits (model.py) follows its prompts,
measured through the runtime: whether the digit classifier reads the digit asked for, whether the
ink moves the way "thick" and "thin" ask, and how far the samples' features lie from held-out
digits' (the Frechet distance, in the classifier's feature space). Needs torch (the classifier).
"""

from __future__ import annotations

import numpy as np

from ...errors import ConfigError
from ...metrics import frechet_distance
from ...training.classifier import train_digit_judge
from ...training.data import digit_labels
from .model import ATTRIBUTES, DIGIT_NAMES, caption, ink

QUALITY_STEPS = 20
QUALITY_SAMPLER = "dpmpp-2m"


def caption_quality(pipe, per_caption: int = 20, guidance_scale: float = 4.0, steps: int = QUALITY_STEPS,
                    sampler: str = QUALITY_SAMPLER, seed: int = 0, judge=None) -> dict:
    """per_caption samples of each "a thin DIGIT" and "a thick DIGIT" prompt, and what they show:
    - digit_accuracy: the share the classifier reads as the digit asked for;
    - attribute_agreement: the share on the requested side of the digit's median ink;
    - ink_thick_minus_thin: per digit, the mean ink of its thick samples minus its thin ones';
    - frechet_distance: all samples against the held-out digits, beside the training digits'
      own distance to them (what a perfect sampler of the training set would show)."""
    captions = pipe.config.data.get("captions")
    if not isinstance(captions, dict) or "ink_medians" not in captions:
        raise ConfigError(f"package {str(pipe.package.path)!r}: expected a text2image model trained on captioned digits "
                          f"(config.data.captions with ink_medians), found {sorted(pipe.config.data)}")
    medians = np.asarray(captions["ink_medians"], dtype=np.float64)
    judge = judge or train_digit_judge(8)
    prompts = [(d, a) for d in range(len(DIGIT_NAMES)) for a in ATTRIBUTES]
    images = pipe([caption(d, a) for d, a in prompts], n=per_caption, steps=steps, sampler=sampler,
                  guidance_scale=guidance_scale, seed=seed)
    digits = np.repeat([d for d, _ in prompts], per_caption)
    thick = np.repeat([a == "thick" for _, a in prompts], per_caption)
    amount = ink(images).astype(np.float64)
    agreement = np.where(thick, amount > medians[digits], amount < medians[digits])
    difference = [float(amount[(digits == d) & thick].mean() - amount[(digits == d) & ~thick].mean())
                  for d in range(len(DIGIT_NAMES))]
    x_train, _, x_test, _ = digit_labels(images.shape[-1])
    held_out = judge.features(x_test)
    return {
        "samples": len(images), "steps": steps, "sampler": sampler, "guidance_scale": guidance_scale,
        "digit_accuracy": float(np.mean(judge.predict(images) == digits)),
        "attribute_agreement": float(agreement.mean()),
        "ink_thick_minus_thin": [round(v, 2) for v in difference],
        "frechet_distance": frechet_distance(held_out, judge.features(images)),
        "frechet_distance_training_digits": frechet_distance(held_out, judge.features(x_train)),
    }
