"""Declarative export specs: per family, which graphs, their inputs, realistic inputs for
the validation gate, tolerances, and the config the runtime needs. No per-model scripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ConfigError
from ..package import TensorSpec
from ..training.checkpoint import Checkpoint
from ..training.data import ImageData, load_images

TRACE_BATCH = 2   # the batch the exporter traces at (any dim of size 1 would be specialised)

# realistic_inputs(checkpoint, batch, rng, data) -> feeds for the graph, as numpy arrays.
InputMaker = Callable[[Checkpoint, int, np.random.Generator, "ImageData | None"], dict[str, np.ndarray]]


@dataclass(frozen=True)
class GraphSpec:
    part: str                                            # the graph's name in the package
    submodule: Callable[[torch.nn.Module], torch.nn.Module]
    inputs: Callable[[object], tuple[TensorSpec, ...]]   # from the family's Config; "batch" is dynamic
    outputs: tuple[str, ...] | Callable[[object], tuple[str, ...]]   # names, or from the Config
    realistic_inputs: InputMaker
    atol: float = 1e-4
    rtol: float = 1e-3
    # the exported ONNX model -> the one written: where the graph gets what the exporter cannot
    # trace (the GPT decoder's optional logits_to_keep, a data-dependent slice)
    rewrite: Callable | None = None
    # (module, session, traced example feeds, atol, rtol) -> more comparisons for the gate: the
    # rewritten graph's other behaviour checked against PyTorch too
    also_gate: Callable | None = None

    def output_names(self, config) -> tuple[str, ...]:
        return self.outputs(config) if callable(self.outputs) else self.outputs

    def feeds(self, ckpt: Checkpoint, batch: int, rng: np.random.Generator, data) -> dict[str, np.ndarray]:
        """realistic_inputs' feeds, refused unless they are the graph's inputs: named as its inputs
        (a family author's input function returning {"z": ...} for an input "codes" was a bare
        KeyError), of their dtypes and shapes (int32 labels were blamed on the exporter, after the
        trace), and none named as an output (ONNX's checker refused the graph after it)."""
        specs = self.inputs(ckpt.config)
        expected = [spec.name for spec in specs]
        if shared := sorted(set(expected) & set(self.output_names(ckpt.config))):
            raise ConfigError(f"graph {self.part!r}: expected outputs named apart from its inputs (ONNX gives each "
                              f"value one name), found {shared[0]!r} among both: name the output otherwise")
        feeds = self.realistic_inputs(ckpt, batch, rng, data)
        if not isinstance(feeds, dict) or sorted(feeds) != sorted(expected):
            found = sorted(feeds) if isinstance(feeds, dict) else f"a {type(feeds).__name__}"
            raise ConfigError(f"graph {self.part!r}: expected its realistic_inputs to return a feed of each input, "
                              f"{expected}, found {found}")
        for spec in specs:
            feed = feeds[spec.name]
            if not isinstance(feed, np.ndarray) or feed.dtype != np.dtype(spec.dtype) or not _fits(spec, feed.shape):
                found = (f"{feed.dtype}{list(feed.shape)}" if isinstance(feed, np.ndarray) else
                         f"a {type(feed).__name__}")
                raise ConfigError(f"graph {self.part!r}: expected its realistic_inputs to return input {spec.name!r} as "
                                  f"the spec declares it, {spec.describe()}, found {found}")
        return feeds


def _fits(spec: TensorSpec, shape: tuple[int, ...]) -> bool:
    """Whether `shape` has the spec's rank and its static sizes (a named dim takes any)."""
    return len(shape) == len(spec.shape) and all(isinstance(d, str) or d == n for d, n in zip(spec.shape, shape))


def training_images(ckpt: Checkpoint, source: str) -> ImageData:
    # the training seed: a folder's held-out split depends on it
    return load_images(source, image_size=ckpt.config.image_size, channels=ckpt.config.image_channels,
                       seed=ckpt.data.get("seed", 0))


@dataclass(frozen=True)
class ExportSpec:
    family: str
    graphs: tuple[GraphSpec, ...] = ()
    runtime_config: Callable[[Checkpoint], dict] | None = None
    needs_data: bool = True   # whether the gate's realistic inputs come from the training data
    # (checkpoint, data source) -> the data the gate draws from
    load_data: Callable[[Checkpoint, str], ImageData] = training_images
    # (package folder, runtime config, {part: GraphEntry}) -> files for other runtimes written
    # beside the graphs (a GPT package's genai_config.json for ONNX Runtime GenAI)
    companions: Callable[[Path, object, dict], None] | None = None
    # feeds of the gate's realistic inputs recorded in the package (config.held_out) for optimize to
    # calibrate and gate on: for imports, whose source is no checkpoint edgegen can draw from later
    recorded_feeds: int = 0
    # (checkpoint, scratch folder) -> (checkpoint, spec) of an import: a family that exports its trained
    # models through its import path (text2image: saved as a diffusers folder, imported from there);
    # graphs and runtime_config are then the import's. See export.exported_as.
    via_import: Callable[[Checkpoint, Path], tuple[Checkpoint, "ExportSpec"]] | None = None


def image_shape(config) -> list[int]:
    return [config.image_channels, config.image_size, config.image_size]


def held_out_images(data: ImageData | None, batch: int, rng: np.random.Generator) -> np.ndarray:
    return data.test[rng.choice(len(data.test), size=batch, replace=len(data.test) < batch)]


def held_out_image_inputs(ckpt, batch, rng, data):
    return {"image": held_out_images(data, batch, rng)}


def latent_inputs(ckpt, batch, rng, data):
    return {"z": rng.standard_normal((batch, ckpt.config.latent_dim)).astype(np.float32)}


def latent_image_config(config_class, ckpt: Checkpoint, **more):
    """The runtime config of an image family that samples from a latent vector."""
    return config_class(image_shape=image_shape(ckpt.config), latent_dim=ckpt.config.latent_dim, data=ckpt.data, **more)


def mixed_labels(ckpt, batch, rng):
    """Real class ids and the "no label" index, mixed."""
    return rng.integers(0, ckpt.config.num_classes + 1, size=batch).astype(np.int64)


