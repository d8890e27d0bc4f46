"""The validation gate: an exported graph must reproduce PyTorch, or nothing is written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ValidationError, first_line
from ..runtimes.session import Session


@dataclass
class Comparison:
    output: str
    batch: int | str          # the batch size, or for a user's module the feed's sizes ("batch=1, height=48")
    max_abs: float
    max_rel: float
    finite: bool
    passed: bool
    reference_finite: bool = True   # False: PyTorch's own output held NaN or Inf (nothing to check the graph against)
    shapes: tuple | None = None     # (the graph's, PyTorch's) where they differ: no values to compare

    def line(self) -> str:
        where = f"batch {self.batch}" if isinstance(self.batch, int) else self.batch
        if self.shapes is not None:   # was "max abs inf", which sent a user looking for an overflow
            return (f"{self.output} @ {where}: shape {list(self.shapes[0])} where PyTorch's is {list(self.shapes[1])} "
                    "[SHAPE MISMATCH]")
        verdict = "ok" if self.passed else ("NaN/Inf from PyTorch" if not self.reference_finite else
                                            "NaN/Inf" if not self.finite else "MISMATCH")
        return f"{self.output} @ {where}: max abs {self.max_abs:.3g}, max rel {self.max_rel:.3g} [{verdict}]"


def torch_inputs(feeds: dict[str, np.ndarray], specs) -> list[torch.Tensor]:
    """The module's arguments in the specs' order, each a copy of its feed: torch.from_numpy shares
    the array's memory, and a module that changes its input in place (x.sub_(0.5)) would change the
    caller's array and what ONNX Runtime is given next."""
    return [torch.from_numpy(np.array(feeds[spec.name])) for spec in specs]


# a float16 output is compared no tighter than this (atol, rtol): float16's step is 1e-3 of a value, and
# ONNX Runtime's fp16 kernels and torch's round differently, a step or two per layer (a two-layer fp16
# MLP differed by 4e-3 relative); float32 outputs beside it keep the tolerance given
FLOAT16_TOLERANCES = (1e-3, 1e-2)


def output_tolerances(dtype: str, atol: float, rtol: float) -> tuple[float, float]:
    """The tolerances an output of `dtype` is compared at: as given, widened to FLOAT16_TOLERANCES
    for a float16 one."""
    if dtype == "float16":
        return max(atol, FLOAT16_TOLERANCES[0]), max(rtol, FLOAT16_TOLERANCES[1])
    return atol, rtol


def tolerance_said(atol: float, rtol: float, outputs) -> str:
    """The tolerances a gate compared `outputs` (TensorSpecs) at, as its messages say them."""
    said = f"tolerance atol {atol:g}, rtol {rtol:g}"
    if any(spec.dtype == "float16" for spec in outputs) and output_tolerances("float16", atol, rtol) != (atol, rtol):
        said += "; float16 outputs at atol {:g}, rtol {:g}".format(*output_tolerances("float16", atol, rtol))
    return said


def compare(output: str, batch: int, ours: np.ndarray, reference: np.ndarray, atol: float, rtol: float) -> Comparison:
    """allclose-style: every element within atol + rtol * |reference|; NaN or Inf anywhere fails."""
    reference_finite = bool(np.isfinite(reference).all())
    finite = bool(np.isfinite(ours).all() and reference_finite)
    if ours.shape != reference.shape:
        return Comparison(output, batch, float("inf"), float("inf"), finite, False, reference_finite,
                          (tuple(ours.shape), tuple(reference.shape)))
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/Inf are reported through `finite`
        diff = np.abs(ours.astype(np.float64) - reference.astype(np.float64))
        scale = np.abs(reference.astype(np.float64))
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = float((diff / np.maximum(scale, 1e-12)).max()) if diff.size else 0.0
    passed = finite and bool((diff <= atol + rtol * scale).all())
    return Comparison(output, batch, max_abs, max_rel, finite, passed, reference_finite)


def gate_graph(part: str, module: torch.nn.Module, session: Session, make_inputs, batches: tuple[int, ...],
               atol: float, rtol: float) -> list[Comparison]:
    """Run the graph in ONNX Runtime (through the same session class users get) and the
    module in PyTorch on the same realistic inputs at each batch size; compare every output."""
    return [r for batch in batches for r in _compare_feed(module, session, make_inputs(batch), batch, atol, rtol)]


def gate_feeds(module: torch.nn.Module, session: Session, feeds: list[dict], atol: float, rtol: float) -> list[Comparison]:
    """The gate over given feeds (a user's module: inputs at sizes the trace did not see), each
    labelled by its dynamic dims' sizes."""
    results = []
    for feed in feeds:
        results += _compare_feed(module, session, feed, feed_label(session.inputs, feed), atol, rtol)
    return results


def feed_label(specs, feed: dict) -> str:
    """A feed's label: its dynamic dims' sizes (sizes_label)."""
    return sizes_label(specs, {d: n for spec in specs for d, n in zip(spec.shape, feed[spec.name].shape)
                               if isinstance(d, str)})


