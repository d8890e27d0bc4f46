"""Exponential moving average of a module's weights: what GANs and diffusion models export."""

from __future__ import annotations

import torch


class EMA:
    """Keeps `target` (a copy of `source` in the model) as an EMA of `source`'s parameters.

    The decay warms up as in TensorFlow's ExponentialMovingAverage(num_updates), so a short
    run still exports trained weights rather than the initial ones. Buffers (BatchNorm
    running statistics) are copied, not averaged: they already are averages.
    """

    def __init__(self, source: torch.nn.Module, target: torch.nn.Module, decay: float):
        self.source, self.target, self.decay = source, target, decay
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for ema, live in zip(self.target.parameters(), self.source.parameters()):
            ema.lerp_(live, 1.0 - decay)
        for ema, live in zip(self.target.buffers(), self.source.buffers()):
            ema.copy_(live)
