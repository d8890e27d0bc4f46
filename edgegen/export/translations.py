"""ONNX translations of ATen ops that torch.onnx gets wrong or has none of, passed to every export
(torch.onnx.export's custom_translation_table). The gate checks the graphs they make against
PyTorch like any other.

- aten.atan2: torch.onnx writes Atan(y / x) with quadrant fixes keyed on y > 0 and x < 0, so a
  y of exactly 0 with x < 0 gave -pi where PyTorch gives +pi (the imaginary part of an rfft's DC
  bin is exactly 0: a phase of pi came out as -pi), atan2(0, -0) gave 0 for pi, and a NaN input
  came out 0. The gate's drawn feeds hold no exact zeros, so it passed (review 185). Written here
  as IEEE atan2: signed zeros and infinities as PyTorch (C's atan2) takes them. (A result of
  zero may come out +0 where PyTorch's is -0: ONNX Runtime's Where does not keep a zero's sign.)
- aten.scaled_dot_product_attention with a bool mask, below opset 23: torch.onnx's graph adds the
  float type's lowest value where the mask is False, not -inf, so a query row masked whole
  softmaxes to the uniform average of the values where PyTorch gives zeros (the exporter's NaN
  fix-up after the Softmax never fires). The gate draws no such row, so it passed. Written here
  as torch.onnx's own, with those rows set to zero. (From opset 23 ONNX's Attention op gives the
  zeros itself; the Jetson targets export at 18 and 21.)
- aten.scaled_dot_product_attention from opset 23, as ONNX's Attention op (as torch.onnx writes it),
  with a mask of one row for every query (nn.TransformerEncoder's and nn.MultiheadAttention's
  key-padding mask, [batch, 1, 1, keys]) or one column for every key expanded to a row per query
  and a column per key first: ONNX broadcasts it, but ONNX Runtime's CPU kernel fails on it
  ("inconsistent q_sequence_length (between attn_mask and Q)"), so such modules were refused at
  the default opset.
- aten.index_put and aten._unsafe_index_put with int32 indices: torchlib hands them to ScatterND,
  which takes int64 only, and onnx's checker refused the graph (torch.istft's overlap-add writes
  such indices). Written here with the indices cast to int64 first.
- aten.unfold_backward (overlap-add: torch.istft, nn.Fold-like code): torchlib has none, so torch
  decomposed it into one ScatterND per sample of the window, 2 x n_fft of them in an istft (1,024
  for a vocoder's n_fft of 512), with int32 indices the checker refused. Written here as sums of
  ceil(size / step) shifted blocks of the windows.
- aten.searchsorted (a rational-quadratic spline flow's bin lookup): torchlib has none, and the
  export was refused. Written here as the count of the sorted row's values below each value (at
  or below, with right=True), which is its index for a sorted row.
- aten._cdist_forward (torch.cdist: a VQ-VAE's nearest codebook vector): torchlib has none, and an
  export traced at 25 rows or fewer on both sides (past that torch.cdist itself takes a MatMul
  form, which torch.onnx writes) was refused. Written here as PyTorch computes it: for p=2 with
  rows that may pass 25 (a dynamic dim), from the squared norms and a MatMul, clamped at 0, as
  PyTorch's _euclidean_dist (the differences would take rows x codes x features of memory); with
  both sides fixed at 25 or fewer, or compute_mode donot_use_mm, and for other p, from the
  differences.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
from onnxscript import ir
from onnxscript import opset18 as op
from onnxscript import opset23 as op23
from onnxscript.function_libs.torch_lib.ops import common as common_ops
from onnxscript.function_libs.torch_lib.ops import core as torchlib_core
from onnxscript.function_libs.torch_lib.ops import nn as torchlib_nn
from onnxscript.function_libs.torch_lib.tensor_typing import TFloat, TReal
from onnxscript.onnx_types import BOOL, INT64, TensorType

ATTENTION_OPSET = 23   # ONNX's Attention op: a row masked whole comes out as zeros there


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


# the signature is torchlib's: torch.onnx reads which arguments are tensors and which attributes from it
def scaled_dot_product_attention(query: TFloat, key: TFloat, value: TFloat, attn_mask: Optional[TensorType] = None,
                                 dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
                                 enable_gqa: bool = False) -> TFloat:
    """torch.onnx's own graph of it, then zeros in each query row whose bool mask is False throughout."""
    attended = torchlib_nn.aten_scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal,
                                                             scale, enable_gqa)
    if attn_mask is None or attn_mask.dtype != ir.DataType.BOOL:
        return attended
    # 1 where a query row keeps a key, else 0, in the output's float type: ReduceMax takes no bool,
    # and TensorRT reduces no int8
    keeps_a_key = op.ReduceMax(op.CastLike(attn_mask, attended), op.Constant(value_ints=[-1]), keepdims=1)
    return op.Mul(attended, keeps_a_key)


