"""The worked example of docs/bring-your-own-model.md: a model that is none of edgegen's
families. A DnCNN-style denoiser (Zhang et al., 2017): a plain stack of 3x3 convolutions that
predicts the noise of a greyscale image of any size, subtracted from the input.

    edgegen export --module docs/examples/denoiser.py:make_model --inputs example.npz \\
        --dynamic noisy:0=batch --dynamic noisy:2=height --dynamic noisy:3=width --output-name clean --out pkg
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn


class Denoiser(nn.Module):
    def __init__(self, width: int = 32, depth: int = 6):
        super().__init__()
        layers = [nn.Conv2d(1, width, 3, padding=1), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        layers.append(nn.Conv2d(width, 1, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor) -> torch.Tensor:
        return (noisy - self.body(noisy)).clamp(0, 1)


def make_model() -> Denoiser:
    """The factory `edgegen export --module` calls: the network with its trained weights
    (DENOISER_WEIGHTS, or denoiser.pt beside this file, when there is one). Without them, seeded
    random weights: every call must return the same weights, since `bench --vs-torch` and the
    export each call it and bench checks they match the package's."""
    weights = Path(os.environ.get("DENOISER_WEIGHTS", Path(__file__).with_suffix(".pt")))
    if weights.is_file():
        model = Denoiser()
        model.load_state_dict(torch.load(weights, weights_only=True))
        return model.eval()
    with torch.random.fork_rng():   # seeded here, the caller's random state left as it was
        torch.manual_seed(0)
        return Denoiser().eval()
