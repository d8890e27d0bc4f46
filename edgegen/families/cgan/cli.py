"""`edgegen generate` for class-conditional GAN packages: the grid, and the classes drawn where
--label was not given (a grid of random digits said nothing of which each was meant to be)."""

from __future__ import annotations

import numpy as np

from ...families import GenerateRequest

CLASSES_LISTED = 64   # a grid's drawn classes listed in its order up to this many; counted per class beyond


def generate(pipe, request: GenerateRequest) -> str:
    line = request.write_images(pipe(request.n, seed=request.seed, **request.options))
    if request.options.get("labels") is not None:
        return line
    return f"{line}; classes drawn: {drawn_said(pipe.drawn_labels(request.n, seed=request.seed), pipe.class_names)}"


def drawn_said(labels: np.ndarray, names: list[str] | None = None) -> str:
    """The classes in the grid's order (row by row), or for a large grid how many of each; by
    name where the classes have names (a folder's subfolders)."""
    said = (lambda c: names[c]) if names else str
    if len(labels) <= CLASSES_LISTED:
        return " ".join(map(said, labels.tolist())) + " (row by row)"
    classes, counts = np.unique(labels, return_counts=True)
    return ", ".join(f"{said(c)} x{k}" for c, k in zip(classes.tolist(), counts.tolist()))