def _broadcast_over_queries_or_keys(attn_mask, query, key) -> bool:
    """Whether the mask's query or key axis is 1 where the query's or key's may be more (the trace's
    shapes: a dim is a name or an int)."""
    return len(attn_mask.shape) >= 2 and any(attn_mask.shape[axis] == 1 and attends.shape[-2] != 1
                                             for axis, attends in ((-2, query), (-1, key)))


def attention(query: TFloat, key: TFloat, value: TFloat, attn_mask: Optional[TensorType] = None,
              dropout_p: float = 0.0, is_causal: bool = False, scale: Optional[float] = None,
              enable_gqa: bool = False) -> TFloat:
    """ONNX's Attention op, with a mask broadcast over the queries or keys expanded to their
    [queries, keys]; what it cannot take (dropout, other than 4 dims) as the form below opset 23."""
    if dropout_p != 0 or not len(query.shape) == len(key.shape) == len(value.shape) == 4:
        return scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    if attn_mask is not None and _broadcast_over_queries_or_keys(attn_mask, query, key):
        ones = op23.Constant(value_ints=[1] * (len(attn_mask.shape) - 2))
        queries, keys = op23.Shape(query, start=-2, end=-1), op23.Shape(key, start=-2, end=-1)
        attn_mask = op23.Expand(attn_mask, op23.Concat(ones, queries, keys, axis=0))
    # 4 dims: the head counts come from the shapes (GQA too), not attributes
    attended, _, _, _ = op23.Attention(query, key, value, attn_mask=attn_mask, scale=scale, is_causal=is_causal)
    return attended


def index_put(self: TReal, indices: Sequence[Optional[Union[INT64, BOOL]]], values: TReal,
              accumulate: bool = False) -> TReal:
    """torchlib's index_put, its integer indices cast to int64 (ScatterND's only index type)."""
    def as_int64(index):
        if index is None or index.dtype in (ir.DataType.INT64, ir.DataType.BOOL):
            return index
        cast = op.Cast(index, to=ir.DataType.INT64)
        cast.shape = index.shape   # torchlib reads the indices' ranks
        return cast

    return torchlib_core.aten_index_put(self, [as_int64(index) for index in indices], values, accumulate)


