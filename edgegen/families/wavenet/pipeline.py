"""WaveNet packages: audio generation sample by sample, and the likelihood of a waveform.

Fast generation (Paine et al., 2016) runs the step graph once per sample: the new code in,
each causal convolution's queue of past inputs in and out. The queues live in two sets of
buffers allocated once per call and bound to the graph by address through two IO bindings
made up front, so a step binds nothing, copies nothing outside the graph, and costs the
same at the 16,000th sample as at the first. fast=False recomputes the full-sequence graph
over everything generated so far for every sample (quadratic; kept to check and measure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ...errors import InputError
from ...progress import Progress
from ...runtimes.audio import mu_law_decode, mu_law_encode
from ...runtimes.autoregressive import draw, log_softmax, sampler
from ...runtimes.ort import OrtBinding, OrtSession
from ...runtimes.pipeline import (Pipeline, as_float_array, check_callback, check_count, check_flag, check_progress,
                                  check_range, class_labels, class_problems, make_rng, user_array)
from .. import RuntimeConfig, dim_problems, positive

CALLBACK_EVERY = 1000   # samples between reports to the progress bar and the callback (1/8 s of audio at 8 kHz)
MAX_SECONDS = 600   # of audio per call: about ten minutes of sample-by-sample work here (~7,800 samples/s at 8 kHz)


@dataclass(kw_only=True)
class WaveNetConfig(RuntimeConfig):
    """The audio's rate and mu-law channels, the classes, and the step graph's queues."""
    sample_rate: int
    quantization: int
    residual_channels: int
    queue_lengths: list[int]
    receptive_field: int
    num_classes: int
    null_label: int
    data: dict = field(default_factory=dict)

    def problems(self) -> list[str]:
        problems = positive(self, "sample_rate", "residual_channels", "queue_lengths", "receptive_field")
        if self.quantization < 2:
            problems.append(f"quantization expected at least 2 mu-law channels, found {self.quantization}")
        if not problems and self.receptive_field != sum(self.queue_lengths) + 1:   # log_prob's windows overlap by it
            problems.append(f"receptive_field expected {sum(self.queue_lengths) + 1} (the queue_lengths' sum + 1), found "
                            f"{self.receptive_field}")
        problems += class_problems(self)
        return problems

    def graph_problems(self, graphs: dict) -> list[str]:
        """The logits have `quantization` channels; the step graph has a queue per
        queue_lengths entry, each that long."""
        step = graphs.get("step")
        states = sum(1 for t in step.inputs if t.name.startswith("state.")) if step else len(self.queue_lengths)
        if states != len(self.queue_lengths):
            return [f"queue_lengths {self.queue_lengths}: expected the step graph to take {len(self.queue_lengths)} "
                    f"queues, found {states}"]
        return dim_problems(graphs, [("network", "logits", 1, "quantization", self.quantization),
                                     ("step", "logits", 1, "quantization", self.quantization)]
                            + [("step", f"state.{i}", 2, f"queue_lengths[{i}]", n) for i, n in enumerate(self.queue_lengths)])


class WaveNetPipeline(Pipeline):
    family = "wavenet"
    stoppable = True   # callback= in its loops (docs/serving.md: a cancelled request stops)
    counts = "audio samples"

    def __call__(self, *args, **kwargs):
        return self.generate(*args, **kwargs)

    def __init__(self, package, sessions, config):
        super().__init__(package, sessions, config)
        self.sample_rate, self.quantization = config.sample_rate, config.quantization
        self.num_classes, self.null_label = config.num_classes, config.null_label
        self.queue_lengths, self.channels = list(config.queue_lengths), config.residual_channels
        self.silence = int(mu_law_encode(np.zeros(1), self.quantization)[0])

    def generate(self, num_samples: int, seed=None, labels=None, temperature: float = 1.0, fast: bool = True,
                 progress: bool | None = False, callback: Callable[[int, int], Any] | None = None) -> np.ndarray:
        """float32 waveform [num_samples] in [-1, 1] at the package's sample_rate."""
        return mu_law_decode(self.generate_codes(num_samples, seed, labels, temperature, fast, progress, callback),
                             self.quantization)

    def generate_codes(self, num_samples: int, seed=None, labels=None, temperature: float = 1.0,
                       fast: bool = True, progress: bool | None = False,
                       callback: Callable[[int, int], Any] | None = None) -> np.ndarray:
        """The mu-law codes [num_samples] that generate() decodes. progress: False silent (a library
        call's stderr may be a service's log), None for a second of audio or more (minutes of work) a
        bar on a terminal, in a log a line a minute and one at the end (edgegen generate), True a bar
        at any length. callback(done, total)
        is called every CALLBACK_EVERY samples and after the last: a service's progress, or an
        exception raised there stops the call (a client gone, a deadline)."""
        num_samples = check_count(num_samples, "num_samples", MAX_SECONDS * self.sample_rate,
                                  f"({MAX_SECONDS} s at {self.sample_rate} Hz) per call: each call starts from silence")
        fast = check_flag(fast, "fast")
        labels = class_labels(labels, 1, self.num_classes, self.null_label, "labels", names=self.class_names)
        progress = check_progress(progress)
        callback = check_callback(callback, "(done, total)")
        if not fast:
            return self._naive(num_samples, labels, sampler(temperature), make_rng(seed), callback)
        shown = progress if progress is True or num_samples >= self.sample_rate else False
        return self._fast(num_samples, labels, sampler(temperature), make_rng(seed), shown, callback)

    def log_prob(self, waveform, labels=None, per_sample: bool = False) -> np.ndarray | float:
        """Mean log-likelihood in nats per sample of a waveform [T] (a float) or a batch [n, T];
        per_sample=True: each sample's own log-likelihood given the ones before it ([T - 1] or
        [n, T - 1]; the first sample is the context)."""
        per_sample = check_flag(per_sample, "per_sample")
        audio = user_array(waveform, "waveform", "numbers shaped [T] or [n, T]")
        if audio.dtype.kind in "US":
            as_float_array(waveform, "waveform", (None, None))   # refuses it, naming the text as given
        if audio.ndim not in (1, 2):
            raise InputError(f"waveform: expected shape [T] or [n, T], found {list(audio.shape)}")
        single = audio.ndim == 1
        audio = check_range(as_float_array(audio[None] if single else audio, "waveform", (None, None)), "waveform",
                            -1, 1)   # mu-law clips beyond it
        if audio.shape[1] < 2:
            raise InputError(f"waveform: expected at least 2 samples, found {audio.shape[1]}")
        codes = mu_law_encode(audio, self.quantization)
        labels = class_labels(labels, len(codes), self.num_classes, self.null_label, "labels", names=self.class_names)
        each = self._log_probs(codes, labels)
        if per_sample:
            return each[0] if single else each
        return float(each[0].mean()) if single else each.mean(axis=1)

    def anomaly_score(self, waveform) -> np.ndarray | float:
        """Bits per sample of a waveform [T] (a float) or a batch [n, T], without labels (the
        marginal its label dropout learned): higher, less like the training audio. What `edgegen
        score` reads of a WAV file, as a PixelCNN's bits per pixel of a picture."""
        nats = self.log_prob(waveform)
        return -nats / math.log(2.0) if isinstance(nats, float) else (-nats / np.log(2.0)).astype(np.float32)

    def _log_probs(self, codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each code's log-probability given those before it, [n, T - 1], in windows of the
        network's calls: each window starts a receptive field early, so its outputs are the ones
        the whole waveform gives (the network is causal), and no call runs longer than the
        package's sample limit (what the export gated and TensorRT's profile is built to). The
        memory does not grow with the waveform's logits (a minute of audio took 4.5 GB whole)."""
        context = self.config.receptive_field
        inputs, targets = codes[:, :-1], codes[:, 1:]
        length = inputs.shape[1]
        window = max(1, self.sample_rate - context)   # outputs per call
        each = np.empty(targets.shape, np.float32)
        for start in range(0, length, window):
            first = max(0, start - context)
            chunk = np.ascontiguousarray(inputs[:, first:start + window])
            logits = self.sessions["network"].run_rows({"codes": chunk, "labels": labels})["logits"][:, :, start - first:]
            end = start + logits.shape[2]
            each[:, start:end] = np.take_along_axis(log_softmax(logits), targets[:, None, start:end], axis=1)[:, 0]
        return each

    def _naive(self, num_samples, labels, sampling, rng, callback=None) -> np.ndarray:
        network = self.sessions["network"]
        codes = np.empty((1, num_samples + 1), np.int64)
        codes[0, 0] = self.silence
        for t in range(num_samples):
            logits = network.run({"codes": codes[:, :t + 1], "labels": labels})["logits"][:, :, -1]
            codes[0, t + 1] = draw(logits, sampling, rng)[0]
            if callback is not None and t % CALLBACK_EVERY == CALLBACK_EVERY - 1:
                callback(t + 1, num_samples)
        if callback is not None and num_samples % CALLBACK_EVERY:   # the last samples, past a whole thousand
            callback(num_samples, num_samples)
        return codes[0, 1:]

    def _fast(self, num_samples, labels, sampling, rng, progress: bool | None = False, callback=None) -> np.ndarray:
        step = self.sessions["step"]
        if not isinstance(step, OrtSession):
            raise InputError(f"backend {self.backend!r}: fast generation needs an ONNX Runtime session (ort-cpu, ort-cuda, "
                             "ort-tensorrt; on TensorRT's own backend, fast=False runs without it)")
        queues = [[np.zeros((1, self.channels, n), np.float32) for n in self.queue_lengths] for _ in range(2)]
        code, logits = np.array([self.silence], np.int64), np.empty((1, self.quantization), np.float32)
        bindings = []
        for parity in range(2):   # step t reads set t % 2 and writes the other
            binding = OrtBinding(step)
            binding.input("code", code)
            binding.input("labels", labels)
            binding.output("logits", logits)
            for i, (src, dst) in enumerate(zip(queues[parity], queues[1 - parity])):
                binding.input(f"state.{i}", src)
                binding.output(f"next_state.{i}", dst)
            bindings.append(binding)
        out = np.empty(num_samples, np.int64)

        def report(done: int) -> None:   # the bar and the callback hear every CALLBACK_EVERY samples, to cost nothing
            bar.update(done - bar.count)
            if callback is not None:
                callback(done, num_samples)

        with Progress(num_samples, "generate", enabled=progress) as bar:
            for t in range(num_samples):
                bindings[t % 2].run()
                out[t] = code[0] = draw(logits, sampling, rng)[0]
                if t % CALLBACK_EVERY == CALLBACK_EVERY - 1:
                    report(t + 1)
            if num_samples % CALLBACK_EVERY:   # the last samples, past a whole thousand
                report(num_samples)
        return out
