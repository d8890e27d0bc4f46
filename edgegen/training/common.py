"""What several families' trainers share."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F


def training_labels(labels: torch.Tensor | None, n: int, num_classes: int, null_label: int,
                    dropout: float) -> torch.Tensor:
    """Class labels for a batch, each replaced by the "no label" index with probability
    `dropout` (so one model learns the conditional and the unconditional distribution);
    all "no label" for data without classes."""
    if labels is None or num_classes == 0:
        return torch.full((n,), null_label, dtype=torch.long)
    return torch.where(torch.rand(n) < dropout, torch.full_like(labels, null_label), labels)


def bernoulli_nll(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed per image, averaged over the batch. Reconstructions that are no
    longer finite (a diverged run) give NaN, which training's divergence check names, where torch
    would refuse them with an error about values outside [0, 1]."""
    if not torch.isfinite(recon).all():
        return (recon * 0).sum() + math.nan   # still part of the graph: the step runs, and is caught after
    return F.binary_cross_entropy(recon, images, reduction="sum") / images.shape[0]


def adam_with_cosine(parameters, lr: float, total_steps: int, floor: float = 0.05):
    """Adam, and a schedule decaying the rate by a cosine from lr to floor * lr over the run."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    return optimizer, schedule


class LikelihoodTrainer:
    """Maximum likelihood for the autoregressive families: model.loss(x, labels) minimised
    with Adam and a cosine schedule, labels dropped to "no label" at label_dropout (for
    classifier-free use), gradients clipped where clip is set. Subclasses name the metric."""

    metric = "loss"
    label_dropout = 0.1
    clip: float | None = None

    def __init__(self, model, lr: float, total_steps: int):
        self.model = model
        self.optimizer, self.scheduler = adam_with_cosine(model.parameters(), lr, total_steps)

    def step(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        c = self.model.config
        labels = training_labels(labels, len(x), c.num_classes, c.null_label, self.label_dropout)
        loss = self.model.loss(x, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.optimizer.step()
        self.scheduler.step()
        return {self.metric: loss.item()}


@contextlib.contextmanager
def torch_threads(count: int | None = None):
    """torch's process-wide thread count set to `count` (None: left as it is) and, on leaving, as
    it was: what edgegen sets for its own work is not left to the user's process (a notebook)."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
