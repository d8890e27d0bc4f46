"""A gated PixelCNN (van den Oord et al., 2016): a vertical stack that sees the rows above and
a horizontal stack that sees the pixels to the left in the current row, linked so there is
no blind spot; gated tanh x sigmoid units; a softmax over a few grey levels per pixel;
optional class conditioning (with a "no label" index, so one model samples either way).

The network splits in two along its own structure, which is what makes sampling cheap:
`links(x)` runs the vertical stack and returns, for every row, what each horizontal layer
receives from above (depends only on the rows above); `horizontal(x, links)` runs the
horizontal stack, whose kernels are one row high, so it runs on a single row as well as on
the whole image. forward(x) = horizontal(x, links(x)) exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...training.common import LikelihoodTrainer

FAMILY = "pixelcnn"
DATA_RANGE = (0.0, 1.0)
DEFAULT_STEPS = 3000
DEFAULT_BATCH = 64
DEFAULT_LR = 2e-3
DEFAULT_IMAGE_SIZE = 8
DEFAULT_CHANNELS = 1   # grey levels: photographs and folders of colour images are read as grey
LABEL_DROPOUT = 0.1


@dataclass
class Config:
    image_channels: int = 1
    image_size: int = 8
    levels: int = 4              # grey levels per pixel (2 = binarized)
    width: int = 64              # feature channels of each stack
    layers: int = 6              # gated layers, the first with a 7-wide kernel, the rest 3-wide
    num_classes: int = 0         # 0 = unconditional

    def validate(self) -> list[str]:
        problems = []
        if self.image_channels != 1:
            problems.append(f"image_channels expected 1 (grey levels), found {self.image_channels}")
        if not 2 <= self.levels <= 256:
            problems.append(f"levels expected 2 to 256, found {self.levels}")
        if self.width < 1 or self.layers < 1 or self.image_size < 2:
            problems.append(f"width, layers and image_size expected positive (image_size >= 2), found "
                            f"{self.width}, {self.layers}, {self.image_size}")
        if self.num_classes < 0:
            problems.append(f"num_classes expected 0 or more, found {self.num_classes}")
        return problems

    @property
    def null_label(self) -> int:
        return self.num_classes


def quantize(images: torch.Tensor, levels: int) -> torch.Tensor:
    """[0, 1] floats -> level indices 0..levels-1."""
    return torch.round(images.clamp(0, 1) * (levels - 1)).long()


class GatedLayer(nn.Module):
    def __init__(self, cin: int, c: int, k: int, first: bool, num_embeddings: int):
        super().__init__()
        self.first, self.k = first, k
        self.v_conv = nn.Conv2d(cin, 2 * c, (k // 2 + 1, k))      # rows r-k//2 .. r
        self.link = nn.Conv2d(2 * c, 2 * c, 1)                    # vertical -> horizontal, one row down
        self.h_conv = nn.Conv2d(cin, 2 * c, (1, k // 2 + 1))      # columns c-k//2 .. c
        self.h_out = nn.Conv2d(c, c, 1)
        self.v_bias = nn.Embedding(num_embeddings, 2 * c)
        self.h_bias = nn.Embedding(num_embeddings, 2 * c)

    @staticmethod
    def gate(x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def vertical(self, v, labels):
        """-> (the next vertical state, this layer's link for each row, from the rows above)."""
        k = self.k
        pre = self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0))) + self.v_bias(labels)[:, :, None, None]
        shifted = F.pad(pre, (0, 0, 1, 0))[:, :, :-1, :]         # row r gets row r-1: strictly above
        return self.gate(pre), self.link(shifted)

    def horizontal(self, h, link, labels):
        k = self.k
        if self.first:  # mask A: the current pixel itself is not seen
            h_in = F.pad(h, (1, 0))[:, :, :, :-1]
        else:
            h_in = h
        pre = self.h_conv(F.pad(h_in, (k // 2, 0))) + link + self.h_bias(labels)[:, :, None, None]
        out = self.h_out(self.gate(pre))
        return out if self.first else h + out


class PixelCNN(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.config = c
        n = c.num_classes + 1
        self.layers = nn.ModuleList(
            GatedLayer(1 if i == 0 else c.width, c.width, 7 if i == 0 else 3, i == 0, n) for i in range(c.layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(c.width, c.width, 1), nn.ReLU(),
                                  nn.Conv2d(c.width, c.levels, 1))

    def links(self, image, labels):
        """image [B, 1, H, W] in [0, 1] -> [B, layers, 2C, H, W]: each horizontal layer's input
        from the vertical stack, for each row (from the rows above it only)."""
        v = image * 2 - 1
        out = []
        for layer in self.layers:
            v, link = layer.vertical(v, labels)
            out.append(link)
        return torch.stack(out, dim=1)

    def horizontal(self, image, links, labels):
        """image rows [B, 1, R, W] and their links [B, layers, 2C, R, W] -> logits [B, levels, R, W]."""
        h = image * 2 - 1
        for i, layer in enumerate(self.layers):
            h = layer.horizontal(h, links[:, i], labels)
        return self.head(h)

    def forward(self, image, labels):
        return self.horizontal(image, self.links(image, labels), labels)

    def loss(self, images, labels):
        c = self.config
        targets = quantize(images, c.levels)
        x = targets.float() / (c.levels - 1)
        logits = self(x, labels)
        return F.cross_entropy(logits, targets[:, 0])   # nats per pixel


class Links(nn.Module):
    """The vertical-stack graph."""

    def __init__(self, model: PixelCNN):
        super().__init__()
        self.model = model

    def forward(self, image, labels):
        return self.model.links(image, labels)


class RowStep(nn.Module):
    """The horizontal-stack graph: one row (or several) given their links."""

    def __init__(self, model: PixelCNN):
        super().__init__()
        self.model = model

    def forward(self, row, links, labels):
        return self.model.horizontal(row, links, labels)


def build(config: Config) -> PixelCNN:
    return PixelCNN(config)


class Trainer(LikelihoodTrainer):
    """Adam with cosine decay; labels dropped to "no label" 10% of the time."""

    metric = "nats_per_pixel"
    label_dropout = LABEL_DROPOUT