def sizes_label(specs, sizes: dict[str, int]) -> str:
    """"batch=2, width=96": dynamic dims' sizes in the order the inputs name them, as gate_feeds labels a feed."""
    dims = dict.fromkeys(d for spec in specs for d in spec.shape if isinstance(d, str))
    return ", ".join(f"{d}={sizes[d]}" for d in dims if d in sizes) or "static shapes"


def _compare_feed(module, session, feeds, label, atol, rtol) -> list[Comparison]:
    with torch.inference_mode():
        reference = module(*torch_inputs(feeds, session.inputs))
    if isinstance(reference, torch.Tensor):
        reference = (reference,)
    ours = session.run(feeds)
    return [compare(spec.name, label, ours[spec.name], ref.numpy(), *output_tolerances(spec.dtype, atol, rtol))
            for spec, ref in zip(session.outputs, reference)]


def gate_inputs_zeroed(module: torch.nn.Module, session: Session, feed: dict, atol: float,
                       rtol: float) -> dict[str, list[Comparison]]:
    """The gate at `feed` with each float input in turn holding exact zeros, the others as they
    are: drawn values are never exactly 0, where an op's translation can part from PyTorch
    (torch.onnx's atan2 gave -pi for atan2(0, x < 0): review 185), and real data holds zeros (an
    rfft's DC bin's imaginary part, padding, a mask). One zero in each row of the last axis, in
    column row % length (so that every column of a [..., 2] real and imaginary pair gets some),
    never two: zeros tie, and a top-k over ties (of the input itself, or of a mixture of experts'
    router scores computed from an all-zero row) may pick any of them in either engine, both
    right (reviews 186 and 187). Float outputs only: an output of indices may break ties in any
    order. A feed that the module refuses, or where PyTorch's own output holds NaN or Inf (a log of
    the input), has nothing to compare and is left out. {input zeroed: its comparisons}."""
    results = {}
    for spec in session.inputs:
        if feed[spec.name].dtype.kind != "f":
            continue
        holed = np.array(feed[spec.name])
        rows = holed.reshape(-1, holed.shape[-1]) if holed.ndim else holed.reshape(1, 1)
        rows[np.arange(len(rows)), np.arange(len(rows)) % rows.shape[1]] = 0
        zeroed = {**feed, spec.name: holed}
        try:
            with torch.inference_mode():
                reference = module(*torch_inputs(zeroed, session.inputs))
        except Exception:  # noqa: BLE001 - a module that refuses zeros (its own checks)
            continue
        reference = (reference,) if isinstance(reference, torch.Tensor) else reference
        if not all(np.isfinite(ref.numpy()).all() for ref in reference if ref.dtype.is_floating_point):
            continue
        ours = session.run(zeroed)
        label = f"{feed_label(session.inputs, zeroed)}, a value of each row of {spec.name} zero"
        results[spec.name] = [compare(out.name, label, ours[out.name], ref.numpy(), *output_tolerances(out.dtype, atol, rtol))
                              for out, ref in zip(session.outputs, reference) if ref.dtype.is_floating_point]
    return results


def refuse_lost_epsilons(part: str, module: torch.nn.Module, session: Session, feed: dict) -> None:
    """ValidationError where the graph turns all-zero float inputs into NaN or Inf that PyTorch
    keeps finite. torch.onnx's optimizer (onnxscript's no-op rules) removes `x + c` and `x - c`
    where |c| <= 1e-8, taking c for 0: the epsilon of `z * rsqrt(mean(z**2) + 1e-8)` vanishes, and
    the graph divides by zero where the module does not. The gate's random inputs never show it."""
    zeros = {name: np.zeros_like(value) if value.dtype.kind == "f" else value for name, value in feed.items()}
    try:
        with torch.inference_mode():
            reference = module(*torch_inputs(zeros, session.inputs))
    except Exception:  # noqa: BLE001 - a module that refuses zeros (its own checks) has nothing to compare there
        return
    reference = (reference,) if isinstance(reference, torch.Tensor) else reference
    try:
        ours = session.run(zeros)
    except Exception as exc:  # noqa: BLE001 - PyTorch ran these inputs: the graph's failure is the finding
        raise ValidationError(f"graph {part!r}: expected it to run at all-zero inputs, as PyTorch does, found: "
                              f"{first_line(exc)}. Package not written") from None
    lost = [spec.name for spec, ref in zip(session.outputs, reference)
            if np.isfinite(ref.numpy()).all() and not np.isfinite(ours[spec.name]).all()]
    if lost:
        raise ValidationError(
            f"graph {part!r}: expected finite {', '.join(lost)} at all-zero inputs, as PyTorch gives, found NaN or Inf: "
            "most likely an epsilon of 1e-8 or less added in forward (x + 1e-8), which torch.onnx's optimizer removes "
            "as adding 0; write it as .clamp_min(1e-8), or use 1e-6 or more. Package not written")
