"""ONNX translations of ATen ops that torch.onnx's own get wrong, passed to every export
(torch.onnx.export's custom_translation_table). The gate checks the graphs they make against
PyTorch like any other.

- aten.atan2: torch.onnx writes Atan(y / x) with quadrant fixes keyed on y > 0 and x < 0, so a
  y of exactly 0 with x < 0 gave -pi where PyTorch gives +pi (the imaginary part of an rfft's DC
  bin is exactly 0: a phase of pi came out as -pi), atan2(0, -0) gave 0 for pi, and a NaN input
  came out 0. The gate's drawn feeds hold no exact zeros, so it passed (review 185). Written here
  as IEEE atan2: signed zeros and infinities as PyTorch (C's atan2) takes them. (A result of
  zero may come out +0 where PyTorch's is -0: ONNX Runtime's Where does not keep a zero's sign.)
"""

from __future__ import annotations

import math

import torch
from onnxscript import opset18 as op


def _sign_bit(value):
    """Whether each value's sign bit is set: negative numbers, and -0 (1 / -0 is -inf)."""
    zero, one = op.CastLike(0.0, value), op.CastLike(1.0, value)
    return op.Or(op.Less(value, zero), op.And(op.Equal(value, zero), op.Less(op.Div(one, value), zero)))


def atan2(y, x):
    """atan2(y, x) in [-pi, pi], as C's: Atan(y / x), where both are zero y itself (a signed zero),
    where both are infinite Atan(+-1); then pi toward y's sign where x's sign bit is set."""
    zero, pi = op.CastLike(0.0, y), op.CastLike(math.pi, y)
    both_infinite = op.And(op.IsInf(y), op.IsInf(x))
    ratio = op.Where(both_infinite, op.Div(op.Sign(y), op.Sign(x)), op.Div(y, x))
    angle = op.Where(op.And(op.Equal(y, zero), op.Equal(x, zero)), y, op.Atan(ratio))
    return op.Where(_sign_bit(x), op.Add(angle, op.Where(_sign_bit(y), op.Neg(pi), pi)), angle)


TRANSLATIONS = {torch.ops.aten.atan2.default: atan2}
