"""`edgegen optimize`: int8 and fp16 variants of a package's graphs, each behind a quality gate.

int8: static quantization in explicit Q/DQ form, per-channel symmetric weights, symmetric
activations (zero points 0, the form TensorRT consumes too), activation ranges calibrated
on real inputs made by the family's export spec from its dataset; Conv, MatMul and Gemm
(with the Resize and Relu between them) are quantized, everything else stays float, and so
do the first and the last weighted layer. fp16: weights and activations in half precision
with fp32 inputs and outputs, normalization, softmax and attention kept in fp32. int4 and
int8-weights (token models): block-wise symmetric quantization of the weights of every MatMul
with a constant weight (GPT-2's Gemms made MatMul + Add, a tied output head's Transpose folded into
a transposed copy first: weight_matmul_form), activations in float, in
ONNX Runtime's MatMulNBits op, or for a TensorRT target as DequantizeLinear of int4 blocks
feeding a float MatMul (the standard form TensorRT's parser takes). Where int4 on every MatMul
loses fp32's predictions, the MatMuls whose 4 bits cost the most are kept at 8 bits (float for
TensorRT), found on held-out windows apart from the gate's (int4_spared).

A variant is compared with the fp32 graph on held-out inputs the calibration never saw:
PSNR for images, audio and other float outputs; top-1 agreement and cosine similarity for
token logits, and for the weight-only variants perplexity within 5% of fp32's on held-out
text. Below the threshold it is not written, and the manifest records why. For the
ort-cpu target a variant is also kept only where it pays: at least 5% faster than fp32 here
at batch 8, or at the family's typical call where it declares one (measured side by side); for
a TensorRT target (tensorrt, jetpack6, jetpack7) every variant that passes.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime

from .errors import ConfigError, DataError, EdgegenWarning, InputError, PackageError, first_line, not_one_of
from .families import families, package_config
from .families import get as get_family
from .package import VARIANT_FILE, VARIANT_PRECISIONS, Package, spared_text, write_manifest
from .progress import Progress
from .storage import atomic_write_bytes, check_files_writable_in, clean_temporaries, fault_point, writer_lock
from .shipped import shared_package_of
from .targets import INT4_OPSET, TARGETS, get_target
from .runtimes import SLOWER   # load warns of a variant slower than fp32 below it

MIN_PSNR_DB = {"int8": 30.0, "fp16": 40.0, "fused": 60.0}
MIN_TOP1, MIN_COSINE = 0.95, 0.995
GATE_BATCHES, BATCH = 4, 8
MIN_SPEEDUP = 1.05        # "where it pays" on ort-cpu
# a first timing this near MIN_SPEEDUP is noise's to decide (runs of one graph differ by a few
# percent here): the verdict is timed again, VERDICT_ROUNDS rounds instead of 5, and that decides
VERDICT_MARGIN, VERDICT_ROUNDS = 0.05, 15
WEIGHT_ONLY_BITS = {"int4": 4, "int8-weights": 8}
# MatMulNBits' compute: 4 quantizes each block of activations to int8 inside the op (the graph's
# activations stay float), as onnxruntime-genai's builder does for CPU. Measured on a 124M Llama's
# decode step, 2 threads, against fp32: int4 3.8x with it, 2.4x without; int8 weights 2.7x with it,
# 0.19x without (its float path dequantizes every weight on every call).
MATMULNBITS_ACCURACY_LEVEL = 4
DEFAULT_CALIBRATION = 64   # inputs drawn from a checkpoint's data to calibrate int8 on
# calibration inputs at most: the activation ranges settle within a few hundred, and every input
# is held in memory (a huge count was killed for memory, with no edgegen error)
MAX_CALIBRATION = 4096
MAX_BLOCK_SIZE = 256   # the largest block ONNX Runtime's blockwise quantizer (MLAS) takes
MIN_BLOCK_SIZE = 16
DEFAULT_BLOCK_SIZE = 32
# int4's fallback (int4_spared): the largest share of the MatMul weights (by element) that may
# stay at 8 bits; at 0.5 the variant's MatMul weights take at most about 78% of int8-weights'
# bytes on ONNX Runtime (5 against 9 bits per weight: a float scale per block of 32). For
# TensorRT the kept weights stay float. 0: every weight at 4 bits.
DEFAULT_MAX_8BIT_SHARE = 0.5
# The search judges on its own windows and stops this far above the top-1 bar, since the gate's
# windows are others: on gpt-stdlib one variant scored up to 0.015 apart on the two sets of 32.
SEARCH_MARGIN = 0.01
MAX_PERPLEXITY_RATIO = 1.05   # a weight-only variant's held-out perplexity over fp32's
# a flow variant's p99 |log p - fp32's| on held-out inputs over the spread (std) of fp32's log p
# there: int8 of flow-digits' density graph passed PSNR at 33 dB with 0.60 (up to 29 nats off,
# anomaly ranks moved), fp16 0.02
MAX_LOG_DENSITY_ERROR = 0.05
# a sampling model's variant (WaveNet's, PixelCNN's logits over codes and grey levels): the mean
# KL divergence of its predicted distributions from fp32's, in nats, is the rise in the negative
# log-likelihood of data distributed as fp32 predicts, so exp(KL) is the perplexity ratio a
# weight-only token variant is held to (MAX_PERPLEXITY_RATIO). PSNR of the logits missed it:
# wavenet-tones' int8 network passed at 51 dB with KL 0.086 on the gate's held-out windows
MAX_KL_NATS = 0.0488   # log(1.05)
# an output that is a base the graph computes from its input plus what the model learned (SR's
# bilinear upscale plus its correction): the energy of fp32's departure from the base over the
# variant's error from fp32, in dB. PSNR of the whole output missed a variant that dropped the
# learned part: the bilinear upscale alone scored 32 dB against the shipped x4's fp32 (helper
# 128); its real int8 keeps the detail at 25 dB, fp16 on a small x2 at 33
MIN_DETAIL_DB = {"int8": 15.0, "fp16": 25.0, "fused": 45.0}
FP32_KEPT = ["LayerNormalization", "Softmax", "BatchNormalization", "GroupNormalization", "InstanceNormalization",
             "Attention", "ReduceMean", "Pow", "Sqrt", "Exp", "Log"]
INT8_OPS = ["Conv", "MatMul", "Gemm", "Resize", "Relu"]
# ONNX Runtime 1.32's Q/DQ propagation, run on these opset-23 graphs, writes QuantizeLinear
# nodes whose int8 output type and uint8 zero point disagree (the session then fails to
# load); without it the variants load and, measured here, run faster. The manifest records
# it with the variant, and the runtime opens the variant the same way.
INT8_DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)
# ONNX Runtime's NCHWc layout transformer (x86-64) dereferences a null operator on some
# Transpose -> Cast(fp16 -> fp32) -> MatMul chains that casts around an op without an fp16 CPU
# kernel make (a GRU step's fp16 graph: microsoft/onnxruntime#28392): the process dies opening it,
# in optimize's gate and in the runtime. An fp16 variant that does so in a child process opens
# without it (recorded, as int8's is); the others keep it: without it a conv net's fp16 graph ran
# 1.3x-1.7x slower on CPU (GAN, diffusion UNet, super-resolution: benchmarks/fp16_layout.py).
FP16_DISABLED_OPTIMIZERS = ("NchwcTransformer",)
# TensorRT's int8 sums in 32 bits; a CPU without VNNI does not (int8_sums_saturate). A TensorRT
# target's int8 gate, run here on ONNX Runtime's CPU provider, computes the Q/DQ nodes as written
# (dequantized, in float) instead of fusing them into the CPU's int8 kernels: its figure is the
# target's, whatever CPU it was made on.
EXACT_QDQ_OPTIMIZERS = ("QDQSelectorActionTransformer",)
_WEIGHTED = ("Conv", "MatMul", "Gemm", "ConvTranspose")


@dataclass
class GateResult:
    metric: str
    value: float
    threshold: float
    passed: bool
    detail: dict

    def line(self) -> str:
        """The metric against its threshold, and the gate's other conditions where they are the ones that failed
        or (perplexity) always."""
        text = f"{self.metric} {self.value:.4g} {'>=' if self.value >= self.threshold else '<'} {self.threshold:g}"
        if self.value < self.threshold:   # beside the figure it is of, not after the conditions that follow
            text += f" (missed by {self.threshold - self.value:.3g})"
        cosine, least = self.detail.get("cosine"), self.detail.get("min_cosine")
        if least is not None and cosine < least:
            text += f", cosine {cosine:.4g} < {least:g}"
        ratio, most = self.detail.get("perplexity_ratio"), self.detail.get("max_perplexity_ratio")
        if most is not None:
            text += f", perplexity {ratio:.4g}x fp32's {'<=' if ratio <= most else '>'} {most:g}x"
        divergence, most = self.detail.get("kl_nats"), self.detail.get("max_kl_nats")
        if most is not None:   # exp(KL): the perplexity ratio on data distributed as fp32 predicts
            text += f", KL from fp32's predictions {divergence:.3g} nats {'<=' if divergence <= most else '>'} {most:g}"
        kept, least = self.detail.get("detail_db"), self.detail.get("min_detail_db")
        if least is not None:   # what the model adds to its base output, kept (SR's correction of its bilinear upscale)
            text += f", learned detail kept at {kept:.3g} dB {'>=' if kept >= least else '<'} {least:g}"
        error, most = self.detail.get("log_density_error"), self.detail.get("max_log_density_error")
        if most is not None:
            text += f", log-density error {error:.3g} of its spread {'<=' if error <= most else '>'} {most:g}"
        agreement, least = self.detail.get("agreement"), self.detail.get("min_agreement")
        if least is not None:   # id outputs beside float ones
            text += "".join(f", {name} agreement {a:.4g} {'>=' if a >= least else '<'} {least:g}" for name, a in agreement.items())
        return text


def optimize_package(path: str | os.PathLike, precision: str, calibration: int | None = None, target: str = "ort-cpu",
                     checkpoint: str | os.PathLike | None = None, seed: int = 0, gate_threshold: float | None = None,
                     progress=print, inputs: str | os.PathLike | None = None, bar: bool | None = False,
                     block_size: int = DEFAULT_BLOCK_SIZE, max_8bit_share: float = DEFAULT_MAX_8BIT_SHARE,
                     speed_check: bool = True) -> dict:
    """Add a `precision` variant of each graph of the package that passes its gate; returns this
    run's {part: record}. The manifest's `variants` take them, except where a graph's new variant
    was refused and one written before is there: that one stays, with the refusal beside it
    (`last_refused`), since a failed attempt must not take away what the user had.

    The calibration and gate inputs come from the family's export spec over the checkpoint's
    data (`calibration` inputs, DEFAULT_CALIBRATION where None); for a family without a training side (a user's own module) from `inputs` (an .npz
    of feeds) or from the held-out inputs the export recorded: the first half of the feeds
    calibrates, the second half, never seen by the calibration, gates. A token package imported
    from transformers (no training record, no checkpoint given) is calibrated, gated and timed (at
    a decode step) on the family's held-out text instead, and so are the weight-only precisions
    (int4, int8-weights; `block_size` weights per scale) of any token package, which need no calibration.
    int4 where 4 bits everywhere lose fp32's predictions keeps the MatMuls that cost the most at 8 bits,
    up to `max_8bit_share` of the MatMul weights by element (int4_spared), found on held-out windows
    apart from the gate's.
    For an ONNX Runtime target each variant also takes the family's ort_form where it has one.
    speed_check=False: no timing, so every variant that passes its gate is kept, on ort-cpu too (the
    same variants every run, where a shared machine's timings would decide otherwise run to run).
    bar: a progress bar per graph (None: on a terminal only)."""

    if precision not in VARIANT_PRECISIONS:
        raise ConfigError(not_one_of("precision", precision, VARIANT_PRECISIONS))
    if precision not in get_target(target).variant_precisions:
        takers = " or ".join(t.name for t in TARGETS.values() if t.uses_tensorrt and "int4" in t.variant_precisions)
        # not "take another target": on JetPack 6's device an opset-21 variant is refused as well
        int4 = f"; int4's blocks need opset {INT4_OPSET}, above what it parses: int4 is for --target {takers}, " \
               f"and on {target} int8 or fp16 are" if precision == "int4" else ""
        raise ConfigError(not_one_of("precision", precision, get_target(target).variant_precisions,
                                     f"those the {target} target takes; fused and int8-weights are ONNX Runtime's own "
                                     f"contrib ops, which TensorRT does not read{int4}", known=VARIANT_PRECISIONS))
    drawn = DEFAULT_CALIBRATION if calibration is None else calibration   # inputs drawn to calibrate on
    _check_settings(precision, drawn, block_size, max_8bit_share, gate_threshold, checkpoint, inputs)
    if not isinstance(speed_check, bool):
        raise ConfigError(f"speed_check (--no-speed-check): expected True or False, found {speed_check!r}")
    if speed_check:
        from .bench import settle_seconds

        settle_seconds()   # its timings pause as bench's do: a mistyped EDGEGEN_BENCH_SETTLE_S before calibrating
    with _onnxruntime_errors_only():
        given = Package(path)   # a missing or broken package is refused before waiting for its lock
        if (shipped := shared_package_of(given.path)) is not None:   # given by its path (list and info print it)
            raise ConfigError(f"package {str(path)!r}: expected a package directory to write variants into, found the "
                              f"package of the shipped model {shipped!r}, which every use of the name shares: optimize "
                              f"a copy (cp -r {given.path} pkg-{shipped}, then edgegen optimize pkg-{shipped} ...)")
        check_files_writable_in(given.path, "package")   # a read-only one before the work, not at its end
        _refuse_opset_beyond_target(given, get_target(target))
        if precision == "fused" and get_family(given.family).fusion is None:   # before anything is written
            fusable = ", ".join(f.name for f in families() if f.fusion) or "none"
            raise ConfigError(f"precision 'fused': expected a package of a transformer family ({fusable}), found a "
                              f"{given.family} package")
        with writer_lock(path, f"optimize --precision {precision}"):
            package = Package(path)   # as the last writer left it
            _clean(package)
            family, config = package_config(package)
            speed_calls = {}
            if precision in WEIGHT_ONLY_BITS:
                # int4's search for the MatMuls to keep at 8 bits judges on windows of its own
                searched = precision == "int4" and max_8bit_share > 0
                feeds, speed_calls = _held_out_feeds(package, family, config, seed, GATE_BATCHES if searched else 0)
            elif inputs is not None or family.model is None or getattr(config, "held_out", None) is not None:
                # no checkpoint to draw from: the user's inputs, or those the export recorded
                _refuse_settings_of_drawn_feeds(checkpoint, calibration, inputs)
                feeds = _given_feeds(package, family, config, inputs)
            elif family.held_out_tokens is not None and checkpoint is None and not package.manifest.provenance.get("training"):
                # a token package imported from transformers (nothing trained it here): no edgegen
                # checkpoint to draw from, its held-out text
                feeds, speed_calls = _held_out_feeds(package, family, config, seed,
                                                     drawn // BATCH if precision == "int8" else 0)
            else:
                feeds = _spec_feeds(package, checkpoint, drawn, seed)
            damaged = package.damaged_variants.get(precision, {})   # replaced, never kept beside a refusal
            records, earlier = {}, {p: r for p, r in package.variant_files(precision).items() if p not in damaged}
            with Progress(len(feeds), f"optimize {precision}", enabled=bar) as shown:
                for part, (calibration_feeds, gate_feeds, source) in feeds.items():
                    shown.update(0, info=f"{part}: converting, gating" + (" and timing" if speed_check else ""))
                    records[part] = _variant(package, part, precision, target, calibration_feeds, gate_feeds, gate_threshold, source,
                                             block_size, speed_calls.get(part), max_8bit_share,
                                             lambda text, part=part: shown.update(0, info=f"{part}: {text}"), speed_check)
                    r = records[part]
                    shown.update(1, info=f"{part} {'written' if 'file' in r else 'refused'}")
                    spared = f", {spared_text(r)}" if r.get("spared_matmuls") else ""
                    stays = f"; the {precision} variant written before stays ({earlier[part]['file']})" if part in earlier else ""
                    before = earlier.get(part, {}).get("target")
                    replaces = f"; it replaces the one made for {before}" if before not in (None, target) else ""
                    speed = f", {r['speedup_ort_cpu']:.2f}x fp32's speed on ort-cpu" if "speedup_ort_cpu" in r else \
                        ", its speed not checked"
                    progress(f"{part}: {precision} " + (f"written for {target} ({r['gate']['line']}{spared}{speed}){replaces}"
                                                         if "file" in r else f"not written: {r['refused']}{stays}"))
            _record(package, precision, {part: _kept_or_new(earlier.get(part), r) for part, r in records.items()})
        return records


ONNXRUNTIME_ERRORS = 3             # ONNX Runtime's logger severities: errors and worse
ONNXRUNTIME_DEFAULT_SEVERITY = 2   # warnings and worse, its default logger's until a program sets another


@contextlib.contextmanager
def _onnxruntime_errors_only():
    """ONNX Runtime's default logger at errors for an optimize run: the quantizers and the gate open
    sessions of their own, at that level, whose warnings about the graphs (an initializer that is
    also an input: the GPT decoder's logits_to_keep) are for ONNX Runtime's developers, not the user;
    errors still show, and raise. ONNX Runtime has no getter for the level, so its own default,
    warnings, is set back after, rather than leaving a caller's process muted."""
    onnxruntime.set_default_logger_severity(ONNXRUNTIME_ERRORS)
    try:
        yield
    finally:
        onnxruntime.set_default_logger_severity(ONNXRUNTIME_DEFAULT_SEVERITY)


def _check_settings(precision: str, calibration, block_size, max_8bit_share, gate_threshold, checkpoint, inputs) -> None:
    """optimize_package's settings, each named as the API and the command line name it."""
    if (isinstance(calibration, bool) or not isinstance(calibration, int) or not BATCH <= calibration <= MAX_CALIBRATION
            or calibration % BATCH):
        raise ConfigError(f"calibration (--calibration): expected {BATCH} to {MAX_CALIBRATION} inputs, a multiple of "
                          f"{BATCH} (they are run in batches of {BATCH}), found {calibration!r}")
    if (isinstance(block_size, bool) or not isinstance(block_size, int)
            or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE or block_size & (block_size - 1)):
        raise ConfigError(f"block_size (--block-size): expected a power of 2 from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE} "
                          f"(MatMulNBits' blocks), found {block_size!r}")
    if isinstance(max_8bit_share, bool) or not isinstance(max_8bit_share, (int, float)) or not 0 <= max_8bit_share <= 1:
        raise ConfigError(f"max_8bit_share (--max-8bit-share): expected a fraction of the MatMul weights from 0 to 1, "
                          f"found {max_8bit_share!r}")
    if gate_threshold is not None and (isinstance(gate_threshold, bool) or not isinstance(gate_threshold, (int, float))
                                       or not math.isfinite(gate_threshold)):
        raise ConfigError(f"gate_threshold: expected a finite number or None (the precision's own), found {gate_threshold!r}")
    if precision in WEIGHT_ONLY_BITS:   # gated on the family's held-out text, from the package alone
        given = [name for name, value in (("--checkpoint", checkpoint), ("--inputs", inputs)) if value is not None]
        if given:
            raise ConfigError(f"{' and '.join(given)}: expected none with --precision {precision}, whose variants are "
                              f"gated on the family's held-out text from the package alone, found {' and '.join(given)} given")


def _refuse_opset_beyond_target(package: Package, target) -> None:
    """Variants keep their graph's opset and ops: for a target whose parser stops below the
    package's opset (JetPack 6's TensorRT 10.3 and opset 23), or lacks a fused op of it (JetPack
    7.0's TensorRT 10.13 and Attention), every one would be written and then refused by `check`.
    Refused first, saying how to export for it."""
    from .check import graphs_beyond_target

    if target.uses_tensorrt and (why := graphs_beyond_target(package, target)):
        raise ConfigError(why)


def _kept_or_new(earlier: dict | None, new: dict) -> dict:
    """A graph's manifest record after this run: the new one, unless it was refused where a variant
    written before is there, which stays, noting the refusal."""
    if "file" in new or earlier is None:
        return new
    return {**{k: v for k, v in earlier.items() if k != "last_refused"},
            "last_refused": {"refused": new["refused"], "target": new["target"]}}


def _spec_feeds(package: Package, checkpoint, calibration: int, seed: int) -> dict:
    """{part: (calibration feeds, gate feeds, data source)} made by the family's export spec from
    the data the export gated on: what its --data gave, else the checkpoint's own."""
    from .export import exported_as
    from .training.checkpoint import load_source_checkpoint

    given = package.manifest.provenance.get("source_checkpoint", {}).get("data")   # export's --data
    with exported_as(load_source_checkpoint(package, checkpoint)) as (ckpt, spec):
        # the data read, as recorded: an earlier edgegen's relative path read from here, whole
        if given and spec.needs_data and os.path.isabs(given) and not os.path.exists(given):   # moved since export
            raise DataError(f"data {given!r}: expected the data export gated package {str(package.path)!r} on (its "
                            "--data), found nothing at that path (moved or deleted?): export it again with --data "
                            "at its new place, or give optimize feeds with --inputs")
        source = given or (ckpt.trained_data() if spec.needs_data else ckpt.data.get("source"))
        data = spec.load_data(ckpt, source) if spec.needs_data else None
        calibration_data, gate_data = _split_held_out(data, source)
        feeds = {}
        for graph in spec.graphs:
            rng = np.random.default_rng(seed)
            make = lambda n, d: [graph.feeds(ckpt, BATCH, rng, d) for _ in range(n)]  # noqa: E731
            feeds[graph.part] = (make(calibration // BATCH, calibration_data), make(GATE_BATCHES, gate_data), source)
        return feeds


def _split_held_out(data, source=None):
    """(calibration data, gate data): the held-out rows split in two halves, so that the gate judges a
    variant on inputs its calibration never saw (drawn from the same rows, a calibrated range would fit
    the very images it is judged on). A set of one row is left whole for both, and said."""
    if data is not None and len(data.test) == 1:
        warnings.warn(f"data {source!r}: expected 2 or more held-out pictures (calibration's and the gate's apart), "
                      "found 1: the gate judges the picture the variant was calibrated on, and may pass what others "
                      "would fail (a folder holds out a tenth of its pictures: give it 15 or more)", EdgegenWarning,
                      stacklevel=2)
    if data is None or len(data.test) < 2:
        return data, data
    half = len(data.test) // 2
    halves = []
    for rows in (slice(None, half), slice(half, None)):
        part = copy.copy(data)
        part.test = data.test[rows]
        if getattr(data, "test_labels", None) is not None:
            part.test_labels = data.test_labels[rows]
        halves.append(part)
    return tuple(halves)


def _held_out_feeds(package: Package, family, config, seed: int, calibration_batches: int = 0) -> tuple[dict, dict]:
    """{part: (calibration feeds, gate feeds, source)} from the family's held-out text, for a token
    model with no checkpoint needed (weight-only variants of any package; every precision of an
    imported one), and {part: (feed, description)} of the call its speed is judged at (a decode
    step). The calibration windows (`calibration_batches` batches) overlap none of the gate's."""
    if family.held_out_tokens is None:
        token_families = ", ".join(f.name for f in families() if f.held_out_tokens) or "none"
        raise ConfigError(f"weight-only precisions: expected a token model ({token_families}), found a {family.name} "
                          "package (int8 and fp16 serve the others)")
    windows, source, speed_feed, call = family.held_out_tokens(package, config, GATE_BATCHES, seed,
                                                               extra=calibration_batches)
    gate_feeds, calibration_feeds = windows[:GATE_BATCHES], windows[GATE_BATCHES:]
    return ({part: (calibration_feeds, gate_feeds, source) for part in package.graphs},
            {part: (speed_feed, call) for part in package.graphs})


def _refuse_settings_of_drawn_feeds(checkpoint, calibration: int | None, inputs) -> None:
    """`checkpoint` and `calibration` choose inputs drawn from a checkpoint's data; where the feeds
    are given whole they would be ignored without a word, so they are refused."""
    given = {name: value for name, value in (("checkpoint", checkpoint), ("calibration", calibration))
             if value is not None}
    if given:
        whose = f"--inputs {str(inputs)!r}" if inputs is not None else "the held-out inputs the export recorded"
        said = [f"{name} {value}" if name == "calibration" else f"{name} {str(value)!r}"   # a count; a path
                for name, value in given.items()]
        raise ConfigError(f"{' and '.join(f'{name} (--{name})' for name in given)}: expected none where the feeds are "
                          f"given whole ({whose}: their first half calibrates, the second gates), found "
                          f"{', '.join(said)}")


def _given_feeds(package: Package, family, config, inputs) -> dict:
    """{part: (calibration feeds, gate feeds, source)} from an .npz of feeds or the recorded ones."""
    from .families.generic.export import embedding_rows
    from .families.generic.pipeline import refuse_indices_past_their_tables
    from .runtimes.feeds import read_feeds, recorded_feeds
    from .runtimes.pipeline import check_finite, input_array
    from .runtimes.session import check_feeds

    if inputs is not None:
        # recorded whole: a relative path names nothing once read from another folder
        feeds, source = read_feeds(inputs), str(Path(inputs).resolve())
    elif getattr(config, "held_out", None) is not None:
        feeds, source = recorded_feeds(package, config), "held-out inputs recorded at export"
    else:
        raise ConfigError(f"package {str(package.path)!r}: expected --inputs (an .npz of feeds) for a {family.name} "
                          "package, which has no checkpoint to draw inputs from, found none")
    if len(feeds) < 2:
        raise ConfigError(f"inputs ({source}): expected at least 2 feeds (half calibrate, half gate), found {len(feeds)} "
                          "(an .npz holds several as keys 0/NAME, 1/NAME, ...; docs/bring-your-own-model.md)")
    half = len(feeds) // 2
    out = {}
    for part, entry in package.graphs.items():
        names = [s.name for s in entry.inputs]
        # the rows of the embedding tables an input indexes (a class embedding), read from the graph: a family's too
        tables = {**embedding_rows(onnx.load(str(package.graph_path(part)), load_external_data=False)),
                  **(getattr(config, "index_limits", None) or {})}
        for i, feed in enumerate(feeds):
            if missing := [n for n in names if n not in feed]:
                raise ConfigError(f"inputs ({source}): expected the inputs of graph {part!r}, {names}, in every feed, found "
                                  f"feed {i} holding {sorted(feed)}, without {missing}")
            for name in names:   # the gate would blame the variant for the NaN it was given
                if feed[name].dtype.kind == "f":
                    check_finite(feed[name], f"inputs ({source}) feed {i} input {name!r}")
        picked = []
        for i, feed in enumerate(feeds):   # for every precision: int8's calibration met them as ONNX Runtime's error
            try:   # cast as the runtime casts a call's arrays (float64 -> float32), then checked against the graph
                picked.append({spec.name: input_array(feed[spec.name], spec) for spec in entry.inputs})
                check_feeds(part, entry.inputs, picked[-1])
                _refuse_sizes_the_package_refuses(entry.inputs, picked[-1], family, config)
                # an embedding index out of its table: refused as a call is (ONNX Runtime's Gather error,
                # blamed on the conversion, or a negative one judged as the row it counts from the end)
                refuse_indices_past_their_tables(tables, picked[-1])
            except InputError as exc:
                raise ConfigError(f"inputs ({source}) feed {i}: {exc}") from None
        _refuse_one_input_throughout(picked[half:], entry.inputs, f"inputs ({source}) feeds {half} to {len(feeds) - 1}")
        out[part] = (picked[:half], picked[half:], source)
    return out


def _refuse_one_input_throughout(gate: list[dict], specs, where: str) -> None:
    """Gate feeds whose every row is the same input (an .npz of zeros): the gate judges a variant
    at that one point (an int8 GAN passed at 54.7 dB on zeros, 13.6 dB on real latents) and its
    verdict replaces a variant judged on real inputs."""
    def rows(feed: dict, spec) -> list:
        value = feed[spec.name]
        return list(value) if spec.shape and spec.shape[0] == "batch" else [value]

    for spec in specs:
        everyone = [row for feed in gate for row in rows(feed, spec)]
        if len(everyone) < 2 or any(row.shape != everyone[0].shape or not np.array_equal(row, everyone[0]) for row in everyone[1:]):
            return
    raise ConfigError(f"{where}: expected gate inputs that differ (the gate compares the variant with fp32 on "
                      f"them), found every row of every input the same, so a variant would be judged at one input "
                      f"alone: give inputs drawn as the model meets them")


def _inputs_in(feeds: list[dict], specs) -> int:
    """The inputs `feeds` hold: the rows of a leading batch dim (BATCH each of edgegen's own draws,
    whatever an --inputs file or a user's module's recorded feeds hold), else one a feed (a leading
    dim of points or tokens counts no inputs)."""
    batched = next((spec.name for spec in specs if spec.shape and spec.shape[0] == "batch"), None)
    return sum(len(feed[batched]) for feed in feeds) if batched else len(feeds)


def _refuse_sizes_the_package_refuses(specs, feed: dict, family, config) -> None:
    """A dim outside [its least, its limit], or off its step (a user's module: the sizes its export
    checked): the runtime refuses such a call, so a variant calibrated or gated there is judged on
    inputs it never runs. The batch past its limit is taken, as the runtime takes it."""
    from .package import least_size, sizes_missed

    limits, minimums, steps = family.limits(config), family.minimums(config), family.multiples(config)
    for spec in specs:
        for dim, size in zip(spec.shape, feed[spec.name].shape):
            if not isinstance(dim, str) or dim == "batch" or dim not in limits:
                continue
            if wanted := sizes_missed(dim, size, least_size(dim, minimums), limits[dim], steps.get(dim, 1)):
                raise InputError(f"input {spec.name!r}: expected {wanted}, the sizes the package takes, found {size}")


def _variant(package, part, precision, target, calibration_feeds, gate_feeds, gate_threshold, source,
             block_size: int = DEFAULT_BLOCK_SIZE, speed_call: tuple[dict, str] | None = None,
             max_8bit_share: float = DEFAULT_MAX_8BIT_SHARE, note=lambda text: None, speed_check: bool = True) -> dict:
    from .runtimes.ort import OrtSession, int8_sums_saturate

    entry = package.graphs[part]
    model = onnx.load(str(package.graph_path(part)))
    for_tensorrt = get_target(target).uses_tensorrt
    with tempfile.TemporaryDirectory(prefix="edgegen-optimize-") as scratch:
        out = Path(scratch) / f"{part}.{precision}.onnx"
        fp32 = OrtSession(part, package.graph_path(part), entry.inputs, entry.outputs, threads=None)
        try:
            if precision == "int8":
                # from a copy: the quantizer writes NAME-inferred.onnx beside its input, which a
                # kill would leave in the package
                fp32_copy = Path(scratch) / f"{part}.fp32.onnx"
                shutil.copyfile(package.graph_path(part), fp32_copy)
                # where this CPU's int8 kernels saturate, 7-bit weights keep their sums in range
                # (ONNX Runtime's advice); TensorRT's int8 does not saturate
                saturates = None if for_tensorrt else int8_sums_saturate()
                weighted, quantized = _int8_layers(model)
                if not quantized:   # before calibrating: the variant would be the fp32 graph, called int8
                    return {"refused": f"nothing to quantize: int8 keeps a graph's first and last weighted layers "
                                       f"({', '.join(sorted(_WEIGHTED))}) in float and quantizes the "
                                       f"{', '.join(sorted(set(_WEIGHTED) & set(INT8_OPS)))} between them; this one has "
                                       f"{len(weighted)} weighted, none of them between", "target": target}
                _quantize_int8(fp32_copy, out, calibration_feeds, weighted, reduce_range=saturates is not None)
            elif precision == "fused":
                _fuse(package, part, out)
            elif precision in WEIGHT_ONLY_BITS:
                model = named_matmuls(weight_matmul_form(model))
                spared, search = [], None
                if precision == "int4" and max_8bit_share > 0:
                    spared, search = int4_spared(model, block_size, for_tensorrt, fp32, calibration_feeds, gate_threshold,
                                                 max_8bit_share, Path(scratch), package.family, note)
                onnx.save(_weight_only(model, WEIGHT_ONLY_BITS[precision], block_size, for_tensorrt, spared,
                                       in_place=True), str(out))
            elif _weights_in_float16(model):   # the variant would be this graph again, gated against itself
                return {"refused": "its weights are float16 already (the module was exported in half precision): "
                                   "the package's own graphs are the fp16 form; export the module in float32 "
                                   "(module.float()) for an fp32 graph and an fp16 variant beside it", "target": target}
            else:
                onnx.save(_to_fp16(model), str(out))
            disabled = INT8_DISABLED_OPTIMIZERS if precision == "int8" else \
                FP16_DISABLED_OPTIMIZERS if precision == "fp16" and not opens_on_cpu(out) else ()
            variant = OrtSession(part, out, entry.inputs, entry.outputs, threads=None, disabled_optimizers=disabled)
        except Exception as exc:  # noqa: BLE001 - a converter failure refuses this graph, not the package
            return {"refused": f"the {precision} conversion failed: {first_line(exc)}", "target": target}
        feeds, call = speed_call or _speed_feeds(package, entry, gate_feeds[0])
        form = None if for_tensorrt else get_family(package.family).ort_form_object()
        form_record, variant_feeds = {}, gate_feeds
        if form is not None:
            out, variant, declined = _in_form(form, part, entry, out, variant, disabled, [*gate_feeds[:2], feeds])
            form_record = {"ort_form_declined": declined} if declined else {"ort_form": form.name}
            variant_feeds = gate_feeds if declined else [form.feed(f) for f in gate_feeds]
            call += "" if declined else f" (the variant in its form, {form.name}; fp32 as exported)"
        gated = variant
        if precision == "int8" and for_tensorrt:
            gated = OrtSession(part, out, entry.inputs, entry.outputs, threads=None,
                               disabled_optimizers=disabled + EXACT_QDQ_OPTIMIZERS)
        gate = gate_variant(package.family, precision, fp32, gated, gate_feeds, gate_threshold, variant_feeds)
        record = {"gate": {"metric": gate.metric, "value": round(gate.value, 4), "threshold": gate.threshold,
                           "passed": gate.passed, "line": gate.line(), **gate.detail},
                  "calibration": {"source": source, "inputs": _inputs_in(calibration_feeds, entry.inputs)} if precision == "int8"
                  else None, "gate_inputs": source, "target": target, **form_record,
                  "onnxruntime": onnxruntime.__version__}   # what made and gated it: an older one may lack its ops
        if precision == "int8":
            record["weights"] = (f"7-bit (reduce_range): made on {saturates}, whose int8 kernels' 16-bit pairwise "
                                 "sums saturate with 8-bit weights" if saturates else "8-bit")
        if precision in WEIGHT_ONLY_BITS:
            record.update(block_size=block_size, form="DequantizeLinear int4 blocks"
                          if for_tensorrt else f"MatMulNBits, accuracy_level {MATMULNBITS_ACCURACY_LEVEL}")
            if search is not None:
                record.update(search)
        if not gate.passed:
            return {**record, "refused": f"gate {gate.line()}" + (_refusal_hint(record, precision)
                                                                      if precision in WEIGHT_ONLY_BITS else "")}
        if speed_check:
            refused = _speed_verdict(record, precision, target, call, form, fp32, variant, feeds, gate)
            if refused:
                return refused
        data = out.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        # a new name for new bytes: the manifest still names the old file until it is switched
        file = f"{part}.{precision}.{digest[:12]}.onnx"
        atomic_write_bytes(package.path / file, data)
        return {**record, "file": file, "sha256": digest,
                **({"disabled_optimizers": list(disabled)} if disabled else {})}


def opens_on_cpu(graph: Path) -> bool:
    """Whether ONNX Runtime's CPU provider opens the graph at its full optimization level, tried in
    a child process: an optimizer that crashes on it (FP16_DISABLED_OPTIMIZERS) would take this one
    down with it. A refusal there that is no crash counts as opening: this process's own open says it."""
    code = "import sys, onnxruntime as ort; ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])"
    return subprocess.run([sys.executable, "-c", code, str(graph)], capture_output=True).returncode >= 0


def _in_form(form, part: str, entry, out: Path, variant, disabled, feeds: list[dict]) -> tuple:
    """The variant at `out` rewritten into the family's ONNX Runtime form and checked against
    itself on `feeds`: (file, session, None), or where the rewrite does not fit the graph, the
    installed ONNX Runtime cannot run it or the check finds a difference, the variant as it was
    and why it keeps the exported form."""
    from .errors import EdgegenError
    from .runtimes.ort import OrtSession

    rewritten = out.with_name(f"{out.stem}.form.onnx")
    try:
        onnx.save(form.rewrite(onnx.load(str(out))), str(rewritten))
        after = OrtSession(part, rewritten, entry.inputs, entry.outputs, threads=None, disabled_optimizers=disabled)
        missed = [c.line() for c in form.check(variant, after, feeds) if not c.passed]
    except EdgegenError as exc:
        return out, variant, f"{form.name}: not applied ({exc})"
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own errors while checking: the exported form stays
        return out, variant, f"{form.name}: not applied (checking it failed: {first_line(exc)})"
    if missed:
        return out, variant, f"{form.name}: not applied, its outputs differ from the variant's: {'; '.join(missed[:3])}"
    return rewritten, after, None


def _int8_layers(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(the graph's weighted layers, those int8 quantizes: every one of INT8_OPS but the first and
    last weighted layers, the ones most sensitive to it)."""
    nodes = [n for n in model.graph.node if n.op_type in _WEIGHTED]
    return [n.name for n in nodes], [n.name for n in nodes[1:-1] if n.op_type in INT8_OPS]


def _quantize_int8(source: Path, out: Path, feeds: list[dict], weighted: list[str], reduce_range: bool) -> None:
    """Static QDQ int8 of the graph at `source`, its first and last `weighted` layers left in float."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._items = iter(feeds)

        def get_next(self):
            return next(self._items, None)

    # quantize_static logs "Please consider pre-processing before quantization" on the root logger, which
    # prints it on the user's terminal: advice to whoever calls the quantizer, not to the user
    root = logging.getLogger()
    advice = _DropMessage("pre-processing before quantization")
    root.addFilter(advice)
    try:
        quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=INT8_OPS,
                        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        nodes_to_exclude=[weighted[0], weighted[-1]] if len(weighted) > 2 else weighted,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    finally:
        root.removeFilter(advice)


class _DropMessage(logging.Filter):
    """Drops log records whose message holds `words` (ONNX Runtime's releases word it differently)."""

    def __init__(self, words: str):
        super().__init__()
        self.words = words

    def filter(self, record: logging.LogRecord) -> bool:
        return self.words not in str(record.msg)


def _weight_only(model: onnx.ModelProto, bits: int, block_size: int, for_tensorrt: bool,
                 spared: list[str] | tuple = (), in_place: bool = False) -> onnx.ModelProto:
    """`model` (in weight_matmul_form) with block-wise symmetric weight-only quantization of the
    MatMuls with a constant weight: ONNX Runtime's MatMulNBits, or for TensorRT DequantizeLinear
    of int4 blocks (its QDQ form). The MatMuls named in `spared` are kept at 8 bits, or for
    TensorRT in float (its parser takes int4 blocks only); a weight two MatMuls share is spared
    for both or neither (weight_groups), since both passes name its scales alike. A copy, unless
    `in_place` (the model's last use: no second copy of a large model's weights in memory)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from .export.graph_rewrites import all_nodes

    form = QuantFormat.QDQ if for_tensorrt else QuantFormat.QOperator

    def quantized(model: onnx.ModelProto, bits: int, excluded, in_place: bool) -> onnx.ModelProto:
        settings = dict(block_size=block_size, is_symmetric=True, bits=bits, quant_format=form,
                        op_types_to_quantize=("MatMul",), accuracy_level=None if for_tensorrt else MATMULNBITS_ACCURACY_LEVEL)
        # the quantizer rewrites the model it is given
        quantizer = MatMulNBitsQuantizer(model if in_place else copy.deepcopy(model),
                                         algo_config=DefaultWeightOnlyQuantConfig(**settings),
                                         nodes_to_exclude=list(excluded), **settings)
        quiet = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
        level = quiet.level
        quiet.setLevel(logging.WARNING)   # it logs every node at INFO
        # and warns, each time it quantizes a graph below opset 21 (IR 10; int4's search quantizes it
        # dozens of times), that it raises it "but the generated model may not be a valid model":
        # edgegen means it (the int4 DequantizeLinear form needs 21), and checks the variant it writes
        raised = _DropMessage("doesn't support int4 data type")
        quiet.addFilter(raised)
        try:
            quantizer.process()
        finally:
            quiet.setLevel(level)
            quiet.removeFilter(raised)
        return quantizer.model.model

    converted = weight_matmul_form(model)   # a copy where it converted
    in_place = in_place or converted is not model
    if spared and not for_tensorrt:   # the spared ones at 8 bits first; the 4-bit pass then passes them by
        kept = set(spared)
        others = [n.name for n in all_nodes(converted.graph) if n.name not in kept]
        converted, in_place = quantized(converted, 8, others, in_place), True
    model = _without_repeated_nodes(quantized(converted, bits, spared, in_place))
    if not any(n.op_type in ("MatMulNBits", "DequantizeLinear") for n in model.graph.node):
        raise ConfigError("expected MatMuls with constant weights to quantize, found none")
    return model


def _without_repeated_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` without the second of two nodes that compute the same outputs from the same inputs:
    ONNX Runtime 1.32's QDQ quantizer writes a DequantizeLinear per MatMul of a weight two
    MatMuls share, both defining one output, which ONNX Runtime then refuses to load."""
    seen, kept = set(), []
    for node in model.graph.node:
        key = (node.op_type, node.domain, tuple(node.input), tuple(node.output),
               tuple(a.SerializeToString() for a in node.attribute))
        if key not in seen:
            kept.append(node)
        seen.add(key)
    if len(kept) < len(model.graph.node):
        del model.graph.node[:]
        model.graph.node.extend(kept)
    return model


def named_matmuls(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with a unique name on each node that lacks one (or shares it): the quantizer picks
    the MatMuls to leave by name. Changes `model` in place and returns it."""
    from .export.graph_rewrites import all_nodes, fresh_name

    taken = {n.name for n in all_nodes(model.graph) if n.name}
    seen = {n.name for n in all_nodes(model.graph)} - {n.name for n in model.graph.node}   # subgraphs' names
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = fresh_name(f"{node.op_type}_{index}", taken)
        seen.add(node.name)
    return model


def weight_groups(model: onnx.ModelProto) -> dict[str, tuple[int, list[str]]]:
    """{weight: (elements, the names of the MatMuls reading it)} of the constant weights the
    weight-only quantizer takes (2-D, or with leading dims of 1), in graph order."""
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer
             if len(i.dims) >= 2 and all(d == 1 for d in i.dims[:-2])}
    groups: dict[str, tuple[int, list[str]]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1 and node.input[1] in sizes:
            groups.setdefault(node.input[1], (sizes[node.input[1]], []))[1].append(node.name)
    return groups


def int4_spared(model: onnx.ModelProto, block_size: int, for_tensorrt: bool, fp32, feeds: list[dict],
                gate_threshold: float | None, max_share: float, scratch: Path, family: str,
                note=lambda text: None) -> tuple[list[str], dict]:
    """The MatMuls an int4 variant keeps at 8 bits (float for TensorRT), judged on `feeds`
    (held-out windows apart from the gate's) by the gate's measures with top-1 SEARCH_MARGIN above
    its bar: none where every MatMul at 4 bits clears them. Else each weight alone at 8 bits is
    ranked by how close it brings the variant's next-token distributions to fp32's (KL
    divergence: a smooth measure, where top-1 moves in steps of single argmaxes), and they are
    kept in that order, passing over any that would take their share of the MatMul weights past
    `max_share` and always leaving one at 4 bits, until the variant clears them. One variant run
    over `feeds` per weight and per weight kept. Returns (the MatMuls' names, what the manifest
    records of the search)."""
    from .runtimes.ort import OrtSession

    least = (MIN_TOP1 if gate_threshold is None else float(gate_threshold)) + SEARCH_MARGIN
    groups = weight_groups(model)
    total = sum(size for size, _ in groups.values())
    trial = scratch / "int4-search.onnx"
    note("fp32 and int4 on the search windows")
    reference = [fp32.run(f) for f in feeds]   # once: each judgement runs the variant only

    def variant(weights: list[str]):
        onnx.save(_weight_only(model, 4, block_size, for_tensorrt, _names(groups, weights)), str(trial))
        return OrtSession("int4 search", trial, fp32.inputs, fp32.outputs, threads=None)

    def judged(weights: list[str]) -> GateResult:
        return gate_variant(family, "int4", fp32, variant(weights), feeds, least, reference=reference)

    def record(weights: list[str], result: GateResult, stopped: str, ranked: list[str] = ()) -> tuple[list[str], dict]:
        names = _names(groups, weights)
        judgements = 1 + len(ranked) + len(weights)   # all 4-bit, one per weight ranked, one per weight kept
        # the weights by their graph names, which are the model's parameters' (the MatMul nodes' are not)
        return names, {"spared_matmuls": names, "spared_weights": list(weights),
                       "spared_as": "float" if for_tensorrt else "8-bit blocks",
                       "spared_share": round(sum(groups[w][0] for w in weights) / max(total, 1), 4),
                       "matmuls": sum(len(n) for _, n in groups.values()),
                       "search": {"windows": len(feeds) * BATCH, "bar": round(least, 4), "top1": round(result.value, 4),
                                  "perplexity_ratio": result.detail["perplexity_ratio"], "passed": result.passed,
                                  "judgements": judgements, "max_8bit_share": max_share, "stopped": stopped,
                                  "ranked": list(ranked)}}

    result = judged([])
    budget = max_share * total
    if result.passed:
        return record([], result, "passed")
    if len(groups) < 2:
        return record([], result, STOPPED_ONE_WEIGHT)
    if min(size for size, _ in groups.values()) > budget:
        return record([], result, STOPPED_SHARE)
    divergences = {}
    for done, weight in enumerate(groups, 1):
        note(f"int4 top-1 {result.value:.3f} on the search windows; ranking weights at 8 bits, {done}/{len(groups)}")
        divergences[weight] = _mean_divergence(reference, variant([weight]), feeds)
    ranked = sorted(groups, key=divergences.get)
    kept, passed_over = [], False
    for weight in ranked:
        if len(kept) + 2 > len(groups):
            break
        if sum(groups[w][0] for w in kept) + groups[weight][0] > budget:
            passed_over = True
            continue
        kept.append(weight)
        note(f"int4 with {len(kept)} weights at 8 bits")
        result = judged(kept)
        if result.passed:
            return record(kept, result, "passed", ranked)
    return record(kept, result, STOPPED_SHARE if passed_over else STOPPED_ALL_BUT_ONE, ranked)


STOPPED_SHARE = "the share ran out"
STOPPED_ALL_BUT_ONE = "every weight but one at 8 bits"   # one stays at 4 bits: else it is int8-weights
STOPPED_ONE_WEIGHT = "one weight: none to keep at 8 bits"


def _names(groups: dict, weights: list[str]) -> list[str]:
    return [name for weight in weights for name in groups[weight][1]]


def _mean_divergence(reference: list[dict], variant, feeds: list[dict]) -> float:
    """Mean KL divergence of the variant's next-token distributions from fp32's (`reference`,
    its outputs on `feeds`), a window at a time: vocabularies are large."""
    from .runtimes.autoregressive import log_softmax

    total, count = 0.0, 0
    for ref, feed in zip(reference, feeds):
        for p, q in zip(ref["logits"], variant.run(feed)["logits"]):   # [tokens, vocab] each
            log_p = log_softmax(p, axis=-1)
            total += float(np.sum(np.exp(log_p) * (log_p - log_softmax(q, axis=-1))))
            count += len(p)
    return total / count


def _refusal_hint(record: dict, precision: str) -> str:
    """What the int4 search did, where the gate refused its result, and what to take instead."""
    search = record.get("search")
    # for TensorRT the spared weights stay in float, and int8-weights (ONNX Runtime's MatMulNBits) is not there
    in_float = get_target(record["target"]).uses_tensorrt
    kept_as, other = ("in float", "int8 or fp16") if in_float else ("at 8 bits", "int8-weights")
    # finer blocks keep more of fp32's predictions (docs/optimization.md's block sizes), at some speed
    block = record["block_size"]
    instead = f"a smaller --block-size ({block // 2}), or --precision {other}" if block > MIN_BLOCK_SIZE \
        else f"--precision {other}"
    if not search:   # every weight at 4 bits, as asked (--max-8bit-share 0)
        return f": keep MatMuls {kept_as} (--max-8bit-share), or take {instead}" if precision == "int4" else ""
    kept = f", with {spared_text(record)}" if record["spared_matmuls"] else ""
    if search["passed"]:
        what = "they" if kept else "every weight at 4 bits"
        return (f"{kept} ({what} cleared the search's own windows at top-1 {search['top1']:.4g}; the gate's are "
                f"others): take {instead}")
    missed = (f"top-1 {search['top1']:.4g} < {search['bar']:g}" if search["top1"] < search["bar"]
              else f"perplexity {search['perplexity_ratio']:.4g}x fp32's > {MAX_PERPLEXITY_RATIO:g}x")
    stopped = search["stopped"].replace("at 8 bits", kept_as)
    if search["stopped"] == STOPPED_SHARE and search["max_8bit_share"] < 1:
        return (f"{kept}; keeping weights {kept_as} up to --max-8bit-share {search['max_8bit_share']:g} did not clear "
                f"the search's bars ({missed}): raise it, or take {instead}")
    return f"{kept}; the search stopped at {stopped} ({missed}): take {instead}"


def weight_matmul_form(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model`, or a copy where every constant weight reaches a MatMul as its second input, the
    only place the weight-only quantizers take one: each Gemm of a constant weight (alpha = beta
    = 1, A not transposed) becomes a MatMul plus an Add of its bias, and a MatMul that reads a
    Transpose of a constant 2-D weight reads a transposed copy instead (a tied output head: the
    decoder's logits_to_keep slice puts it after the embedding table's Transpose)."""
    from onnx import helper, numpy_helper

    from .export.graph_rewrites import all_nodes, fresh_name

    def transposes(graph) -> dict[str, str]:   # a Transpose's output -> the 2-D weight it transposes
        weights = {i.name for i in graph.initializer if len(i.dims) == 2}
        return {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Transpose" and n.input[0] in weights
                and list(helper.get_attribute_value(a) for a in n.attribute if a.name == "perm") in ([], [[1, 0]])}

    found = transposes(model.graph)
    if not any(n.op_type == "Gemm" or (n.op_type == "MatMul" and n.input[1:2] and n.input[1] in found)
               for n in model.graph.node):
        return model
    model = copy.deepcopy(model)   # not through bytes: protobuf's 2 GB limit
    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    transposed: dict[str, str] = {}   # weight -> its transpose, made once however many nodes read it
    replaced, taken = set(), set(weights) | {o for n in all_nodes(graph) for o in n.output}

    def transpose_of(weight: str) -> str:
        if weight not in transposed:
            transposed[weight] = fresh_name(f"{weight}.transposed", taken)
            array = np.ascontiguousarray(numpy_helper.to_array(weights[weight]).T)
            graph.initializer.append(numpy_helper.from_array(array, transposed[weight]))
        replaced.add(weight)
        return transposed[weight]

    nodes = []
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = (attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0
                 and not attributes.get("transA", 0))
        if node.op_type == "MatMul" and node.input[1:2] and node.input[1] in found:
            node.input[1] = transpose_of(found[node.input[1]])
        if node.op_type != "Gemm" or node.input[1] not in weights or not plain:
            nodes.append(node)
            continue
        weight = transpose_of(node.input[1]) if attributes.get("transB", 0) else node.input[1]
        has_bias = len(node.input) > 2 and node.input[2]
        product = f"{node.output[0]}.matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}.matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}.bias"))
    # drop the Transposes and the untransposed weights no node reads any more (only those: others
    # may be read inside subgraphs or be graph outputs)
    outputs = {o.name for o in graph.output}
    subgraphs = {name for node in graph.node for a in node.attribute   # read inside If/Loop/Scan bodies
                 for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs) for n in all_nodes(sub) for name in n.input}
    used = {name for node in nodes for name in node.input} | outputs | subgraphs
    nodes = [n for n in nodes if not (n.op_type == "Transpose" and n.output[0] in found and n.output[0] not in used)]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input} | outputs | subgraphs
    kept = [i for i in graph.initializer if i.name not in replaced or i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def _fuse(package: Package, part: str, out: Path) -> None:
    """ONNX Runtime's transformer optimizer (GELU, LayerNorm, attention fusions where it finds
    its patterns); for families that declare their transformer's heads and width."""
    from onnxruntime.transformers.optimizer import optimize_model

    family, config = package_config(package)   # a transformer family: optimize_package checked
    # its symbolic shape inference fails on these graphs' dynamic dims, and it skips the fusions that need
    # it, saying so by print and by warnings of loggers named after its modules (it imports them as
    # top-level modules: fusion_skiplayernorm, ...): words for ONNX Runtime's developers, not the user.
    # Only those loggers are quieted, not the process's others; stdout is swapped for the call (its one print).
    folder = Path(optimize_model.__code__.co_filename).parent
    loggers = [logging.getLogger(name) for name, module in list(sys.modules.items())
               if Path(getattr(module, "__file__", None) or "/").parent == folder]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            fused = optimize_model(str(package.graph_path(part)), opt_level=0, **family.fusion(config))
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    fused.save_model_to_file(str(out))


def _weights_in_float16(model: onnx.ModelProto) -> bool:
    """Whether every float weight of the graph is float16 (and it has some): a module exported in half."""
    floats = [t.data_type for t in model.graph.initializer
              if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    return bool(floats) and all(kind == onnx.TensorProto.FLOAT16 for kind in floats)


def _to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(_outputs_made_by_nodes(model), keep_io_types=True, op_block_list=FP32_KEPT)


def _outputs_made_by_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with each graph output that is an initializer (a module returning a buffer) made by
    an Identity of it: the fp16 converter's kept fp32 output adds a Cast that defines the output's
    name a second time beside the initializer ("Duplicate definition of name")."""
    constant = {i.name for i in model.graph.initializer} & {o.name for o in model.graph.output}
    if not constant:
        return model
    model = copy.deepcopy(model)
    for initializer in model.graph.initializer:
        if initializer.name in constant:
            initializer.name += "__value"
    for node in model.graph.node:
        node.input[:] = [f"{name}__value" if name in constant else name for name in node.input]
    # first: a subgraph (If, Loop) that reads the output by its outer name finds it defined before it
    nodes = [onnx.helper.make_node("Identity", [f"{name}__value"], [name]) for name in sorted(constant)]
    nodes += [copy.deepcopy(node) for node in model.graph.node]   # copies: the field is cleared next
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _speed_verdict(record: dict, precision: str, target: str, call: str, form, fp32, variant, feeds: dict,
                   gate) -> dict | None:
    """The variant timed against fp32 at `call` (into record's speedup_ort_cpu and speed_measured_at);
    for ort-cpu one that does not pay comes back refused, else None."""
    calls = ((form.timed_call(fp32, feeds), form.timed_call(variant, feeds)) if form is not None
             else (lambda: fp32.run(feeds), lambda: variant.run(feeds)))
    speed, first = speedup_of_calls(*calls), "the first timing"
    # a variant is kept, and then loaded, on a timing: one noisy timing of 1.19x kept a variant that
    # runs at 1.0x, so a keep is timed twice and the lower figure judges; for another target the
    # figure is recorded, and load warns below SLOWER by it (a loaded machine's 2.13x stood for 0.94x
    # and hid that warning: helper 128), so a figure that hides it is timed twice too
    if speed >= (MIN_SPEEDUP + VERDICT_MARGIN if target == "ort-cpu" else SLOWER):
        speed, first = min(speed, speedup_of_calls(*calls)), "the lower of two timings"
        call += (", timed twice (its first timing would keep it), the lower figure judging" if target == "ort-cpu" else
                 f", timed twice (its first timing, {SLOWER:g}x or more, would hide load's warning that it runs "
                 "slower than fp32), the lower figure recorded")
    if target == "ort-cpu" and abs(speed - MIN_SPEEDUP) < VERDICT_MARGIN:
        speed = speedup_of_calls(*calls, rounds=VERDICT_ROUNDS)
        call += f", timed again over {VERDICT_ROUNDS} rounds ({first} was within {VERDICT_MARGIN:g} of " \
                f"{MIN_SPEEDUP:g}x)"
    record["speedup_ort_cpu"] = round(speed, 3)
    record["speed_measured_at"] = call
    if target == "ort-cpu" and record["speedup_ort_cpu"] < MIN_SPEEDUP:
        # --target tensorrt writes another file (int4's DequantizeLinear form, int8 without the GPT
        # cache written in place), for a GPU: it does not keep this one
        keeps = "; --no-speed-check keeps it" + (", and for a GPU --target tensorrt writes TensorRT's form, which no "
                                                 "CPU timing refuses"
                                                 if precision in get_target("tensorrt").variant_precisions else "")
        return {**record, "refused": f"does not pay on ort-cpu: {record['speedup_ort_cpu']:.3f}x the fp32 graph's "
                                     f"speed at {call} (below {MIN_SPEEDUP}x{keeps}), though its gate passed "
                                     f"({gate.line()})"}
    return None


def gate_variant(family: str, precision: str, fp32, variant, feeds: list[dict], gate_threshold: float | None,
                 variant_feeds: list[dict] | None = None, reference: list[dict] | None = None) -> GateResult:
    """The variant's outputs against fp32's on held-out inputs (variant_feeds: the same inputs as
    a variant in another form takes them; reference: fp32's outputs on them, where the caller ran
    it already). gate_threshold: the gate's own metric's least value to pass, instead of the
    precision's default (tests of the mechanics): top-1 agreement for a token model, the share of
    ids kept for a graph whose outputs are all ids, else PSNR in dB (the ids beside float outputs
    then keep the default 0.95)."""
    reference = [fp32.run(f) for f in feeds] if reference is None else reference
    _refuse_unfinite_reference(reference, precision)
    ours = [variant.run(f) for f in (feeds if variant_feeds is None else variant_feeds)]
    names = [o.name for o in fp32.outputs]
    if "logits" in names and get_family(family).gate == "logits":
        ref = np.concatenate([r["logits"].reshape(-1, r["logits"].shape[-1]) for r in reference])
        got = np.concatenate([o["logits"].reshape(-1, o["logits"].shape[-1]) for o in ours])
        top1 = float((ref.argmax(-1) == got.argmax(-1)).mean())
        least = MIN_TOP1 if gate_threshold is None else float(gate_threshold)
        cosine = float(np.mean(np.sum(ref * got, -1) / (np.linalg.norm(ref, axis=-1) * np.linalg.norm(got, axis=-1) + 1e-12)))
        if precision in WEIGHT_ONLY_BITS:   # held-out windows: the next tokens are known
            fp32_ppl, ppl = (perplexity([r["logits"] for r in outputs], feeds) for outputs in (reference, ours))
            ratio = ppl / fp32_ppl
            return GateResult("top-1 agreement", top1, least, top1 >= least and ratio <= MAX_PERPLEXITY_RATIO,
                              {"cosine": round(cosine, 5), "perplexity": round(ppl, 4),
                               "fp32_perplexity": round(fp32_ppl, 4), "perplexity_ratio": round(ratio, 4),
                               "max_perplexity_ratio": MAX_PERPLEXITY_RATIO})
        passed = top1 >= least and cosine >= MIN_COSINE
        return GateResult("top-1 agreement", top1, least, passed, {"cosine": round(cosine, 5),
                                                                      "min_cosine": MIN_COSINE})
    # ids (a VQ encoder's codes, classes) agree or not: a PSNR of them means nothing
    whole = [n for n in names if reference[0][n].dtype.kind in "iub"]
    if whole:
        agreement = {n: float(np.mean(np.concatenate([r[n].ravel() for r in reference])
                                      == np.concatenate([o[n].ravel() for o in ours]))) for n in whole}
        least = MIN_TOP1 if gate_threshold is None or len(whole) < len(names) else float(gate_threshold)
        if len(whole) == len(names):
            return GateResult("agreement", min(agreement.values()), least, min(agreement.values()) >= least,
                              {"per_output": {n: round(a, 4) for n, a in agreement.items()}})
    threshold = MIN_PSNR_DB[precision] if gate_threshold is None else float(gate_threshold)
    worst, per_output = np.inf, {}
    for name in (n for n in names if n not in whole):
        ref = np.concatenate([r[name].ravel() for r in reference]).astype(np.float64)
        got = np.concatenate([o[name].ravel() for o in ours]).astype(np.float64)
        per_output[name] = round(psnr(ref, got), 2)
        worst = min(worst, per_output[name])
    detail, passed = {"per_output": per_output}, worst >= threshold
    if whole:   # beside float outputs: each id output must agree as a token model's top-1 does
        detail.update(agreement={n: round(a, 4) for n, a in agreement.items()}, min_agreement=least)
        passed = passed and min(agreement.values()) >= least
    if get_family(family).gate == "density" and {"z", "logdet"} <= set(names):
        error = log_density_error(reference, ours)
        detail.update(log_density_error=round(error, 4), max_log_density_error=MAX_LOG_DENSITY_ERROR)
        passed = passed and error <= MAX_LOG_DENSITY_ERROR
    if get_family(family).gate == "categorical" and "logits" in names:
        divergence = mean_kl_divergence([r["logits"] for r in reference], [o["logits"] for o in ours])
        detail.update(kl_nats=float(f"{divergence:.4g}"), max_kl_nats=MAX_KL_NATS)   # 4 figures: 3e-6 is not 0
        passed = passed and divergence <= MAX_KL_NATS
    if get_family(family).gate == "detail":
        kept = detail_kept(get_family(family).gate_base_function(), feeds, reference, ours)
        detail.update(detail_db=round(kept, 2), min_detail_db=MIN_DETAIL_DB[precision])
        passed = passed and kept >= MIN_DETAIL_DB[precision]
    return GateResult("PSNR dB", float(worst), threshold, bool(passed), detail)


def detail_kept(base: Callable[[dict, dict], dict], feeds: list[dict], reference: list[dict], ours: list[dict]) -> float:
    """How much of what the model adds to its base output a variant keeps, in dB: the energy of
    fp32's outputs' departure from the base (base(feed, fp32's outputs): {output: array}) over the
    energy of the variant's error from fp32 (inf where it has none)."""
    learned = error = 0.0
    for feed, ref, got in zip(feeds, reference, ours):
        for name, start in base(feed, ref).items():
            learned += float(np.sum((ref[name].astype(np.float64) - start) ** 2))
            error += float(np.sum((got[name].astype(np.float64) - ref[name]) ** 2))
    return math.inf if error == 0 else 10 * math.log10(learned / error) if learned > 0 else -math.inf


def _refuse_unfinite_reference(reference: list[dict], precision: str) -> None:
    """fp32's own NaN or Inf on a gate feed leaves nothing to judge a variant against: its PSNR was
    NaN, which the gate's min() passed over, and an int8 variant at 8.6 dB was written as "inf"."""
    for i, outputs in enumerate(reference):
        if bad := [name for name, value in outputs.items()
                   if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all()]:
            raise InputError(f"{precision} gate: expected the fp32 graph's outputs to judge the variant against, found "
                             f"{bad[0]!r} holding NaN or Inf on feed {i + 1} of the {len(reference)} it judges on (the "
                             "second half of --inputs or of the feeds the export recorded; a padded-out sequence, a "
                             "value past float32's range): leave such inputs out of the feeds")


def log_density_error(reference: list[dict], ours: list[dict]) -> float:
    """p99 of |log p - fp32's log p| over the held-out inputs, as a share of the spread (std) of
    fp32's log p over them: how far a flow variant moves the densities anomaly scores rank by,
    against how far apart the inputs' own densities lie."""
    from .metrics import standard_normal_log_density

    ref, got = (np.concatenate([standard_normal_log_density(o["z"], o["logdet"]) for o in outputs])
                for outputs in (reference, ours))
    if not np.isfinite(got).all():
        return float("inf")
    return float(np.percentile(np.abs(got - ref), 99) / (ref.std() or 1.0))


def mean_kl_divergence(reference: list[np.ndarray], ours: list[np.ndarray]) -> float:
    """The mean over positions of KL(fp32's distribution || the variant's), in nats, of logits
    with their classes on axis 1 ([batch, classes, ...]: WaveNet's codes, PixelCNN's grey levels)."""
    from .runtimes.autoregressive import log_softmax

    total, count = 0.0, 0
    for ref, got in zip(reference, ours):
        log_p, log_q = (log_softmax(x.astype(np.float64), axis=1) for x in (ref, got))
        divergence = np.sum(np.exp(log_p) * (log_p - log_q), axis=1)
        total, count = total + float(divergence.sum()), count + divergence.size
    return total / count if count else 0.0


def perplexity(logits: list[np.ndarray], feeds: list[dict]) -> float:
    """exp of the mean next-token cross-entropy over prompt calls [batch, tokens, vocab] of known text."""
    from .runtimes.autoregressive import log_softmax

    losses = []
    for x, feed in zip(logits, feeds):
        for row, targets in zip(x[:, :-1], feed["input_ids"][:, 1:]):   # a row at a time: vocabularies are large
            losses.append(-np.take_along_axis(log_softmax(row, axis=-1), targets[:, None], -1).ravel())
    return float(np.exp(np.concatenate(losses).mean()))


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, the peak being the reference's range."""
    if not np.isfinite(test).all():
        return float("-inf")
    mse = float(np.mean((reference - test) ** 2))
    peak = float(reference.max() - reference.min()) or 1.0
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def _speed_feeds(package, entry, gate_feed: dict) -> tuple[dict, str]:
    """The call a variant's speed is judged at, and its description: the family's typical call
    where it declares one (a super-resolution package's default tiles: the gate's small crops
    would judge int8 on overhead, not on the work; WaveNet's step at the batch of 1 it generates
    at), else a gate feed (batch 8)."""
    from .bench import bench_feeds

    family, config = package_config(package)
    typical = family.bench_dims(config) if family.bench_dims else {}
    names = {d for spec in entry.inputs for d in spec.shape if isinstance(d, str)}
    sizes = {d: n for d, n in typical.items() if d in names and d != "batch"}
    batch = int(typical.get("batch", BATCH)) if "batch" in names else BATCH
    if sizes:
        return (bench_feeds(entry.inputs, batch, shapes=sizes),
                f"batch {batch}" + "".join(f", {d} {n}" for d, n in sizes.items()))
    if batch == BATCH:
        return gate_feed, f"batch {BATCH}"
    # the gate's held-out rows, as many as the typical call's batch (repeated where it has fewer)
    return ({spec.name: _rows(gate_feed[spec.name], batch) if spec.shape[:1] == ("batch",) else gate_feed[spec.name]
             for spec in entry.inputs}, f"batch {batch}")


def _rows(array: np.ndarray, count: int) -> np.ndarray:
    """The first `count` rows of `array`, its rows repeated in turn where it has fewer."""
    return np.resize(array, (count, *array.shape[1:])) if len(array) < count else array[:count]


def speedup(fp32, variant, feeds: dict, rounds: int = 5, per_round: int = 20) -> float:
    """fp32 p50 latency over the variant's on one feed, taking turns (bench's interleaved timing)."""
    return speedup_of_calls(lambda: fp32.run(feeds), lambda: variant.run(feeds), rounds, per_round)


def speedup_of_calls(fp32_call, variant_call, rounds: int = 5, per_round: int = 20) -> float:
    """fp32_call's p50 latency over variant_call's, taking turns."""
    from .bench import interleaved_timings

    times = interleaved_timings({"fp32": fp32_call, "variant": variant_call}, rounds * per_round, 5, rounds=rounds,
                                progress=False)
    return float(np.median(times["fp32"]) / np.median(times["variant"]))


def _record(package: Package, precision: str, records: dict) -> None:
    """Switch the manifest (one atomic rename) to this precision's new variants and refusals,
    read it back, then remove the variant files it no longer names: a kill before the switch
    leaves the old manifest and its files, after it the new ones (and leftovers for _clean)."""
    manifest = package.manifest
    # the files this precision's records named, whatever their form: an earlier edgegen's unhashed
    # generator.int8.onnx, which VARIANT_FILE does not take for optimize's own, went unremoved
    replaced = {Path(r["file"]).name for r in package.variant_files(precision).values()}
    manifest.variants[precision] = records
    write_manifest(package.path, manifest)
    written = Package(package.path)   # read back through the runtime's checks
    if precision in written.damaged_variants:   # what was just written does not read back as written
        written.require_variants(precision, PackageError)
    _clean(written, replaced)


def _clean(package: Package, replaced: set[str] = frozenset()) -> None:
    """Remove what killed runs left in a package: temporary files of atomic writes, and variant
    files (named as optimize names them, or as `replaced`, the ones an earlier manifest named) that
    the manifest does not name. Under the writer lock."""
    named = {Path(r["file"]).name for precision in package.manifest.variants
             for r in package.variant_files(precision).values()}
    named |= {Path(g.file).name for g in package.graphs.values()}
    clean_temporaries(package.path)
    for entry in package.path.iterdir():
        if (VARIANT_FILE.match(entry.name) or entry.name in replaced) and entry.name not in named and entry.is_file():
            entry.unlink(missing_ok=True)
            fault_point(f"removed unnamed variant {entry.name}")


__all__ = ["optimize_package", "gate_variant", "psnr"]
