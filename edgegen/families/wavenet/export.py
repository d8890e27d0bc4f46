"""WaveNet's export: the full-sequence network and the step graph of fast generation (each layer's
queue as state in and out), gated on held-out audio and on queues PyTorch stepped through it."""

from __future__ import annotations

import numpy as np
import torch

from ...export.spec import ExportSpec, GraphSpec, mixed_labels
from ...package import TensorSpec
from ...training.checkpoint import Checkpoint
from ...training.common import torch_threads
from . import model as wavenet
from .pipeline import WaveNetConfig


def _wavenet_data(ckpt: Checkpoint, source: str):
    c = ckpt.config
    options = {"sample_rate": c.sample_rate, "train_samples": c.train_samples, "quantization": c.quantization}
    data, _ = wavenet.prepare_data(source, 0, None, ckpt.data.get("seed", 0), options)
    return data


def _held_out_codes(data, batch, rng, length):
    rows = data.test[rng.choice(len(data.test), size=batch, replace=len(data.test) < batch)]
    start = int(rng.integers(0, rows.shape[1] - length + 1))
    return np.ascontiguousarray(rows[:, start:start + length])


def _wavenet_network_inputs(ckpt, batch, rng, data):
    length = int(rng.integers(200, min(800, data.test.shape[1]) + 1))
    return {"codes": _held_out_codes(data, batch, rng, length), "labels": mixed_labels(ckpt, batch, rng)}


def _wavenet_step_inputs(ckpt, batch, rng, data):
    """The queues after PyTorch has stepped through a held-out prefix, and the next code."""
    t = int(rng.integers(20, min(600, data.test.shape[1] - 1)))
    codes, labels = _held_out_codes(data, batch, rng, t + 1), mixed_labels(ckpt, batch, rng)
    model = ckpt.model
    # one thread: a step's convolutions are a few microseconds of work, which a second thread only
    # waits on; the gate's thousands of steps took 4-10x longer on 2 threads of a busy 2-core machine
    with torch.inference_mode(), torch_threads(1):
        queues, labels_t = model.empty_queues(batch), torch.from_numpy(labels)
        for i in range(t):
            queues = model.step(torch.from_numpy(codes[:, i]), labels_t, *queues)[1:]
    return {"code": np.ascontiguousarray(codes[:, t]), "labels": labels,
            **{f"state.{i}": q.numpy() for i, q in enumerate(queues)}}


def _wavenet_step_specs(c) -> tuple[TensorSpec, ...]:
    return (TensorSpec("code", "int64", ("batch",)), TensorSpec("labels", "int64", ("batch",)),
            *(TensorSpec(f"state.{i}", "float32", ("batch", c.residual_channels, n)) for i, n in enumerate(c.queue_lengths)))


def _wavenet_config(ckpt: Checkpoint) -> WaveNetConfig:
    c = ckpt.config
    return WaveNetConfig(sample_rate=c.sample_rate, quantization=c.quantization, num_classes=c.num_classes,
                         null_label=c.null_label, residual_channels=c.residual_channels,
                         queue_lengths=list(c.queue_lengths), receptive_field=c.receptive_field, data=ckpt.data)


SPEC = ExportSpec(
    family="wavenet",
    graphs=(
        GraphSpec("network", lambda m: m,
                  lambda c: (TensorSpec("codes", "int64", ("batch", "samples")), TensorSpec("labels", "int64", ("batch",))),
                  ("logits",), _wavenet_network_inputs),
        GraphSpec("step", lambda m: wavenet.Step(m), _wavenet_step_specs,
                  lambda c: ("logits", *(f"next_state.{i}" for i in range(len(c.queue_lengths)))), _wavenet_step_inputs),
    ),
    runtime_config=_wavenet_config,
    load_data=_wavenet_data,
)