def unfold_backward(grad_in: TensorType, input_sizes: Sequence[INT64], dim: int, size: int, step: int) -> TensorType:
    """The sum, into a tensor of input_sizes, of the windows x.unfold(dim, size, step) takes:
    grad_in is input_sizes with its dim-th size the number of windows, and a last axis of size.
    Each window, padded to k = ceil(size / step) blocks of step, adds its j-th block to the
    output's block (window + j): k shifted copies summed, then cut (or padded) to the length."""
    rank = len(input_sizes)
    dim %= rank
    blocks = -(-size // step)
    others = [axis for axis in range(rank) if axis != dim]
    windows = op.Transpose(grad_in, perm=[*others, dim, rank])   # [...others, windows, size]
    if blocks * step != size:
        windows = op.Pad(windows, op.Constant(value_ints=[0] * (rank + 1) + [0] * rank + [blocks * step - size]))
    others_shape = op.Shape(windows, start=0, end=rank - 1)
    windows = op.Reshape(windows, op.Concat(op.Constant(value_ints=[-1]), op.Shape(windows, start=rank - 1, end=rank),
                                            op.Constant(value_ints=[blocks, step]), axis=0))   # [n, windows, k, step]
    summed = None
    for j in range(blocks):
        block = op.Pad(op.Gather(windows, op.Constant(value_int=j), axis=2),
                       op.Constant(value_ints=[0, j, 0, 0, blocks - 1 - j, 0]))   # to window j later
        summed = block if summed is None else op.Add(summed, block)
    flat = op.Reshape(summed, op.Constant(value_ints=[0, -1]))
    sizes = common_ops.merge_dims(input_sizes)
    length = op.Slice(sizes, op.Constant(value_ints=[dim]), op.Constant(value_ints=[dim + 1]))
    short = op.Max(op.Sub(length, op.Shape(flat, start=1, end=2)), op.Constant(value_ints=[0]))
    flat = op.Pad(flat, op.Concat(op.Constant(value_ints=[0, 0, 0]), short, axis=0))
    flat = op.Slice(flat, op.Constant(value_ints=[0]), length, op.Constant(value_ints=[1]))
    out = op.Reshape(flat, op.Concat(others_shape, length, axis=0))   # [...others, length]
    back = [others.index(axis) if axis != dim else rank - 1 for axis in range(rank)]
    # grad_in's other axes may be 1 where input_sizes' are not (torch.istft's window envelope, of
    # one row for the batch): PyTorch broadcasts them (review 192)
    return op.Expand(op.Transpose(out, perm=back), sizes)


_FLOAT_WIDTHS = {ir.DataType.FLOAT16: 16, ir.DataType.BFLOAT16: 16, ir.DataType.FLOAT: 32, ir.DataType.DOUBLE: 64}


def _promoted(a, b):
    """a and b in one type, as PyTorch compares them: a float over an integer, the wider float or int64."""
    if a.dtype == b.dtype:
        return a, b
    widths = (_FLOAT_WIDTHS.get(a.dtype, 0), _FLOAT_WIDTHS.get(b.dtype, 0))
    common = ir.DataType.INT64 if widths == (0, 0) else (a.dtype if widths[0] >= widths[1] else b.dtype)
    return tuple(value if value.dtype == common else op.Cast(value, to=common) for value in (a, b))


def searchsorted(sorted_sequence: TReal, self: TReal, out_int32: bool = False, right: bool = False,
                 side: Optional[str] = None, sorter: Optional[INT64] = None) -> INT64:
    """For each value, the number of the sorted row's values below it (right: at or below it): a
    1-d sorted_sequence serves every value, else its rows [..., K] the values' rows [..., M]."""
    if sorter is not None:   # refused, named by the export: sort the sequence before the call
        raise ValueError("searchsorted with a sorter is not translated; sort the sequence first")
    one_row = len(sorted_sequence.shape) == 1
    sorted_sequence, self = _promoted(sorted_sequence, self)   # int knots, float values: PyTorch compares them
    rows = sorted_sequence if one_row else op.Unsqueeze(sorted_sequence, op.Constant(value_ints=[-2]))
    values = op.Unsqueeze(self, op.Constant(value_ints=[-1]))
    # not above (at or above, left): a NaN value is past every knot, as PyTorch's search puts it
    below = op.Not(op.Greater(rows, values) if right or side == "right" else op.GreaterOrEqual(rows, values))
    counted = op.ReduceSum(op.Cast(below, to=ir.DataType.INT64), op.Constant(value_ints=[-1]), keepdims=0)
    return op.Cast(counted, to=ir.DataType.INT32) if out_int32 else counted


_CDIST_MM_ROWS = 25        # torch.cdist takes the MatMul form for p=2 past this many rows on either side
_CDIST_DONOT_USE_MM = 2    # compute_mode "donot_use_mm_for_euclid_dist"


def cdist(x1: TFloat, x2: TFloat, p: float = 2.0, compute_mode: Optional[int] = None) -> TFloat:
    """The p-norm distance of each row of x1 [..., P, M] to each row of x2 [..., R, M]: [..., P, R]."""
    rows = (x1.shape[-2], x2.shape[-2])
    by_difference = compute_mode == _CDIST_DONOT_USE_MM or all(isinstance(n, int) and n <= _CDIST_MM_ROWS for n in rows)
    if p == 2.0 and not by_difference:   # |a|^2 - 2 a.b + |b|^2, as PyTorch's _euclidean_dist
        last_two = list(range(len(x2.shape)))
        last_two[-2:] = last_two[-1], last_two[-2]
        squared = op.Add(op.Sub(op.ReduceSum(op.Mul(x1, x1), op.Constant(value_ints=[-1]), keepdims=1),
                                op.Mul(op.CastLike(2.0, x1), op.MatMul(x1, op.Transpose(x2, perm=last_two)))),
                         op.Transpose(op.ReduceSum(op.Mul(x2, x2), op.Constant(value_ints=[-1]), keepdims=1), perm=last_two))
        return op.Sqrt(op.Max(squared, op.CastLike(0.0, x1)))
    apart = op.Abs(op.Sub(op.Unsqueeze(x1, op.Constant(value_ints=[-2])), op.Unsqueeze(x2, op.Constant(value_ints=[-3]))))
    features = op.Constant(value_ints=[-1])
    if p == 0.0:
        return op.ReduceSum(op.CastLike(op.Not(op.Equal(apart, op.CastLike(0.0, x1))), x1), features, keepdims=0)
    if p == 1.0:
        return op.ReduceSum(apart, features, keepdims=0)
    if math.isinf(p):
        return op.ReduceMax(apart, features, keepdims=0)
    return op.Pow(op.ReduceSum(op.Pow(apart, op.CastLike(p, x1)), features, keepdims=0), op.CastLike(1.0 / p, x1))


def translation_table(opset: int) -> dict:
    """The translations an export at this opset passes torch.onnx, which takes one given it before its
    own at any opset."""
    attends = scaled_dot_product_attention if opset < ATTENTION_OPSET else attention
    return {torch.ops.aten.atan2.default: atan2, torch.ops.aten.scaled_dot_product_attention.default: attends,
            torch.ops.aten.index_put.default: index_put, torch.ops.aten._unsafe_index_put.default: index_put,
            torch.ops.aten.unfold_backward.default: unfold_backward, torch.ops.aten.searchsorted.Tensor: searchsorted,
            torch.ops.aten._cdist_forward.default: cdist}
