"""PixelCNN's export: the whole network (image -> per-pixel logits) and the two graphs of the fast
loop, links (the vertical stack) and row (the horizontal stack on one row), gated on held-out digits."""

from __future__ import annotations

import numpy as np
import torch

from ...export.spec import ExportSpec, GraphSpec, held_out_images, image_shape, mixed_labels
from ...package import TensorSpec
from ...training.checkpoint import Checkpoint
from . import model as pixelcnn
from .pipeline import PixelCNNConfig


def _quantized_images(ckpt, batch, rng, data):
    levels = ckpt.config.levels
    return (np.round(held_out_images(data, batch, rng) * (levels - 1)) / (levels - 1)).astype(np.float32)


def _pixelcnn_network_inputs(ckpt, batch, rng, data):
    return {"image": _quantized_images(ckpt, batch, rng, data), "labels": mixed_labels(ckpt, batch, rng)}


def _pixelcnn_links_inputs(ckpt, batch, rng, data):
    rows = int(rng.integers(2, ckpt.config.image_size + 1))  # the first rows, as the sampler crops them
    return {"image": np.ascontiguousarray(_quantized_images(ckpt, batch, rng, data)[:, :, :rows]),
            "labels": mixed_labels(ckpt, batch, rng)}


def _pixelcnn_row_inputs(ckpt, batch, rng, data):
    image, labels = _quantized_images(ckpt, batch, rng, data), mixed_labels(ckpt, batch, rng)
    r = int(rng.integers(0, ckpt.config.image_size))
    with torch.inference_mode():
        links = ckpt.model.links(torch.from_numpy(image), torch.from_numpy(labels))[:, :, :, r:r + 1]
    return {"row": np.ascontiguousarray(image[:, :, r:r + 1]), "links": np.ascontiguousarray(links.numpy()),
            "labels": labels}


def _pixelcnn_config(ckpt: Checkpoint) -> PixelCNNConfig:
    c = ckpt.config
    return PixelCNNConfig(image_shape=image_shape(c), levels=c.levels, num_classes=c.num_classes,
                          null_label=c.null_label, layers=c.layers, width=c.width, data=ckpt.data)


def _pixelcnn_image(c, rows="rows"):
    return TensorSpec("image", "float32", ("batch", 1, rows, c.image_size))


SPEC = ExportSpec(
    family="pixelcnn",
    graphs=(
        GraphSpec("network", lambda m: m,
                  lambda c: (_pixelcnn_image(c, c.image_size), TensorSpec("labels", "int64", ("batch",))),
                  ("logits",), _pixelcnn_network_inputs),
        GraphSpec("links", lambda m: pixelcnn.Links(m),
                  lambda c: (_pixelcnn_image(c), TensorSpec("labels", "int64", ("batch",))),
                  ("links",), _pixelcnn_links_inputs),
        GraphSpec("row", lambda m: pixelcnn.RowStep(m),
                  lambda c: (TensorSpec("row", "float32", ("batch", 1, 1, c.image_size)),
                             TensorSpec("links", "float32", ("batch", c.layers, 2 * c.width, 1, c.image_size)),
                             TensorSpec("labels", "int64", ("batch",))),
                  ("logits",), _pixelcnn_row_inputs),
    ),
    runtime_config=_pixelcnn_config,
)
