"""A user's own PyTorch module, none of the built-in families, through export -> runtime ->
bench -> optimize -> check, by the Python API and by the command line (docs/bring-your-own-model.md)."""

import contextlib
import json
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

import edgegen
from edgegen import export_pytorch
from edgegen.cli import main
from edgegen.errors import BackendError, ConfigError, EdgegenWarning, InputError, ManifestError, NonFiniteError, PackageError, \
    ParityError, ValidationError
from edgegen.families.generic.export import parse_dynamic
from edgegen.runtimes.feeds import read_feeds
from edgegen.runtimes.ort import OrtBinding

MODEL_PY = textwrap.dedent('''
    import torch
    import torch.nn as nn


    class Sharpen(nn.Module):
        """A fully convolutional image-to-image net with a mask input: none of edgegen's families."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                                      nn.ReLU(), nn.Conv2d(16, 1, 3, padding=1))

        def forward(self, image, mask):
            residual = self.body(torch.cat([image, mask], dim=1))
            return torch.sigmoid(image + residual * mask), residual.abs().mean(dim=(1, 2, 3))


    def make_model():
        torch.manual_seed(0)
        return Sharpen()
''')


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    (root / "model.py").write_text(MODEL_PY)
    rng = np.random.default_rng(0)
    example = {"image": rng.random((2, 1, 32, 48), dtype=np.float32),
               "mask": (rng.random((2, 1, 32, 48)) > 0.5).astype(np.float32)}
    np.savez(root / "example.npz", **example)
    namespace = {}
    exec(MODEL_PY, namespace)
    return root, namespace["make_model"], example


DYNAMIC = {"image": {0: "batch", 2: "height", 3: "width"}, "mask": {0: "batch", 2: "height", 3: "width"}}


def test_export_gates_at_sizes_it_did_not_trace_and_runs_without_torch(user_model, tmp_path):
    root, make_model, example = user_model
    pkg = export_pytorch(make_model(), example, tmp_path / "pkg", dynamic=DYNAMIC, output_names=["sharpened", "change"])
    manifest = json.loads((pkg / "edgegen.json").read_text())
    assert manifest["family"] == "generic"
    graph = manifest["graphs"]["model"]
    assert graph["inputs"][0]["shape"] == ["batch", 1, "height", "width"]
    fed = graph["validation"]["feeds"]
    assert graph["validation"]["passed"] and "batch=1, height=48, width=64" in fed and "batch=3, height=16, width=32" in fed
    # and at each dim's limit, one at a time: what TensorRT profiles are built to
    assert {"batch=16, height=32, width=48", "batch=1, height=128, width=48", "batch=1, height=32, width=192"} <= set(fed)
    assert manifest["config"]["dim_limits"] == {"batch": 16, "height": 128, "width": 192}
    assert manifest["config"]["example_dims"] == {"batch": 2, "height": 32, "width": 48}
    recorded = read_feeds(pkg / "held_out.npz")
    assert len(recorded) == 8 and {f["image"].shape[2] for f in recorded} == {16, 32, 48}
    # and down from the smallest size tried, halving, one dim at a time, to the least the module takes
    assert manifest["config"]["dim_minimums"] == {"batch": 1, "height": 1, "width": 1}
    below = ["batch=1, height=8, width=48", "batch=1, height=1, width=48", "batch=1, height=32, width=16",
             "batch=1, height=32, width=1"]
    assert set(below) <= set(fed)
    # and between the sizes tried a step apart: one more than traced matches, so any size is taken
    assert {"batch=1, height=33, width=48", "batch=1, height=32, width=49"} <= set(fed)
    assert manifest["config"]["dim_multiples"] == {}
    # and two dims equal, each pair at once: a branch on a square picture is tried
    assert {"batch=1, height=48, width=48", "batch=2, height=2, width=48", "batch=2, height=32, width=2"} <= set(fed)
    # a label per feed (not per output: the module returns 2), 3 limits, 4 heights and 5 widths below, 2 between, 3 equal
    assert len(fed) == len(recorded) + 3 + 4 + 5 + 2 + 3
    pipe = edgegen.load(pkg, backend="ort-cpu")
    image = np.random.default_rng(1).random((3, 1, 40, 24), dtype=np.float32)
    mask = np.ones_like(image)
    out = pipe(image=image, mask=mask)
    with torch.no_grad():
        ref_image, ref_change = make_model()(torch.from_numpy(image), torch.from_numpy(mask))
    np.testing.assert_allclose(out["sharpened"], ref_image.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["change"], ref_change.numpy(), atol=1e-5)
    assert pipe({"image": image.astype(np.float64), "mask": mask})["sharpened"].shape == (3, 1, 40, 24)  # float64 cast
    with pytest.raises(InputError, match="expected float32"):
        pipe(image=image.astype(np.int64), mask=mask)
    with pytest.raises(InputError, match="expected inputs"):
        pipe(image=image)
    script = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "onnx", "onnxscript"):
                    raise ImportError(name)
        sys.meta_path.insert(0, Block())
        import edgegen
        pipe = edgegen.load(sys.argv[1], backend="ort-cpu")
        feed = pipe.held_out_inputs()[0]
        print(sorted(pipe(feed)))
    """)
    result = subprocess.run([sys.executable, "-c", script, str(pkg)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['change', 'sharpened']"


def test_a_module_that_gives_nan_is_refused_and_nothing_is_written(tmp_path):
    class Log(torch.nn.Module):
        def forward(self, x):
            return torch.log(x) * 2

    class Double(torch.nn.Module):
        def forward(self, x):
            return x.double() * 2

    example = {"x": np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)}
    with pytest.raises(ConfigError, match=r"module: expected finite outputs on the example inputs, found NaN or Inf in "
                                          r"output 0 from PyTorch itself"):   # not blamed on the graph
        export_pytorch(Log(), example, tmp_path / "pkg")
    with pytest.raises(ConfigError, match=r"inputs \(--inputs\) 'x': expected finite numbers, found 1 NaN"):
        export_pytorch(Log(), {"x": np.where(example["x"] > 0.9, np.nan, example["x"]).astype(np.float32)}, tmp_path / "pkg")
    with pytest.raises(ConfigError, match=r"output 'output': expected one of float32, .*found float64 \(cast it in forward"):
        export_pytorch(Double(), example, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists() and not list(tmp_path.iterdir())


def test_an_epsilon_the_exporters_optimizer_drops_is_refused_not_shipped(tmp_path):
    """torch.onnx's optimizer takes `+ 1e-8` for `+ 0` and removes it: the graph gave NaN at a zero
    input where PyTorch gives 0, and the gate's random inputs passed it. clamp_min keeps it."""
    from edgegen.errors import ValidationError

    class PixelNorm(torch.nn.Module):
        def forward(self, x):
            return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)

    class Clamped(torch.nn.Module):
        def forward(self, x):
            return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True).clamp_min(1e-8))

    example = {"x": np.random.default_rng(0).standard_normal((2, 6)).astype(np.float32)}
    class RefusesZeros(Clamped):   # its own check: the zero run is skipped, not a traceback
        def forward(self, x):
            if not torch.compiler.is_compiling() and not x.abs().sum(dim=1).all():
                raise ValueError("an all-zero row")
            return super().forward(x)

    with pytest.raises(ValidationError, match=r"graph 'model': expected finite output at all-zero inputs, as PyTorch "
                                              r"gives, found NaN or Inf: most likely an epsilon of 1e-8 or less .*"
                                              r"clamp_min\(1e-8\)"):
        export_pytorch(PixelNorm(), example, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
    export_pytorch(RefusesZeros(), example, tmp_path / "refuses")
    pipe = edgegen.load(export_pytorch(Clamped(), example, tmp_path / "pkg"))
    assert np.array_equal(pipe(x=np.zeros((1, 6), np.float32))["output"], np.zeros((1, 6), np.float32))


@pytest.mark.parametrize("n_fft, hop", [(16, 4), (12, 5)])
def test_an_inverse_stft_exports_as_overlap_add_of_shifted_blocks(tmp_path, n_fft, hop):
    """torch.istft (a vocoder's last step): torch decomposed its overlap-add (aten.unfold_backward)
    into a ScatterND per sample of the window, 2 x n_fft of them, with int32 indices onnx's
    checker refused. A hop that does not divide n_fft pads the windows to whole hops."""
    import onnx

    class InverseStft(torch.nn.Module):
        def forward(self, magnitude, phase):
            return torch.istft(torch.polar(magnitude, phase), n_fft, hop_length=hop, window=torch.hann_window(n_fft))

    def spectrum(samples, seed):
        wave = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, samples)).astype(np.float32))
        spec = torch.stft(wave, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True)
        return {"magnitude": spec.abs().numpy(), "phase": spec.angle().numpy()}

    # a fixed batch of 2: the window's envelope is summed from one row and spread over the batch (review 192)
    dynamic = {"magnitude": {2: "frames"}, "phase": {2: "frames"}}
    with pytest.warns(EdgegenWarning, match="no input's axis 0 is dynamic"):
        pkg = export_pytorch(InverseStft(), spectrum(120, 0), tmp_path / "pkg", dynamic=dynamic)
    graph = onnx.load(pkg / "model.onnx")
    assert not [node for node in graph.graph.node if node.op_type == "ScatterND"] and len(graph.graph.node) < 120
    feeds = spectrum(97, 1)   # another number of frames, and samples past the last whole hop
    want = InverseStft()(*(torch.from_numpy(feeds[name]) for name in ("magnitude", "phase"))).numpy()
    np.testing.assert_allclose(edgegen.load(pkg)(**feeds)["output"], want, rtol=1e-4, atol=1e-5)


def test_windows_summed_back_along_any_axis_and_int32_indices_export(tmp_path):
    """aten.unfold_backward along a middle axis (windows of 5 every 3, the length past the last
    window kept as zeros), and a write at int32 indices, which torch.onnx gave ScatterND as they
    were (it takes int64 only: onnx's checker refused the graph)."""
    class Windows(torch.nn.Module):
        def forward(self, x, where):
            summed = torch.ops.aten.unfold_backward(x.unfold(1, 5, 3) * 2, list(x.shape), 1, 5, 3)
            written = torch.zeros_like(x)
            written[:, where] = x[:, :where.shape[0]]
            return summed, written

    rng = np.random.default_rng(0)
    example = {"x": rng.standard_normal((2, 17, 3)).astype(np.float32), "where": np.array([4, 0, 9], np.int32)}
    pipe = edgegen.load(export_pytorch(Windows(), example, tmp_path / "pkg",
                                       dynamic={"x": {0: "batch", 1: "length"}}))
    x = rng.standard_normal((3, 22, 3)).astype(np.float32)
    summed, written = Windows()(torch.from_numpy(x), torch.from_numpy(example["where"]))
    got = pipe(x=x, where=example["where"])
    np.testing.assert_allclose(got["output.0"], summed.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["output.1"], written.numpy())


@pytest.mark.parametrize("right", [False, True])
def test_searchsorted_finds_each_values_bin_as_pytorch_does_at_the_knots_too(tmp_path, right):
    """torch.searchsorted (a spline flow's bin lookup) was refused: torchlib has no function for it.
    A 1-d sequence serves every value, a sequence of rows each row of values; a value equal to a
    knot goes before it, or after it with right=True."""
    class Bins(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("knots", torch.linspace(-2, 2, 9))
            self.register_buffer("rows", torch.sort(torch.randn(3, 6, generator=torch.Generator().manual_seed(0)))[0])

        def forward(self, x):
            return (torch.searchsorted(self.knots, x, right=right),
                    torch.searchsorted(self.rows, x, right=right, out_int32=True),
                    torch.searchsorted(torch.arange(-3, 4), x, right=right))   # int knots, float values (review 193)

    example = {"x": np.random.default_rng(0).standard_normal((3, 12)).astype(np.float32) * 2}
    with pytest.warns(EdgegenWarning, match="no input's axis 0 is dynamic"):   # the rows' 3: x's too
        pipe = edgegen.load(export_pytorch(Bins(), example, tmp_path / "pkg", dynamic={"x": {1: "values"}}))
    x = np.concatenate([np.linspace(-3, 3, 13, dtype=np.float32)[None].repeat(3, 0),   # knots at -2, -1.5, ...
                        Bins().rows.numpy(), np.random.default_rng(1).standard_normal((3, 7)).astype(np.float32)], 1)
    want = Bins()(torch.from_numpy(x))
    got = pipe(x=x)
    for name, expected in zip(("output.0", "output.1", "output.2"), want):
        assert got[name].dtype == expected.numpy().dtype
        np.testing.assert_array_equal(got[name], expected.numpy())
    # a NaN (one computed inside a graph: the runtime refuses NaN inputs) is past every knot, as in PyTorch
    import onnxruntime

    x[:, 0] = np.nan
    session = onnxruntime.InferenceSession(str(pipe.package.graph_path("model")), providers=["CPUExecutionProvider"])
    for got, expected in zip(session.run(None, {"x": x}), Bins()(torch.from_numpy(x))):
        np.testing.assert_array_equal(got, expected.numpy())


def test_a_module_whose_own_weights_are_named_like_the_graph_modules_attributes_exports(tmp_path):
    """A VQ-VAE's codebook as `self.code`, a GNN's adjacency as `self.graph`, a submodule `meta`:
    torch.export sets each at its name on the graph module it builds, which has attributes of those
    names, and failed ("attribute 'code' already exists")."""
    class Quantize(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.code = torch.nn.Parameter(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)))
            self.register_buffer("graph", torch.eye(8))
            self.meta = torch.nn.Linear(8, 8)

        def forward(self, z):
            nearest = torch.cdist(z, self.code[None].expand(z.shape[0], -1, -1)).argmin(-1)
            return self.meta(torch.nn.functional.embedding(nearest, self.code) @ self.graph), nearest

    example = {"z": np.random.default_rng(0).standard_normal((2, 10, 8)).astype(np.float32)}
    quantize = Quantize().eval()
    pipe = edgegen.load(export_pytorch(quantize, example, tmp_path / "pkg", dynamic={"z": {0: "batch", 1: "tokens"}}))
    z = np.random.default_rng(1).standard_normal((3, 7, 8)).astype(np.float32)
    with torch.no_grad():
        vectors, nearest = quantize(torch.from_numpy(z))
    got = pipe(z=z)
    np.testing.assert_array_equal(got["output.1"], nearest.numpy())
    np.testing.assert_allclose(got["output.0"], vectors.numpy(), rtol=1e-5, atol=1e-5)
    assert [name for name, _ in quantize.named_parameters()] == ["code", "meta.weight", "meta.bias"]   # the module's own

    class Adjacency(torch.nn.Module):   # a plain tensor attribute alone (review 193)
        def __init__(self):
            super().__init__()
            self.graph = torch.eye(8) * 2

        def forward(self, z):
            return z @ self.graph

    pipe = edgegen.load(export_pytorch(Adjacency(), example, tmp_path / "plain", dynamic={"z": {0: "batch", 1: "tokens"}}))
    np.testing.assert_array_equal(pipe(z=z)["output"], z * 2)


@pytest.mark.parametrize("p, dynamic", [(2.0, True), (2.0, False), (1.0, True), (float("inf"), False), (3.0, True)])
def test_cdist_gives_pytorchs_distances_for_each_norm(tmp_path, p, dynamic):
    """torch.cdist (a VQ-VAE's nearest code) traced at 25 rows or fewer on both sides was refused
    (aten._cdist_forward: torchlib has no function for it). For p=2 the graph takes PyTorch's
    MatMul form where the rows are dynamic, the differences where both sides are fixed."""
    class Distances(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("codebook", torch.randn(12, 6, generator=torch.Generator().manual_seed(0)))

        def forward(self, z):
            return torch.cdist(z, self.codebook, p=p)

    rng = np.random.default_rng(0)
    dims = {"z": {0: "tokens"}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EdgegenWarning)   # a fixed batch, said at export
        pipe = edgegen.load(export_pytorch(Distances(), {"z": rng.standard_normal((8, 6)).astype(np.float32)},
                                           tmp_path / "pkg", dynamic=dims))
    z = rng.standard_normal((30 if dynamic else 8, 6)).astype(np.float32)   # past 25: PyTorch's MatMul form
    want = Distances()(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(pipe(z=z)["output"], want, rtol=1e-4, atol=1e-4)


def test_a_likelihood_from_torch_distributions_exports_without_their_argument_checks(tmp_path):
    """Normal(mu, sigma).log_prob(x) (a VAE's or a flow's likelihood, an anomaly score) checks its
    arguments' values, which torch.export cannot branch on: the trace failed on a data-dependent
    guard. The checks are off while an export runs, and back after: Bernoulli's support (0 and 1)
    the gate's drawn feeds leave, in PyTorch too (review 193)."""
    from torch.distributions import Bernoulli, Distribution, Normal

    class Likelihood(torch.nn.Module):
        def forward(self, x, mu, log_sigma, pixels):
            return (Normal(mu, log_sigma.exp()).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(mu).sum(-1)
                    + Bernoulli(logits=mu).log_prob(pixels).sum(-1))

    rng = np.random.default_rng(0)
    example = {name: rng.standard_normal((3, 5)).astype(np.float32) for name in ("x", "mu", "log_sigma")}
    example["pixels"] = (example["x"] > 0).astype(np.float32)
    checked = Distribution._validate_args
    pipe = edgegen.load(export_pytorch(Likelihood(), example, tmp_path / "pkg"))
    assert Distribution._validate_args == checked
    feeds = {name: rng.standard_normal((2, 5)).astype(np.float32) for name in example}
    feeds["pixels"] = (feeds["pixels"] > 0).astype(np.float32)
    want = Likelihood()(*(torch.from_numpy(feeds[name]) for name in ("x", "mu", "log_sigma", "pixels"))).numpy()
    np.testing.assert_allclose(pipe(**feeds)["output"], want, rtol=1e-5, atol=1e-5)


def test_atan2_gives_pytorchs_angles_at_signed_zeros_and_infinities(tmp_path):
    """torch.onnx wrote atan2(0, x < 0) as -pi where PyTorch gives pi (an rfft's DC bin has an
    imaginary part of exactly 0), and the gate's drawn feeds held no exact zero (review 185)."""
    import onnxruntime

    class Phase(torch.nn.Module):
        def forward(self, im, re):
            return torch.atan2(im, re)

    rng = np.random.default_rng(0)
    example = {"im": rng.standard_normal((2, 8)).astype(np.float32), "re": rng.standard_normal((2, 8)).astype(np.float32)}
    pipe = edgegen.load(export_pytorch(Phase(), example, tmp_path / "pkg"))
    assert pipe.package.manifest.graphs["model"].extra["validation"]["inputs_zeroed"] == ["im", "re"]
    assert np.array_equal(pipe(im=np.zeros((1, 8), np.float32), re=-np.ones((1, 8), np.float32))["output"],
                          np.full((1, 8), np.pi, np.float32))
    # every pair of special values, as the graph computes them (the runtime refuses infinite and NaN inputs)
    values = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, 1e-30, -1e-30, 3.5, -2.25, 1e30, np.nan], np.float32)
    im, re = (grid.reshape(-1, 8) for grid in np.meshgrid(values, values))   # 144 pairs, 18 rows of 8
    session = onnxruntime.InferenceSession(str(pipe.package.graph_path("model")), providers=["CPUExecutionProvider"])
    got = session.run(None, {"im": im, "re": re})[0]
    want = torch.atan2(torch.from_numpy(im), torch.from_numpy(re)).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    # pi against -pi: the sign; a zero's (atan2(-0, 1) is -0) ONNX Runtime's Where does not keep, whichever it picks
    signed = (want != 0) & ~np.isnan(want)   # (NaN where either is NaN: assert_allclose's check)
    assert np.array_equal(np.signbit(got[signed]), np.signbit(want[signed]))
    # torch.onnx's own translation: the gate now tries each input holding zeros, and refuses it
    from edgegen.errors import ParityError

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("edgegen.export.onnx_export.translation_table", lambda opset: {})
        with pytest.raises(ParityError, match=r"does not reproduce PyTorch where an input holds exact zeros .* package "
                                              r"not written: graph 'model' output @ batch=\d+, a value of each row of im "
                                              r"zero: max abs 6.28"):
            export_pytorch(Phase(), example, tmp_path / "wrong")

        class PackedPhase(torch.nn.Module):   # real and imaginary parts side by side: the zeros reach both (review 187)
            def forward(self, z):
                return torch.atan2(z[..., 1], z[..., 0])

        with pytest.raises(ParityError, match=r"a value of each row of z zero: max abs 6.28"):
            export_pytorch(PackedPhase(), {"z": rng.standard_normal((2, 5, 2)).astype(np.float32)}, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()

    class Experts(torch.nn.Module):   # a router without bias, as Mixtral's: an input all zero ties its scores
        def __init__(self):
            super().__init__()
            self.router, self.experts = torch.nn.Linear(8, 4, bias=False), torch.nn.Linear(8, 4 * 8)

        def forward(self, x):
            weights, chosen = self.router(x).softmax(-1).topk(2, dim=-1)
            outputs = self.experts(x).unflatten(-1, (4, 8))
            return (weights[..., None] * outputs.gather(1, chosen[..., None].expand(-1, -1, 8))).sum(1)

    class Largest(torch.nn.Module):   # a top-k of the input itself: two zeros in a row would tie
        def forward(self, x, y):
            return y.gather(-1, x.topk(6, dim=-1).indices)

    torch.manual_seed(0)   # tied top-k picks differ between the engines, both right: not refused (reviews 186, 187)
    export_pytorch(Experts(), {"x": example["im"]}, tmp_path / "experts")
    export_pytorch(Largest(), {"x": example["im"], "y": example["re"]}, tmp_path / "largest")


def test_an_output_dim_the_exporter_declared_fixed_and_the_graph_varies_is_named(tmp_path):
    """An LSTM's output was declared [batch, 7, 8] (its trace's 7 steps) while the graph gives 10
    at 10 steps: info, pipe.outputs and TensorRT read a fixed length (review 185). A graph declared
    as the exporter did (an LSTM's export takes 40 s), named after the gate's feeds."""
    import onnx
    from onnx import TensorProto, helper

    from edgegen.families.generic.export import _with_output_dims_named
    from edgegen.package import TensorSpec
    from edgegen.runtimes.ort import OrtSession

    declared = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 7, 4]),
                helper.make_tensor_value_info("twice.0", TensorProto.FLOAT, ["batch", 14, 4]),
                helper.make_tensor_value_info("last", TensorProto.FLOAT, ["batch", 4])]
    # the traced size held in an inner annotation too, from which ONNX Runtime inferred [batch, 14, 4] again
    inner = [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", 14, 4])]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"]), helper.make_node("Concat", ["x", "x"], ["doubled"], axis=1),
         helper.make_node("Identity", ["doubled"], ["twice.0"]),
         helper.make_node("ReduceMax", ["x"], ["last"], axes=[1], keepdims=0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])], declared, value_info=inner)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "model.onnx"))
    specs = (TensorSpec("x", "float32", ("batch", "seq", 4)),)
    outputs = (TensorSpec("out", "float32", ("batch", 7, 4)), TensorSpec("twice.0", "float32", ("batch", 14, 4)),
               TensorSpec("last", "float32", ("batch", 4)))
    session = OrtSession("model", tmp_path / "model.onnx", specs, outputs)
    feeds = [{"x": np.ones((b, t, 4), np.float32)} for b, t in ((2, 7), (1, 10), (3, 7), (2, 7))]
    path = tmp_path / "model.onnx"
    assert _with_output_dims_named(model, session, specs, feeds[2:], path) is None   # one seq size: none varies
    renamed = _with_output_dims_named(model, session, specs, feeds, path)
    named = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in renamed.graph.output]
    assert named == [["batch", "seq", 4], ["batch", "twice_0_dim1", 4], ["batch", 4]]
    # written, and a session with those outputs opens it (load compares them with ONNX Runtime's inference)
    from edgegen.families.generic.export import value_spec

    reopened = OrtSession("model", path, specs, tuple(value_spec(v) for v in onnx.load(str(path)).graph.output))
    assert reopened.run({"x": np.ones((1, 10, 4), np.float32)})["twice.0"].shape == (1, 20, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_int8_of_a_graph_with_no_layer_between_its_first_and_last_is_refused(tmp_path):
    """Its first and last weighted layers stay float: the "int8" variant was the fp32 graph,
    written with a PSNR of inf, and bench timed it as int8."""
    from edgegen.optimize import optimize_package

    class TwoLayers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((2, 8)).astype(np.float32)} for _ in range(4)]
    pkg = export_pytorch(TwoLayers(), feeds[0], tmp_path / "pkg", held_out=feeds)
    record = optimize_package(pkg, "int8", progress=lambda *a, **k: None)["model"]
    assert record["refused"] == ("nothing to quantize: int8 keeps a graph's first and last weighted layers (Conv, "
                                 "ConvTranspose, Gemm, MatMul) in float and quantizes the Conv, Gemm, MatMul between "
                                 "them; this one has 2 weighted, none of them between")
    assert "file" not in json.loads((pkg / "edgegen.json").read_text())["variants"]["int8"]["model"]   # why, no graph


def test_values_the_graph_cannot_take_are_an_input_error_in_one_line(tmp_path, capsys):
    """Right names, types and shapes, but a label past the embedding's table: refused as PyTorch's
    embedding refuses it, negative ones too (ONNX's Gather counts those from the end, and gave a row
    the module never would), in one line on the command line. Where the graph itself refuses a
    value, ONNX Runtime's refusal comes back as edgegen's InputError."""
    class Labelled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.table = torch.nn.Embedding(10, 4)

        def forward(self, label):
            return self.table(label) * 2

    pkg = export_pytorch(Labelled(), {"label": np.array([1, 7], dtype=np.int64)}, tmp_path / "pkg")
    pipe = edgegen.load(pkg)
    assert pipe.config.index_limits == {"label": 10}
    assert pipe(label=np.array([9, 0], dtype=np.int64))["output"].shape == (2, 4)
    for label, found in (([20], "20..20"), ([3, -1], "-1..3")):
        with pytest.raises(InputError, match=rf"^input 'label': expected indices into an embedding of 10 rows \(0 to 9\), "
                                             rf"found {found}$"):
            pipe(label=np.array(label, dtype=np.int64))
    np.savez(tmp_path / "bad.npz", label=np.array([-1], dtype=np.int64))
    assert main(["generate", str(pkg), "--inputs", str(tmp_path / "bad.npz"), "--out", str(tmp_path / "o.npz")]) == 2
    err = capsys.readouterr().err
    assert "edgegen: error: input 'label': expected indices into an embedding" in err and "Traceback" not in err
    assert not (tmp_path / "o.npz").exists()
    # optimize --inputs: refused as the call is, where -1 was calibrated and gated on (a variant judged
    # on rows the runtime refuses) and 20 was ONNX Runtime's Gather error
    for label in (-1, 20):
        np.savez(tmp_path / "feeds.npz", **{f"{i}/label": np.array([label, 2], dtype=np.int64) for i in range(2)})
        assert main(["optimize", str(pkg), "--precision", "fp16", "--inputs", str(tmp_path / "feeds.npz"),
                     "--no-speed-check"]) == 2
        assert (f"feed 0: input 'label': expected indices into an embedding of 10 rows (0 to 9), found "
                f"{min(label, 2)}..{max(label, 2)}") in capsys.readouterr().err
    assert not edgegen.load(pkg).package.manifest.variants
    with pytest.raises(InputError, match=r"graph 'model': expected input values it can compute on, found ONNX Runtime "
                                         r"refusing them: .*idx=20"):
        pipe.session.run({"label": np.array([20], dtype=np.int64)})

    # a held-out feed the module cannot take is named as that feed, not blamed on sizes the trace did not see
    with pytest.raises(ValidationError, match=r"failed on held-out feed 1 \(held_out, --held-out\) \(IndexError: index "
                                              r"out of range in self\); check its values and sizes$"):
        export_pytorch(Labelled(), {"label": np.array([1, 7])}, tmp_path / "held",
                       held_out=[{"label": np.array([2, 3])}, {"label": np.array([20, 3])}])
    assert not (tmp_path / "held").exists()

    # values the cast to the graph's dtype would change: an int32 label past int32's range (it wrapped
    # to 1 and ran), a float64 past float32's (it became inf, then was blamed on the graph)
    narrow = edgegen.load(export_pytorch(Labelled(), {"label": np.array([1, 7], np.int32)}, tmp_path / "int32"))
    assert narrow(label=np.array([2], np.int64))["output"].shape == (1, 4)   # a cast that keeps the value: taken
    with pytest.raises(InputError, match=r"input 'label': expected integers int32 holds \(-2147483648 to 2147483647\), "
                                         r"found 1..4294967297$"):
        narrow(label=np.array([1, 2**32 + 1], np.int64))

    # The same failure through IO binding, which generation loops (GPT's cache, WaveNet's queues)
    # run: its error has lost ONNX Runtime's status code, so it is a BackendError, in one line too
    binding = OrtBinding(pipe.sessions["model"])
    label, output = np.array([20], dtype=np.int64), np.zeros((1, 4), np.float32)
    binding.input("label", label)
    binding.output("output", output)
    with pytest.raises(BackendError, match=r"graph 'model': expected ONNX Runtime to run it, found it failing: "
                                           r"Non-zero status code .*idx=20 must be within the inclusive range \[-10,9\]$"):
        binding.run()


def test_only_an_embeddings_indices_are_bounded_and_plain_indexing_keeps_pythons_negatives(tmp_path):
    """An nn.Embedding reached through a cast is bounded by its table; `table[ids]` indexes as Python
    does in PyTorch (-1 is the last row), and so in the graph: left alone."""
    class Both(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.embedding = torch.nn.Embedding(12, 3)
            self.table = torch.nn.Parameter(torch.randn(7, 3))

        def forward(self, ids, rows):
            return self.embedding(ids.long()) + self.table[rows]

    module = Both()
    example = {"ids": np.array([[1, 2], [3, 4]], np.int32), "rows": np.array([[0, 1], [5, 6]])}
    pipe = edgegen.load(export_pytorch(module, example, tmp_path / "pkg"))
    assert pipe.config.index_limits == {"ids": 12}
    feeds = {"ids": np.array([[11, 0]], np.int32), "rows": np.array([[-1, -7]])}
    with torch.inference_mode():
        expected = module(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    np.testing.assert_allclose(pipe(feeds)["output"], expected, rtol=1e-6)
    with pytest.raises(InputError, match=r"input 'ids': expected indices into an embedding of 12 rows"):
        pipe(ids=np.array([[12, 0]], np.int32), rows=np.array([[0, 0]]))

    class FloatIds(torch.nn.Module):   # floats cast to long: truncated toward 0, as PyTorch takes them
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(10, 3)

        def forward(self, x):
            return self.embedding(x.long())

    floats = edgegen.load(export_pytorch(FloatIds(), {"x": np.array([[1.0, 2.0], [3.0, 9.0]], np.float32)},
                                         tmp_path / "floats"))
    assert floats(x=np.array([[-0.5, 9.5]], np.float32))["output"].shape == (1, 2, 3)
    with pytest.raises(InputError, match=r"expected indices into an embedding of 10 rows \(0 to 9\), found -0.5..10.2$"):
        floats(x=np.array([[-0.5, 10.2]], np.float32))


def test_export_refuses_bad_arguments_with_their_names(user_model, tmp_path):
    _, make_model, example = user_model
    with pytest.raises(ConfigError, match=r"dynamic \(--dynamic\): expected input names among \['image', 'mask'\], found \['img'\]"):
        export_pytorch(make_model(), example, tmp_path / "a", dynamic={"img": {0: "batch"}})
    with pytest.raises(ConfigError, match=r"dynamic \(--dynamic\) 'image': expected axes 0 to 3, found \[7\]"):
        export_pytorch(make_model(), example, tmp_path / "b", dynamic={"image": {7: "batch"}})
    with pytest.raises(ConfigError, match=r"dynamic \(--dynamic\) 'image': expected dim names of letters, digits and _ "
                                          r"\(batch, height_2\), found \['batch-size'\]"):
        export_pytorch(make_model(), example, tmp_path / "b", dynamic={"image": {0: "batch-size"}})
    with pytest.raises(ConfigError, match="expected the same size on every input"):
        export_pytorch(make_model(), example, tmp_path / "c", dynamic={"image": {2: "side"}, "mask": {3: "side"}})
    # torch.export's other forms of dynamic shapes: refused as what they are, not a Python error
    form = r"expected \{axis: dim name\}, such as \{'image': \{0: 'batch', 2: 'height'\}\}"
    for given, found in ((["batch", None, "h", "w"], r"a list \(\['batch', None, 'h', 'w'\]\)"), ("batch", r"a str \('batch'\)"),
                         ({0, 2}, r"a set \(\{0, 2\}\)")):
        with pytest.raises(ConfigError, match=rf"^dynamic \(--dynamic\) 'image': {form}, found {found}$"):
            export_pytorch(make_model(), example, tmp_path / "c", dynamic={"image": given})
    with pytest.raises(ConfigError, match=rf"^dynamic \(--dynamic\) 'image': {form} \(leave a static axis out\), found "
                                          r"1: None$"):   # {1: None} named a dim "None"
        export_pytorch(make_model(), example, tmp_path / "c", dynamic={"image": {0: "batch", 1: None}})
    with pytest.raises(ConfigError, match=r"^dynamic \(--dynamic\): expected \{input name: \{axis: dim name\}\}, found a "
                                          r"list$"):
        export_pytorch(make_model(), example, tmp_path / "c", dynamic=[{0: "batch"}])
    with pytest.raises(ConfigError, match=r"output_names \(--output-name\): expected names unlike each other and the inputs'"):
        export_pytorch(make_model(), example, tmp_path / "e", output_names=["image", "change"])
    with pytest.raises(ValidationError, match=r"the exporter produced \['float32\[batch, 4, 16\]'\]: the module fixed "
                                              r"dim 'ch' of input 'x' \(axis 1\) at 4 \(a layer that takes one size there"):
        torch.manual_seed(0)   # a convolution's channels named dynamic: the trace fixes them, said as such
        export_pytorch(torch.nn.Conv1d(4, 8, 3), {"x": np.zeros((2, 4, 16), np.float32)}, tmp_path / "ch",
                       dynamic={"x": {0: "batch", 1: "ch"}})

    class TwoInputs(torch.nn.Module):   # x's rows meet cond's: a batch named on x alone is fixed by cond's
        def forward(self, x, cond):
            return x.sum(1, keepdim=True) + cond

    with pytest.raises(ValidationError, match=r"the module fixed dim 'batch' of input 'x' \(axis 0\) at 2 \(.*, or another "
                                              r"input it meets that keeps that size static; name it there too: --dynamic "
                                              r"cond:0=batch, dynamic=\{'cond': \{0: 'batch'\}, \.\.\.\}\)"):
        export_pytorch(TwoInputs(), {"x": np.ones((2, 8), np.float32), "cond": np.ones((2, 4), np.float32)},
                       tmp_path / "two", dynamic={"x": {0: "batch"}})
    with pytest.raises(ConfigError, match="module: expected a torch.nn.Module"):
        export_pytorch(lambda x: x, example, tmp_path / "d")
    with pytest.raises(ConfigError, match=r"module: expected its weights on the CPU \(export module.cpu\(\); the package "
                                          r"runs on any device\), found them on meta$"):   # as on cuda:0
        export_pytorch(make_model().to("meta"), example, tmp_path / "d")
    # refused before the tracing, so no package can name an opset its graph is not
    for opset in (7, 99, 0):
        with pytest.raises(ConfigError, match=rf"opset: expected 18 to 23 .*found {opset}$"):
            export_pytorch(make_model(), example, tmp_path / "f", opset=opset)
    for atol in (-1.0, float("nan"), float("inf"), np.float32(-1)):
        with pytest.raises(ConfigError, match=r"atol \(--atol\): expected a tolerance of 0 or more"):
            export_pytorch(make_model(), example, tmp_path / "g", atol=atol)
    with pytest.raises(ConfigError, match=r"inputs \(--inputs\): expected example arrays by input name \(a dict\), found list"):
        export_pytorch(make_model(), list(example.values()), tmp_path / "h")
    with pytest.raises(ConfigError, match=r"inputs \(--inputs\): expected names without '/' \(an .npz of several feeds "
                                          r"keys them N/NAME\), found \['0/image'\]"):
        export_pytorch(make_model(), {"0/image": example["image"], "mask": example["mask"]}, tmp_path / "h")
    # output names and dim limits: refused before the export, not split into letters or cut to ints
    with pytest.raises(ConfigError, match=r"output_names \(--output-name\): expected a list of names, found 'clean'"):
        export_pytorch(make_model(), example, tmp_path / "i", output_names="clean")
    with pytest.raises(ConfigError, match=r"output_names \(--output-name\): expected 2 name\(s\), one per tensor forward returns, found 1"):
        export_pytorch(make_model(), example, tmp_path / "j", output_names=["clean"])
    with pytest.raises(ConfigError, match=r"dim_limits \(--limit\): expected dynamic dims of the inputs \(batch\), found \['depth'\]"):
        export_pytorch(make_model(), example, tmp_path / "k", dim_limits={"depth": 5})
    for size in ("big", 100.7, True, 1):
        with pytest.raises(ConfigError, match=rf"dim_limits \(--limit\) 'batch': expected a whole number of at least the "
                                              rf"traced size 2, found {re.escape(repr(size))}"):
            export_pytorch(make_model(), example, tmp_path / "l", dim_limits={"batch": size})
    assert not list(tmp_path.iterdir())


def test_dynamic_options_are_read_per_input_and_axis_and_a_renamed_axis_is_refused():
    assert parse_dynamic(None) is None
    assert parse_dynamic(["image:0=batch", "image:2=height", "a:b:1=n", "image:0=batch"]) == {
        "image": {0: "batch", 2: "height"}, "a:b": {1: "n"}}   # an input name may hold a colon
    for spec in ("image=batch", "image:x=batch", ":0=batch", "image:0="):
        with pytest.raises(ConfigError, match=rf"--dynamic '{spec}': expected INPUT:AXIS=NAME, e.g. image:0=batch$"):
            parse_dynamic([spec])
    with pytest.raises(ConfigError, match=r"--dynamic 'image:0=n': expected one name per axis, found image:0 named "
                                          r"'batch' already$"):
        parse_dynamic(["image:0=batch", "image:0=n"])
    assert parse_dynamic(["none"]) == {}   # a streaming model's batch of one: every shape as the example's
    with pytest.raises(ConfigError, match=r"--dynamic none: expected alone .*, found it with image:0=batch$"):
        parse_dynamic(["none", "image:0=batch"])


def test_a_dynamic_that_names_no_axis_0_warns_that_the_rows_are_fixed(user_model, tmp_path, capsys):
    """`dynamic` replaces the default batch: naming only the height fixes the rows at the example's
    2, which is said with the way to keep a batch; one row fixed (a model for batch 1) is not."""
    import warnings

    from edgegen.errors import EdgegenWarning

    _, make_model, example = user_model
    heights = {"image": {2: "height"}, "mask": {2: "height"}}
    with pytest.warns(EdgegenWarning, match=r"no input's axis 0 is dynamic, so the package takes exactly the example's "
                                            r"rows \(image 2, mask 2\); name it to keep a batch: --dynamic image:0=batch"):
        export_pytorch(make_model(), example, tmp_path / "rows", dynamic=heights)
    assert [s.shape for s in edgegen.load(tmp_path / "rows").inputs] == [(2, 1, "height", 48)] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)
        export_pytorch(make_model(), {k: v[:1] for k, v in example.items()}, tmp_path / "one", dynamic=heights)
        export_pytorch(make_model(), example, tmp_path / "batch", dynamic={"image": {0: "batch", 2: "height"},
                                                                           "mask": {0: "batch", 2: "height"}})
        export_pytorch(make_model(), example, tmp_path / "fixed", dynamic={})   # every shape fixed, as asked
    # bench times what each call runs: the 2 fixed rows (it said batch 1, and half the samples/s)
    assert main(["bench", str(tmp_path / "rows"), "--iters", "2", "--warmup", "0", "--no-energy", "--json",
                 str(tmp_path / "rows.json")]) == 0
    report = json.loads((tmp_path / "rows.json").read_text())
    assert report["batch"] == 2
    assert report["results"][0]["throughput_per_s"] == pytest.approx(2e3 / report["results"][0]["mean_ms"], rel=0.02)
    assert main(["bench", str(tmp_path / "rows"), "--iters", "2", "--batch", "4"]) == 2
    assert "--batch 4: expected a package whose graphs have a dynamic dim named 'batch', found none (image " \
        "float32[2, 1, height, 48]; mask float32[2, 1, height, 48])" in capsys.readouterr().err
    # past the batch the export gated at (16): timed, and said, as --shapes past a limit is
    assert main(["bench", str(tmp_path / "batch"), "--iters", "1", "--warmup", "0", "--no-energy", "--batch", "20"]) == 0
    assert "--batch 20: beyond the largest batch the package declares, which its TensorRT profiles are built to " \
        "(16); timed as asked" in capsys.readouterr().err
    # bench's own default batch (8, from Python) stays within a package gated only up to 4: no warning of a flag not given
    from edgegen.bench import bench_package

    small = export_pytorch(make_model(), example, tmp_path / "small", dim_limits={"batch": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)
        assert bench_package(small, iters=1, warmup=0, energy=False)["batch"] == 4
    assert main(["check", str(tmp_path / "batch"), "--profile", "batch=1:4:64"]) == 0   # and an engine's profile
    assert "--profile batch: MAX 64 is beyond the largest batch the package declares (16); taken as asked" \
        in capsys.readouterr().err


class _Difference(torch.nn.Module):
    def forward(self, a, b, c=None):
        return a - 2 * b if c is None else a - 2 * b + c


class _KeywordOnly(torch.nn.Module):
    def forward(self, x, *, bias):
        return x + bias


def test_inputs_named_as_forwards_parameters_are_bound_by_name(tmp_path):
    """An .npz saved in another order than forward's (b before a) was fed positionally: the
    package computed b - 2a, and the check, calling PyTorch the same way, passed. Names that are
    forward's parameters are put in its order; a skipped one or a keyword-only one is refused."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2))
    path = export_pytorch(_Difference(), {"b": b, "a": a}, tmp_path / "diff")
    pipe = edgegen.load(path)
    assert [spec.name for spec in pipe.package.graphs["model"].inputs] == ["a", "b"]
    np.testing.assert_allclose(pipe(a=a, b=b)["output"], a - 2 * b, atol=1e-6)
    with pytest.raises(ConfigError, match=r"inputs \(--inputs\): expected forward's first 2 parameters \(a, b\), found a, c: b would "
                                          r"take the array named c"):
        export_pytorch(_Difference(), {"a": a, "c": b}, tmp_path / "skipped")
    with pytest.raises(ConfigError, match=r"inputs \(--inputs\): expected forward's positional parameters .*found bias keyword-only"):
        export_pytorch(_KeywordOnly(), {"x": a, "bias": b}, tmp_path / "keyword")
    with pytest.raises(ConfigError, match=r"expected names that are all forward's parameters \(a, b, c\) or none of them "
                                          r"\(then they go in the file's order\), found b among them and image not"):
        export_pytorch(_Difference(), {"b": b, "image": a}, tmp_path / "mixed")   # b would have been fed as a
    with pytest.raises(ConfigError, match=r"expected at most an array for each of forward's parameters \(a, b, c\), "
                                          r"found 4 arrays, image not among them \(leave it out of the example\)$"):
        export_pytorch(_Difference(), {"a": a, "b": b, "c": b, "image": a}, tmp_path / "extra")   # one too many
    with pytest.raises(ConfigError, match=r"expected names that are all forward's parameters \(a, b, c\) or none"):
        export_pytorch(_Difference(), {"a": a, "b": b, "image": a}, tmp_path / "extra")   # image for c? a mix, said so

    class Returns(torch.nn.Module):   # forward returning what a graph cannot: named, with the way out
        def __init__(self, result):
            super().__init__()
            self.result = result

        def forward(self, x):
            return self.result(x)

    for result, said in ((lambda x: (x, None), r"a tuple with NoneType at position 1 \(return only tensors, and name "
                                               r"them with output_names \(--output-name\)\)"),
                         (lambda x: {"clean": x, "noise": -x}, r"a dict \(clean, noise\): return its tensors as a tuple "
                                                              r"and name them with output_names \(--output-name\)")):
        with pytest.raises(ConfigError, match=rf"module: expected forward to return a tensor or a tuple of tensors, "
                                              rf"found {said}$"):
            export_pytorch(Returns(result), {"x": a}, tmp_path / "returns")
    path = export_pytorch(_Difference(), {"first": a, "second": b}, tmp_path / "own")   # names of the user's: in order
    np.testing.assert_allclose(edgegen.load(path)(first=a, second=b)["output"], a - 2 * b, atol=1e-6)


class _Loudness(torch.nn.Module):
    """A spectrogram's power, which is never negative, and a temperature, which is positive."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv1d(4, 2, 3, padding=1)

    def forward(self, power, temperature):
        return self.conv(torch.log1p(torch.sqrt(power))) / temperature.sqrt()


class _Standardized(torch.nn.Module):
    def forward(self, x):
        return (x - x.mean(0)) / x.std(0)   # NaN for a batch of one row, in PyTorch itself


def test_the_gate_draws_inputs_on_the_side_of_zero_the_given_values_lie(tmp_path):
    """An example of zeros and a temperature of 0.7 were drawn as N(0, 1) and N(0.7, 1): sqrt of a
    negative power gave PyTorch's own NaN, which the gate blamed on the graph. A constant is drawn
    near it, on its side of 0; held-out feeds steer the draws too; where PyTorch's own output is NaN
    the refusal says so, naming the feed."""
    example = {"power": np.zeros((2, 4, 10), np.float32), "temperature": np.array(0.7, np.float32)}
    path = export_pytorch(_Loudness(), example, tmp_path / "zeros", dynamic={"power": {0: "batch", 2: "time"}})
    drawn = read_feeds(path / "held_out.npz")
    assert all(f["power"].min() >= 0 and 0.35 <= f["temperature"] <= 1.05 for f in drawn)
    # a held-out temperature from 0.5 to 1.0 beside an example of one negative-free spread
    rng = np.random.default_rng(0)
    held = [{"power": rng.random((3, 4, 10), dtype=np.float32), "temperature": np.array(t, np.float32)} for t in (0.5, 1.0)]
    export_pytorch(_Loudness(), {**example, "power": rng.random((2, 4, 10), dtype=np.float32)}, tmp_path / "held",
                   dynamic={"power": {0: "batch", 2: "time"}}, held_out=held)
    with pytest.raises(ValidationError, match=r"expected finite outputs from the module to check the graph against, found "
                                              r"NaN or Inf from PyTorch itself \(forward, not the export\) on inputs drawn "
                                              r"like the values given .* at batch=1, package not written: give held_out"):
        export_pytorch(_Standardized(), {"x": rng.standard_normal((4, 3)).astype(np.float32)}, tmp_path / "std")
    assert not (tmp_path / "std").exists()


class _Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 2)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("mean", torch.zeros(4), persistent=False)

    def forward(self, x):
        self.calls += 1
        self.mean = 0.9 * self.mean + 0.1 * x.mean(0)   # replaced, not changed in place
        return self.linear(x - self.mean)


def test_a_forward_that_changes_its_buffers_is_refused_and_the_module_given_back_as_it_came(tmp_path):
    """The export ran the module a dozen times: the counter read 11 after it, and bench --vs-torch
    then refused the factory's fresh module as other weights; a running mean made a ParityError
    that named nothing."""
    module = _Counting()
    with pytest.raises(ConfigError, match=r"^module: expected a forward that leaves its buffers as they are .* found it "
                                          r"changes calls, mean: keep that state outside"):
        export_pytorch(module, {"x": np.ones((2, 4), np.float32)}, tmp_path / "pkg")
    assert module.calls.item() == 0 and torch.equal(module.mean, torch.zeros(4)) and not (tmp_path / "pkg").exists()
    # one tensor two submodules share stays one, the caller's, holding what it held
    shared = torch.nn.Module()
    shared.a, shared.b, shared.linear = torch.nn.Module(), torch.nn.Module(), torch.nn.Linear(4, 2)
    count = torch.zeros(())
    shared.a.register_buffer("count", count)
    shared.b.register_buffer("count", count)
    shared.forward = lambda x: (shared.a.count.add_(1), shared.linear(x))[1]
    with pytest.raises(ConfigError, match="found it changes a.count, b.count"):
        export_pytorch(shared, {"x": np.ones((2, 4), np.float32)}, tmp_path / "pkg")
    assert shared.a.count is count and shared.b.count is count and count.item() == 0
    # what a first call fills once (a lazy module's statistics, a cache) is no change: these exported before
    lazy = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.LazyBatchNorm1d())
    export_pytorch(lazy, {"x": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}, tmp_path / "lazy")


def test_a_ragged_example_a_seed_of_text_and_a_limit_past_memory_are_edgegens_refusals(tmp_path):
    """Each gave Python's own error from the Python API: numpy's ValueError, SeedSequence's
    TypeError, a MemoryError of 29 TiB."""
    linear, example = torch.nn.Linear(4, 2), {"x": np.ones((2, 4), np.float32)}
    with pytest.raises(ConfigError, match=r"^inputs \(--inputs\) 'x': expected an array \(numbers in a regular shape\), "
                                          r"found list numpy cannot make one of"):
        export_pytorch(linear, {"x": [[1.0, 2.0], [1.0]]}, tmp_path / "pkg")
    with pytest.raises(ConfigError, match=r"^seed: expected a non-negative integer \(the gate's draws\), found 'a'"):
        export_pytorch(linear, example, tmp_path / "pkg", seed="a")
    with pytest.raises(ValidationError, match=r"failed at batch 1000000000000, the largest size recorded for batch .*"
                                              r"MemoryError.*give --limit batch=N \(dim_limits\) below 1000000000000"):
        export_pytorch(linear, example, tmp_path / "pkg", dim_limits={"batch": 10**12})
    assert not (tmp_path / "pkg").exists()
    with pytest.raises(ConfigError, match=r"^module: expected forward to run on the example inputs, found .* \(its weights "
                                          r"are bfloat16, the example float32: export module.float\(\); "):
        export_pytorch(torch.nn.Linear(4, 2).to(torch.bfloat16), example, tmp_path / "pkg")
    # float64 weights: the float64 example was taken as float32 without a word (helper 142)
    with pytest.raises(ConfigError, match=r"\(its weights are float64, the example float32: export module.float\(\); "
                                          r"edgegen's graphs compute in float32\)"):
        export_pytorch(torch.nn.Linear(4, 2).double(), {"x": np.ones((2, 4))}, tmp_path / "pkg")
    with pytest.raises(ConfigError, match=r"\(the example's 'x' float16, the weights float32: give a float32 example"):
        export_pytorch(torch.nn.Linear(4, 2), {"x": np.ones((2, 4), np.float16)}, tmp_path / "pkg")
    for compiled in (torch.jit.script(linear), torch.jit.trace(linear, torch.ones(2, 4))):   # torch.export cannot trace them
        with pytest.raises(ConfigError, match=r"^module: expected a Python nn.Module \(torch.export traces its Python "
                                              r"code\), found a TorchScript (Recursive|TopLevelTraced)"):
            export_pytorch(compiled, example, tmp_path / "pkg")


def test_held_out_feeds_are_checked_and_recorded_for_optimize(tmp_path, capsys):
    rng = np.random.default_rng(1)
    feeds = [{"a": rng.standard_normal((n, 4)).astype(np.float32), "b": rng.standard_normal((n, 4)).astype(np.float32)}
             for n in (3, 5)]
    path = export_pytorch(_Difference(), feeds[0], tmp_path / "pkg", held_out=feeds)
    recorded = read_feeds(path / "held_out.npz")
    assert len(recorded) == 2 and all(np.array_equal(r["b"], f["b"]) for r, f in zip(recorded, feeds))
    with pytest.raises(ConfigError, match=r"held_out \(--held-out\): expected at least 2 feeds of inputs \(optimize calibrates on half "
                                          r"of them and gates on the rest\), found 1"):   # optimize could not use it
        export_pytorch(_Difference(), feeds[0], tmp_path / "one", held_out=feeds[:1])
    with pytest.raises(ConfigError, match=r"held_out \(--held-out\): expected a list of feeds \(each a dict of input name "
                                          r"-> array\), found one dict of \['a', 'b'\]: give \[feed, feed, ...\], at least 2"):
        export_pytorch(_Difference(), feeds[0], tmp_path / "one", held_out=feeds[0])
    with pytest.raises(ConfigError, match=r"held_out \(--held-out\): expected a list of feeds \(each a dict of input name "
                                          r"-> array\), found items of type ndarray"):
        export_pytorch(_Difference(), feeds[0], tmp_path / "one", held_out=list(feeds[0].values()))
    assert not (tmp_path / "one").exists()
    # info says they are there, and when they are gone, what optimize then needs
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "held out  2 feeds in held_out.npz (what optimize calibrates and gates on)\n" in out
    assert "variants  none (fp32 only; 'edgegen optimize' adds int8 / fp16 variants)" in out   # int4 is a token model's
    (path / "held_out.npz").write_bytes((path / "held_out.npz").read_bytes() + b"x")   # changed: said, as optimize refuses it
    main(["info", str(path)])
    assert "held out  2 feeds in held_out.npz (what optimize calibrates and gates on; CHANGED since export (another " \
           "sha256): optimize then needs --inputs NPZ)" in capsys.readouterr().out
    main(["info", str(path), "--json"])
    assert json.loads(capsys.readouterr().out)["held_out_problem"] == "CHANGED since export (another sha256)"
    assert main(["optimize", str(path), "--precision", "fp16"]) == 2   # its way out too, as info's (it said to export again)
    assert "; or pass your own inputs instead (--inputs NPZ))\n" in capsys.readouterr().err
    (path / "held_out.npz").unlink()
    main(["info", str(path)])
    assert "held out  2 feeds in held_out.npz (what optimize calibrates and gates on; MISSING: optimize then needs " \
           "--inputs NPZ)" in capsys.readouterr().out
    assert main(["optimize", str(path), "--precision", "fp16"]) == 2   # and optimize says so too
    assert "held-out inputs expected at 'held_out.npz', found no such file (removed, or left out of a copy): pass " \
           "your own inputs instead (--inputs NPZ)\n" in capsys.readouterr().err


def test_the_callers_module_keeps_its_mode_and_a_failing_module_file_is_named(tmp_path, capsys):
    """export runs the module in eval mode and gives it back as it came; a module file or factory
    that raises is an edgegen error naming it, not a traceback."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(4)).train()
    model[2].eval()   # a frozen batch norm inside a training model stays frozen
    export_pytorch(model, {"x": np.ones((2, 4), np.float32)}, tmp_path / "dropout")
    assert model.training and model[1].training and not model[2].training
    (tmp_path / "broken.py").write_text("import torch\n\ndef make_model():\n    raise RuntimeError('weights file missing: w.pt')\n")
    (tmp_path / "unimportable.py").write_text("import edgegen_no_such_package\n")
    (tmp_path / "the_class.py").write_text("import torch\n\nclass Mine(torch.nn.Linear):\n    pass\n\n"
                                           "def make_model():\n    return Mine\n")
    np.savez(tmp_path / "x.npz", x=np.ones((2, 4), np.float32))
    for reference, message in ((f"{tmp_path / 'broken.py'}:make_model", "expected the factory to return a module, found "
                                                                        "it raising RuntimeError: weights file missing: w.pt"),
                               (f"{tmp_path / 'unimportable.py'}:make_model", "expected a Python file that imports, found "
                                                                              "it raising ModuleNotFoundError"),
                               # "found type" (review 185)
                               (f"{tmp_path / 'the_class.py'}:make_model", "expected the factory to return a "
                                "torch.nn.Module, found the class Mine itself: return an instance of it (Mine(...))")):
        assert main(["export", "--module", reference, "--inputs", str(tmp_path / "x.npz"), "--out",
                     str(tmp_path / "pkg")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"edgegen: error: --module {reference!r}: {message}") and err.count("\n") == 1, err
    # a checkpoint given with --module: said as that, not as the --inputs that --module alone would need
    assert main(["export", str(tmp_path), "--module", f"{tmp_path / 'broken.py'}:make_model", "--out",
                 str(tmp_path / "pkg")]) == 2
    assert "error: --module: expected alone (no checkpoint, --from-transformers or --data), found them together" \
        in capsys.readouterr().err
    # a training script's module-level argparse or sys.exit: its own name and no arguments, and its exit named
    (tmp_path / "script.py").write_text("import argparse, sys, torch\np = argparse.ArgumentParser()\n"
                                        "p.add_argument('--epochs', type=int, default=3)\nargs = p.parse_args()\n"
                                        "def make_model():\n    return torch.nn.Linear(4, 4)\n")
    (tmp_path / "exits.py").write_text("import sys\ndef make_model():\n    sys.exit('no weights file found')\n")
    (tmp_path / "needs.py").write_text("import edgegen_no_such_dependency\n")
    (tmp_path / "instance.py").write_text("import torch\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(4, 4)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        argv = list(sys.argv)
        assert main(["export", "--module", f"{tmp_path / 'script.py'}:make_model", "--inputs", str(tmp_path / "x.npz"),
                     "--out", str(tmp_path / "script-pkg")]) == 0   # argparse read no arguments: its defaults
        assert sys.argv == argv   # given back
        assert main(["export", "--module", "instance:model", "--inputs", str(tmp_path / "x.npz"),
                     "--out", str(tmp_path / "instance-pkg")]) == 0   # a module object, where a factory was asked for
        capsys.readouterr()
        for reference, message in (
                (f"{tmp_path / 'exits.py'}:make_model", "expected the factory to return a module, found it exiting "
                                                        "(SystemExit 'no weights file found'): put a script's argument "
                                                        "parsing and sys.exit under if __name__ == '__main__':"),
                ("needs:make_model", "expected a module that imports, found it raising ModuleNotFoundError: No module "
                                     "named 'edgegen_no_such_dependency'"),
                ("edgegen_no_such_module:make_model", "expected an importable module 'edgegen_no_such_module', found: No "
                                                      "module named 'edgegen_no_such_module'")):
            assert main(["export", "--module", reference, "--inputs", str(tmp_path / "x.npz"), "--out",
                         str(tmp_path / "pkg")]) == 2
            assert capsys.readouterr().err == f"edgegen: error: --module {reference!r}: {message}\n"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("needs", None)
        sys.modules.pop("instance", None)


UNTRACEABLE = """
import torch


class Flip(torch.nn.Module):
    def forward(self, x):
        return x if x.sum().item() > 0 else -x


def make_model():
    return Flip()


class Branch(torch.nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x
"""


def test_a_module_torch_export_cannot_trace_or_run_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    """torch.export's own failure (hundreds of lines) becomes a ValidationError naming the line of
    forward where it stopped; a module that fails on its own example is refused before tracing."""
    (tmp_path / "untraceable.py").write_text(UNTRACEABLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import untraceable

    example = {"x": np.ones((2, 3), np.float32)}
    with pytest.raises(ValidationError, match=r"export of 'Flip': expected a module torch.export can trace, found "
                                              r"\w+: Could not guard on data-dependent expression .* at .*untraceable.py:7 "
                                              r"in forward \(docs/bring-your-own-model.md says what traces\)$"):
        export_pytorch(untraceable.make_model(), example, tmp_path / "pkg")
    with pytest.raises(ValidationError, match=r"at .*untraceable.py:16 in forward \(docs"):   # the `if`: torch points into torch
        export_pytorch(untraceable.Branch(), example, tmp_path / "pkg")
    with pytest.raises(ConfigError, match=r"module: expected forward to run on the example inputs, found RuntimeError: "):
        export_pytorch(torch.nn.Linear(4, 4), example, tmp_path / "pkg")   # 3 features where it takes 4
    class Inverse(torch.nn.Module):   # traced by torch.export; torch.onnx has no ONNX function for the op
        def forward(self, x):
            return torch.linalg.inv(x)

    with pytest.raises(ValidationError, match=r"^export of 'Inverse': expected operators torch.onnx writes as ONNX, found "
                                              r"aten.linalg_inv_ex, which it has no ONNX function for \(torch.export "
                                              r"traced the module; compute that step from other operators"):
        export_pytorch(Inverse(), {"x": np.stack([np.eye(3, dtype=np.float32) * 2] * 2)}, tmp_path / "pkg")

    class Noisy(torch.nn.Module):   # its graph draws its own numbers: refused by the cause, at every opset
        def forward(self, x):
            return x + torch.randn_like(x)

    for opset in (18, 23):   # 23: ONNX Runtime has no kernel for the op; 18: the gate saw a mismatch
        with pytest.raises(ValidationError, match=r"^export of 'Noisy': expected outputs its inputs decide, found random "
                                                  r"numbers drawn in forward \(RandomNormalLike '\w+'\): take the noise "
                                                  r"as an input, drawn by the caller$"):
            export_pytorch(Noisy(), example, tmp_path / "pkg", opset=opset)

    class Normal(torch.nn.Module):   # torch.onnx fails on this draw before a graph is made
        def forward(self, x):
            return torch.normal(x, 1.0)

    with pytest.raises(ValidationError, match=r"^export of 'Normal': expected outputs its inputs decide, found random "
                                              r"numbers drawn in forward \(aten_normal\w*, which torch.onnx failed on\)"):
        export_pytorch(Normal(), example, tmp_path / "pkg")

    class Squeezed(torch.nn.Module):   # a no-op in the trace (batch >= 2 there), a removed axis in ONNX
        def forward(self, x):
            return x.squeeze(0)

    with pytest.raises(ValidationError, match=r"onnx.checker found: .*differ in rank.*; an op whose result's rank depends "
                                              r"on a dynamic dim's size, such as x.squeeze\(0\)"):
        export_pytorch(Squeezed(), example, tmp_path / "pkg")

    def lacks_a_kernel(part, path, *args, **kwargs):   # as ONNX Runtime refuses an op it has no kernel for
        raise PackageError(f"graph {part!r} at {str(path)!r}: expected a loadable ONNX model, found: NOT_IMPLEMENTED : "
                           "Could not find an implementation for SomeOp(23)")

    monkeypatch.setattr("edgegen.families.generic.export.OrtSession", lacks_a_kernel)
    with pytest.raises(ValidationError, match=r"^export of 'Linear': expected a graph ONNX Runtime runs, found: graph "
                                              r"'model': expected a loadable ONNX model, found: NOT_IMPLEMENTED : Could "
                                              r"not find an implementation for SomeOp\(23\)$"):
        export_pytorch(torch.nn.Linear(3, 3), example, tmp_path / "pkg")   # not the staging folder's path, gone by then
    monkeypatch.undo()
    np.savez(tmp_path / "example.npz", **example)
    assert main(["export", "--module", f"{tmp_path / 'untraceable.py'}:make_model", "--inputs",
                 str(tmp_path / "example.npz"), "--out", str(tmp_path / "pkg")]) == 2   # the module to mend: not a verdict
    err = capsys.readouterr().err
    assert err.startswith(f"edgegen: error: export of '{tmp_path / 'untraceable.py'}:make_model': expected a module "
                          "torch.export can trace") and err.count("\n") == 1   # one line: torch's graph print is kept off
    assert err.endswith(f" at {tmp_path / 'untraceable.py'}:7 in forward (docs/bring-your-own-model.md says what traces)\n")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["example.npz", "untraceable.py"]


class _ShapeBranch(torch.nn.Module):
    """Right only below width 100: the trace at 16 keeps the first branch."""

    def forward(self, x):
        return x * 2 if x.shape[-1] <= 100 else x * 3


class _Positions(torch.nn.Module):
    """A learned table of 40 positions: any sequence past 40 fails."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(40, 4, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        return x + self.table[:x.shape[1]]


def test_log_sigmoid_shape_mismatches_and_ops_torch_onnx_fails_on_are_said_as_they_are(tmp_path):
    """Review 169: F.logsigmoid was Log(Sigmoid(x)), -inf below -88 where PyTorch gives x; a graph
    whose output has another shape was said as "max abs inf"; torch.onnx failing on torch.roll's
    size-made shift was blamed on torch.export."""
    class LogLikelihood(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.logsigmoid(x), torch.sigmoid(x) * 2

    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    pipe = edgegen.load(export_pytorch(LogLikelihood(), {"x": x}, tmp_path / "pkg"))
    far = np.array([[-1000, -120, -90, -20, -1, 0, 1, 20]], np.float32)
    ours, doubled = pipe(x=far).values()
    np.testing.assert_allclose(ours, torch.nn.functional.logsigmoid(torch.from_numpy(far)).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(doubled, 2 * torch.sigmoid(torch.from_numpy(far)).numpy(), rtol=1e-5, atol=1e-7)

    class Loss(torch.nn.Module):   # binary cross-entropy on logits: the same Log(Sigmoid), far out too (the docs said inf)
        def forward(self, x, y):
            return torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=torch.tensor(3.0))

    targets = (far > 0).astype(np.float32)
    loss = edgegen.load(export_pytorch(Loss(), {"x": x, "y": (x > 0).astype(np.float32)}, tmp_path / "loss"))
    np.testing.assert_allclose(loss(x=far * 10, y=1 - targets)["output"],
                               Loss()(torch.from_numpy(far * 10), torch.from_numpy(1 - targets)).numpy(), rtol=1e-5, atol=1e-6)

    class Pooled(torch.nn.Module):   # the trace fixes the pooling's kernel at the traced size's
        def forward(self, x):
            return torch.nn.functional.adaptive_avg_pool2d(x, (4, 4))

    sizes = {"x": {0: "batch", 2: "h", 3: "w"}}
    with pytest.raises(ParityError, match=r"output @ batch=1, h=24, w=24: shape \[1, 2, 6, 6\] where PyTorch's is "
                                          r"\[1, 2, 4, 4\] \[SHAPE MISMATCH\]"):
        export_pytorch(Pooled(), {"x": np.ones((2, 2, 16, 16), np.float32)}, tmp_path / "pooled", dynamic=sizes)

    class Rolled(torch.nn.Module):
        def forward(self, x):
            return torch.roll(x, shifts=(x.shape[-2] // 3,), dims=(-2,))

    with pytest.raises(ValidationError, match=r"^export of 'Rolled': expected operators torch.onnx writes as ONNX, found "
                                              r"aten\.roll\.default, whose translation failed on its arguments"):
        export_pytorch(Rolled(), {"x": np.ones((2, 1, 12, 12), np.float32)}, tmp_path / "rolled", dynamic=sizes)


def test_a_size_where_the_graph_is_wrong_or_the_module_fails_is_not_recorded_as_a_limit(tmp_path, capsys):
    """The gate runs at each dim's recorded limit: a shape branch the trace fixed, or a table the
    default limit outgrows, is refused naming the dim, the size and the --limit to give; below it,
    the export passes and records that limit."""
    wide = {"x": np.ones((2, 16), np.float32)}
    dynamic = {"x": {0: "batch", 1: "width"}}
    with pytest.raises(ValidationError, match=r"^export of '_ShapeBranch' does not reproduce PyTorch at width 120, the "
                                              r"largest size recorded for width, package not written: .*batch=1, "
                                              r"width=120.*; the trace took a branch on width <= 100: give --limit "
                                              r"width=100 \(dim_limits\), below which the trace's branch holds$"):
        export_pytorch(_ShapeBranch(), wide, tmp_path / "a", dynamic=dynamic, dim_limits={"width": 120})
    pkg = export_pytorch(_ShapeBranch(), wide, tmp_path / "b", dynamic=dynamic, dim_limits={"width": 100})
    assert "batch=1, width=100" in json.loads((pkg / "edgegen.json").read_text())["graphs"]["model"]["validation"]["feeds"]
    with pytest.raises(ValidationError, match=r"does not reproduce PyTorch at width 101, "):   # the limit as given
        export_pytorch(_ShapeBranch(), wide, tmp_path / "e", dynamic=dynamic, dim_limits={"width": 101})
    # a branch a step up from the traced size: each failing size said once, and the sizes it holds at
    with pytest.raises(ValidationError) as refused:
        export_pytorch(_ShapeBranch(), {"x": np.ones((2, 96), np.float32)}, tmp_path / "f", dynamic=dynamic)
    message = str(refused.value)
    assert message.count("@ batch=1, width=128") == 1 and "@ batch=3" not in message   # 8 feeds, at 3 sizes
    assert message.endswith("; it holds at batch=2, width=96 and batch=3, width=64: the trace fixed something that "
                            "depends on a size (a branch on x.shape, a size turned into a constant), so give --dynamic "
                            "only for dims the module takes at any size, or --limit below the sizes it fails at")

    # the default limit (4x the traced 16) outgrows the table: the module's own failure, named
    with pytest.raises(ValidationError, match=r"^export of '_Positions': the module or its graph failed at width 64, "
                                              r"the largest size recorded for width \(TensorRT profiles are built to "
                                              r"it\): .*; give --limit width=N \(dim_limits\) below 64"):
        export_pytorch(_Positions(), {"x": np.ones((2, 16, 4), np.float32)}, tmp_path / "c",
                       dynamic={"x": {0: "batch", 1: "width"}})
    assert export_pytorch(_Positions(), {"x": np.ones((2, 16, 4), np.float32)}, tmp_path / "d",
                          dynamic={"x": {0: "batch", 1: "width"}}, dim_limits={"width": 40}).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "d"]


class _SmallBranch(torch.nn.Module):
    """Right only from width 8 up: the trace at 16 keeps the second branch, and the gate's sizes
    (a step down from 16 is 8) never take the first."""

    def forward(self, x):
        return x * 2 if x.shape[-1] < 8 else x + 1


def test_the_package_claims_the_sizes_its_export_checked_and_the_runtime_refuses_the_others(tmp_path, capsys):
    """A branch below every size the gate tried cannot be found by it: the manifest records the
    smallest size checked beside the limit, the runtime refuses a size outside them (where the graph
    gave x + 1 for the module's x * 2, silently), and TensorRT's profile starts there. The gate goes
    down from the sizes it tried, halving, and says where the graph stops holding; held-out inputs
    at a smaller size are checked, and refuse the export."""
    from edgegen.runtimes.engines import package_profiles
    from edgegen.package import Package

    dynamic = {"x": {0: "batch", 1: "width"}}
    with pytest.warns(EdgegenWarning, match=r"^export: the graph differs from the module at width 4 \(.*\): the trace "
                                            r"fixed a branch on a size .*, so the package takes width 8 and up, and the "
                                            r"runtime refuses less$"):
        pkg = export_pytorch(_SmallBranch(), {"x": np.full((2, 16), 3, np.float32)}, tmp_path / "pkg",
                             dynamic=dynamic, dim_limits={"width": 20})
    config = json.loads((pkg / "edgegen.json").read_text())["config"]
    assert config["dim_minimums"] == {"batch": 1, "width": 8} and config["dim_limits"] == {"batch": 16, "width": 20}
    pipe = edgegen.load(pkg)
    np.testing.assert_array_equal(pipe(x=np.ones((1, 8), np.float32))["output"], np.full((1, 8), 2, np.float32))
    with pytest.raises(InputError, match=r"^input 'x': expected width 8 to 20, the sizes its export checked against "
                                         r"PyTorch, found 4: below 8 the export saw the module or its graph fail, or "
                                         r"tried no size; held-out inputs \(--held-out\) of width 4 have it checked$"):
        pipe(x=np.ones((1, 4), np.float32))
    with pytest.raises(InputError, match=r"found 30: export again with --limit width=30 \(dim_limits\), and its check "
                                         r"runs there$"):
        pipe(x=np.ones((1, 30), np.float32))
    assert pipe(x=np.ones((40, 16), np.float32))["output"].shape == (40, 16)   # the batch past its limit: rows are independent
    (profile,) = package_profiles(Package(pkg)).values()
    assert profile == (("x", (1, 8), (2, 16), (16, 20)),)
    with pytest.raises(ConfigError, match=r"--profile width: expected MIN at least 8, the smallest width the generic "
                                          r"package takes, found 4"):
        package_profiles(Package(pkg), ["width=4:8:16"])
    assert main(["bench", str(pkg), "--shapes", "width=4", "--iters", "1", "--warmup", "0", "--no-energy"]) == 0
    assert "--shapes/--sweep width=4: below the smallest width the package declares, which its TensorRT profiles are " \
        "built from (8); timed as asked" in capsys.readouterr().err
    # a graph that fails where the module runs (its kernel of 7 wider than the width of 4): said, not raised
    class SmallBranchConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 1, 7)

        def forward(self, x):
            return x * 2 if x.shape[-1] < 8 else self.conv(x)

    torch.manual_seed(0)
    with pytest.warns(EdgegenWarning, match=r"^export: the graph differs from the module at width 4 \(the graph fails: .*\): "
                                            r".* so the package takes width 8 and up"):
        conv = export_pytorch(SmallBranchConv(), {"x": np.ones((2, 1, 16), np.float32)}, tmp_path / "conv",
                              dynamic={"x": {0: "batch", 2: "width"}})
    assert json.loads((conv / "edgegen.json").read_text())["config"]["dim_minimums"]["width"] == 8
    # held-out inputs at width 4: the gate checks them, and the branch is found
    held = [{"x": np.full((2, 4), 3, np.float32)}, {"x": np.full((2, 16), 3, np.float32)}]   # 3 * 2 is not 3 + 1
    with pytest.raises(ValidationError, match=r"does not reproduce PyTorch"):
        export_pytorch(_SmallBranch(), {"x": np.ones((2, 16), np.float32)}, tmp_path / "held", dynamic=dynamic,
                       held_out=held)
    # and held-out inputs past the limits are refused: the package would not claim them
    with pytest.raises(ConfigError, match=r"held_out \(--held-out\) feed 1 input 'x': expected sizes within the limits "
                                          r"\(width 20\), found width 24: give --limit \(dim_limits\)"):
        export_pytorch(_SmallBranch(), {"x": np.ones((2, 16), np.float32)}, tmp_path / "big", dynamic=dynamic,
                       dim_limits={"width": 20}, held_out=[held[1], {"x": np.ones((2, 24), np.float32)}])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["conv", "pkg"]


def test_inputs_named_as_the_calls_own_parameters_are_given_by_keyword(tmp_path):
    class Scale(torch.nn.Module):
        def forward(self, feeds, other):   # the graph's inputs: `feeds` and `other`
            return feeds * other

    pkg = export_pytorch(Scale(), {"feeds": np.ones((2, 3), np.float32), "other": np.full((2, 3), 2, np.float32)},
                         tmp_path / "pkg")
    pipe = edgegen.load(pkg)
    assert pipe(feeds=np.ones((1, 3), np.float32), other=np.full((1, 3), 3, np.float32))["output"].tolist() == [[3, 3, 3]]
    assert pipe({"feeds": np.ones((1, 3), np.float32), "other": np.ones((1, 3), np.float32)})["output"].shape == (1, 3)


def test_a_generic_package_refuses_nan_and_empty_batches_and_never_returns_nan(tmp_path):
    """NaN in or out is refused; an infinity may be meant, as an additive attention mask's -inf."""
    class MaskedSoftmax(torch.nn.Module):
        def forward(self, scores, mask):
            return torch.softmax(scores + mask, dim=-1) * scores.sum(dim=-1, keepdim=True).sqrt()

    example = {"scores": np.linspace(1, 2, 12, dtype=np.float32).reshape(2, 6), "mask": np.zeros((2, 6), np.float32)}
    pkg = export_pytorch(MaskedSoftmax(), example, tmp_path / "pkg", atol=np.float32(1e-4), rtol=np.float64(1e-3))
    pipe = edgegen.load(pkg)
    mask = np.zeros((1, 6), np.float32)
    mask[:, 4:] = -np.inf
    masked = pipe(scores=example["scores"][:1], mask=mask)["output"]
    assert np.isfinite(masked).all() and (masked[:, 4:] == 0).all()
    with pytest.raises(InputError, match=r"input 'scores': expected numbers, found 1 NaN value\(s\)"):
        pipe(scores=np.array([[1, 2, 3, 4, 5, np.nan]], np.float32), mask=mask)
    with pytest.raises(InputError, match=r"input 'scores': expected values float32 holds \(magnitudes up to 3.4e\+38\), "
                                         r"found 1e\+40$"):   # float64 that the cast would make inf: said as such
        pipe(scores=np.full((1, 6), 1e40), mask=mask)
    with pytest.raises(InputError, match=r"input 'scores': expected at least one item, found an empty batch of "
                                         r"shape \[0, 6\]"):
        pipe(scores=np.zeros((0, 6), np.float32), mask=np.zeros((0, 6), np.float32))
    rows = edgegen.load(export_pytorch(MaskedSoftmax(), example, tmp_path / "rows",   # the leading dim named otherwise
                                       dynamic={"scores": {0: "rows"}, "mask": {0: "rows"}}))
    with pytest.raises(InputError, match=r"input 'scores': expected at least one item, found an empty dim 'rows' of "
                                         r"shape \[0, 6\]"):
        rows(scores=np.zeros((0, 6), np.float32), mask=np.zeros((0, 6), np.float32))

    class SequenceFirst(torch.nn.Module):   # a past cache leads, empty at a first step: taken
        def forward(self, past, x):
            return torch.cat([past, x]).mean(dim=0)

    seq = {"past": np.ones((2, 3), np.float32), "x": np.ones((1, 3), np.float32)}
    first = edgegen.load(export_pytorch(SequenceFirst(), seq, tmp_path / "seq", dynamic={"past": {0: "past_length"}}))
    assert first(past=np.zeros((0, 3), np.float32), x=np.full((1, 3), 2, np.float32))["output"].tolist() == [2, 2, 2]
    # a package made before edgegen recorded dim_minimums takes an empty past cache too
    manifest = json.loads((tmp_path / "seq" / "edgegen.json").read_text())
    assert manifest["config"].pop("dim_minimums") == {"past_length": 0}
    (tmp_path / "seq" / "edgegen.json").write_text(json.dumps(manifest))
    older = edgegen.load(tmp_path / "seq")
    assert older(past=np.zeros((0, 3), np.float32), x=np.full((1, 3), 2, np.float32))["output"].tolist() == [2, 2, 2]
    with pytest.raises(InputError, match=r"input 'scores': expected float32\[batch, 6\], found a list numpy cannot make "
                                         r"one array of \(setting an array element with a sequence"):
        pipe(scores=[[1.0] * 6, [1.0] * 5], mask=mask)   # a ragged list
    with pytest.raises(NonFiniteError, match=r"output 'output': expected numbers, found NaN in the result, from inputs "
                                             r"without NaN \(input 'mask' holds Inf\): the module itself may give NaN there"):
        pipe(scores=-example["scores"][:1], mask=mask)   # the square root of a negative sum; it blamed the graph


def test_the_worked_examples_factory_gives_the_same_weights_and_leaves_the_callers_random_state():
    from edgegen.families.generic.export import load_factory

    before = torch.random.get_rng_state()
    first, second = (load_factory("docs/examples/denoiser.py:make_model").state_dict() for _ in range(2))
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_a_bad_config_value_is_a_manifest_error_at_load_time(user_model, tmp_path):
    _, make_model, example = user_model
    pkg = export_pytorch(make_model(), example, tmp_path / "pkg", dynamic=DYNAMIC)
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["config"]["dim_limits"] = {"height": "tall"}
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=r"config: dim_limits expected positive integer sizes, found \{'height': 'tall'\}"):
        edgegen.load(pkg)


def test_the_command_line_takes_a_module_through_export_generate_bench_optimize_check(user_model, tmp_path, capsys,
                                                                                       monkeypatch):
    root, _, _ = user_model
    monkeypatch.chdir(root)
    pkg = tmp_path / "pkg"
    dims = [f"--dynamic={name}:{axis}={dim}" for name in ("image", "mask") for axis, dim in ((0, "batch"), (2, "height"), (3, "width"))]
    assert main(["export", "--module", "model.py:make_model", "--inputs", "example.npz", *dims,
                 "--output-name", "sharpened", "--output-name", "change", "--limit", "height=256,width=256",
                 "--out", str(pkg)]) == 0
    out = capsys.readouterr().out
    assert "family    generic" in out and "gate passed" in out
    # --force never replaces the folder that holds the module and its inputs
    assert main(["export", "--module", "model.py:make_model", "--inputs", "example.npz", "--out", str(root),
                 "--force"]) == 2
    assert "holds the input" in capsys.readouterr().err and (root / "model.py").is_file()
    # the gate's verdict (a graph that runs but misses PyTorch's outputs, at no tolerance at all) is
    # status 1, as check's and optimize's are; a CI step tells it from a mistake in the command (2)
    assert main(["export", "--module", "model.py:make_model", "--inputs", "example.npz", "--atol", "0", "--rtol", "0",
                 "--out", str(tmp_path / "exact")]) == 1
    assert "does not reproduce PyTorch, package not written" in capsys.readouterr().err
    assert not (tmp_path / "exact").exists()
    # an importable name finds a module in the working directory, as `python -m` does
    (root / "own_sharpen_model.py").write_text(MODEL_PY)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(root))])
    assert main(["export", "--module", "own_sharpen_model:make_model", "--inputs", "example.npz",
                 "--out", str(tmp_path / "pkg-by-name")]) == 0
    assert main(["generate", str(pkg), "--out", str(tmp_path / "y.npz")]) == 0
    assert read_feeds(tmp_path / "y.npz")[0]["sharpened"].shape == (1, 1, 48, 64)
    assert main(["generate", str(pkg), "--inputs", "example.npz", "--out", str(tmp_path / "z.npz")]) == 0
    assert read_feeds(tmp_path / "z.npz")[0]["change"].shape == (2,)
    # --out never replaces what generate reads: a file of the package, or its own --inputs
    held_out = (pkg / "held_out.npz").read_bytes()
    assert main(["generate", str(pkg), "--out", str(pkg / "held_out.npz")]) == 2
    assert "expected a file outside the package it reads" in capsys.readouterr().err
    assert (pkg / "held_out.npz").read_bytes() == held_out
    example = (root / "example.npz").read_bytes()
    assert main(["generate", str(pkg), "--inputs", "example.npz", "--out", str(root / "example.npz")]) == 2
    assert "expected a file other than the input it reads" in capsys.readouterr().err
    assert (root / "example.npz").read_bytes() == example
    assert main(["export", "--module", "model.py:make_model", "--inputs", "example.npz", "--opset", "0",
                 "--out", str(tmp_path / "opset0")]) == 2
    assert "opset: expected 18 to 23" in capsys.readouterr().err and not (tmp_path / "opset0").exists()
    assert main(["generate", str(pkg), "--seed", "3", "--out", str(tmp_path / "w.npz")]) == 2   # it changed nothing
    assert "--seed: expected an option of packages that draw at random, found it given to a generic package" in \
        capsys.readouterr().err
    assert main(["generate", str(pkg), "--out", str(tmp_path / ".npz")]) == 2
    assert "expected a file name before .npz, found only the extension" in capsys.readouterr().err
    assert main(["generate", str(pkg), "--steps", "3", "--out", str(tmp_path / "w.npz")]) == 2
    assert "--steps: expected an option of generic packages (--inputs), found --steps, an option of" \
        in capsys.readouterr().err
    assert main(["bench", str(pkg), "--batch", "2", "--shapes", "height=24,width=40", "--iters", "5", "--warmup", "1",
                 "--vs-torch", "model.py:make_model", "--json", str(tmp_path / "bench.json")]) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["batch"] == 2 and report["shapes"] == {"height": 24, "width": 40}
    source = (root / "model.py").read_bytes()   # the report replaced the module's source, exit status 0
    assert main(["bench", str(pkg), "--iters", "2", "--vs-torch", "model.py:make_model", "--json", "model.py"]) == 2
    assert "--json 'model.py': expected a file other than the input it reads" in capsys.readouterr().err
    assert (root / "model.py").read_bytes() == source
    assert main(["bench", str(pkg), "--iters", "2", "--vs-torch", "nope.py:make_model"]) == 2
    assert "edgegen: error: --vs-torch 'nope.py:make_model': expected a Python file at 'nope.py', found nothing there" \
        in capsys.readouterr().err
    assert {r["engine"] for r in report["results"]} == {"edgegen ort-cpu", "torch eager"}
    assert main(["bench", str(pkg), "--shapes", "depth=3", "--iters", "2"]) == 2
    assert "--shapes/--sweep: expected dynamic dims of the package's graphs other than the batch (height, width), " \
           "found depth" in capsys.readouterr().err
    image, mask = user_model[2]["image"], user_model[2]["mask"]
    np.savez(tmp_path / "typo.npz", **{"0/image": image, "0/mask": mask, "1/image": image, "1/msk": mask})
    np.savez(tmp_path / "nan.npz", **{"0/image": image, "0/mask": mask, "1/image": image * np.nan, "1/mask": mask})
    for feeds, message in (("typo.npz", "expected the inputs of graph 'model', ['image', 'mask'], in every feed, found feed 1 "
                                        "holding ['image', 'msk'], without ['mask']"),
                           ("nan.npz", f"expected finite numbers, found {image.size} NaN or Inf value(s)")):
        assert main(["optimize", str(pkg), "--precision", "fp16", "--inputs", str(tmp_path / feeds)]) == 2
        where = " feed 1 input 'image'" if feeds == "nan.npz" else ""
        assert f"edgegen: error: --inputs ({tmp_path / feeds}){where}: {message}\n" in capsys.readouterr().err
    # settings of inputs drawn from a checkpoint are refused where the feeds are given whole, not ignored
    for flags in (["--calibration", "4096"], ["--checkpoint", "nowhere"]):
        assert main(["optimize", str(pkg), "--precision", "int8", *flags]) == 2
        assert f"edgegen: error: {flags[0][2:]} ({flags[0]}): expected none where the feeds are given whole (the " \
               f"held-out inputs the export recorded: their first half calibrates, the second gates), found " \
               f"{flags[0][2:]} {flags[1] if flags[0] == '--calibration' else repr(flags[1])}\n" in capsys.readouterr().err
    # float64 feeds are cast, as the runtime and the export cast them (they were refused here alone)
    np.savez(tmp_path / "f64.npz", **{"0/image": image.astype(np.float64), "0/mask": mask, "1/image": image, "1/mask": mask})
    assert main(["optimize", str(pkg), "--precision", "fp16", "--inputs", str(tmp_path / "f64.npz"), "--no-speed-check",
                 "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["graphs"]["model"]["gate"]["metric"] == "PSNR dB"   # it ran
    assert main(["optimize", str(pkg), "--precision", "int8", "--target", "tensorrt"]) == 0
    out = capsys.readouterr().out
    assert "model: int8 written for tensorrt (PSNR dB" in out or "model: int8 not written" in out
    manifest = json.loads((pkg / "edgegen.json").read_text())
    assert manifest["variants"]["int8"]["model"]["calibration"]["source"] == "held-out inputs recorded at export"
    recorded = read_feeds(pkg / "held_out.npz")   # the first half calibrates: their rows (it said 8 a feed)
    assert manifest["variants"]["int8"]["model"]["calibration"]["inputs"] == sum(
        len(feed["image"]) for feed in recorded[:len(recorded) // 2])
    assert main(["check", str(pkg), "--profile", "batch=1:2:8", "--profile", "height=16:32:256",
                 "--profile", "width=16:48:256"]) in (0, 1)
    assert "model: model.onnx" in capsys.readouterr().out
    # an engine for sizes past what the export recorded (and gated at) is refused
    assert main(["check", str(pkg), "--profile", "height=16:32:1024"]) == 2
    assert "--profile height: expected MAX at most 256, the largest height the generic package takes, found 1024" in \
        capsys.readouterr().err
    assert main(["export", "--module", "model.py:nothing_here", "--inputs", "example.npz", "--out", str(tmp_path / "x")]) == 2
    assert "expected a callable 'nothing_here'" in capsys.readouterr().err
    assert main(["export", "--module", "os.path:join", "--inputs", "example.npz", "--out", str(tmp_path / "x")]) == 2
    assert "expected a factory that takes no arguments, found 'join' needing a" in capsys.readouterr().err
    assert main(["export", "--module", "model.py:make_model", "--out", str(tmp_path / "x")]) == 2
    assert "--inputs: expected an .npz of example inputs" in capsys.readouterr().err


def test_feeds_files_say_what_they_hold_and_what_was_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("label,7\n")
    with pytest.raises(InputError, match=r"expected an .npz of named arrays \(numpy.savez\), found a file that is "
                                         r"neither an .npz nor an .npy"):
        read_feeds(tmp_path / "notes.txt")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(InputError, match=r"expected an .npz of named arrays \(numpy.savez\), found an empty file"):
        read_feeds(tmp_path / "empty.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([object(), 1], dtype=object))   # an .npz, of a pickled member
    with pytest.raises(InputError, match=r"expected an .npz of numeric arrays, found 'x' of Python objects \(dtype object"):
        read_feeds(tmp_path / "objects.npz")
    # numbered feeds with a gap, or one number written twice (01/x beside 1/x), were taken without a word (review 185)
    x = np.ones((1, 4), np.float32)
    np.savez(tmp_path / "gaps.npz", **{"0/x": x, "1/x": x, "3/x": x, "5/x": x})
    with pytest.raises(InputError, match=r"expected feeds numbered 0 to 3, found 4 numbered up to 5, without 2, 4: "
                                         r"number them anew"):
        read_feeds(tmp_path / "gaps.npz")
    np.savez(tmp_path / "twice.npz", **{"0/x": x, "1/x": x, "01/x": x * 2})
    with pytest.raises(InputError, match=r"expected keys N/name with N as numpy.savez's callers write it \(1\), found "
                                         r"'01/x'"):
        read_feeds(tmp_path / "twice.npz")
    with pytest.raises(InputError, match=r"inputs '.*': expected an .npz file of named arrays \(numpy.savez\), found a "
                                         r"folder$"):   # a package given for --inputs: not "[Errno 21] Is a directory"
        read_feeds(tmp_path)
    with pytest.raises(PackageError, match="package: expected a package directory's path or a shipped model's name, "
                                           "found NoneType"):
        edgegen.load(None)
    with pytest.raises(PackageError, match="package: expected a package directory's path or a shipped model's name, "
                                           "found an empty path$"):   # not the current folder, said as '.'
        edgegen.load("")
    np.savez(tmp_path / "two.npz", **{"0/x": np.zeros((1, 2), np.float32), "1/x": np.ones((3, 2), np.float32)})
    assert [f["x"].shape for f in read_feeds(tmp_path / "two.npz")] == [(1, 2), (3, 2)]
    np.savez(tmp_path / "one.npz", x=np.zeros((16, 2), np.float32))   # one feed, whatever its batch
    assert len(read_feeds(tmp_path / "one.npz")) == 1
    np.save(tmp_path / "bare.npy", np.zeros((16, 2), np.float32))   # numpy.save for numpy.savez
    with pytest.raises(InputError, match=r"expected an .npz of named arrays \(numpy.savez\), found one bare array "
                                         r"\(.npy, shape \[16, 2\]\): save it with numpy.savez\(path, NAME=array\)"):
        read_feeds(tmp_path / "bare.npy")


class SubtractsInPlace(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x):
        x.sub_(0.5)   # changes its argument: the gate must hand PyTorch copies
        return self.linear(x)


def test_a_module_that_changes_its_input_in_place_is_exported_and_the_callers_arrays_are_kept(tmp_path, capsys):
    """The gate hands PyTorch copies. The package's one dynamic dim is not named batch, so bench
    has nothing to set --batch on and refuses it rather than time the same call as 8 rows."""
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    held = [{"x": np.ones((3, 4), np.float32)}, {"x": np.full((1, 4), 2, np.float32)}]
    kept, held_kept = x.copy(), [feed["x"].copy() for feed in held]
    torch.manual_seed(0)
    module = SubtractsInPlace()
    path = export_pytorch(module, {"x": x}, tmp_path / "inplace", held_out=held, dynamic={"x": {0: "rows"}})
    assert np.array_equal(x, kept) and all(np.array_equal(f["x"], k) for f, k in zip(held, held_kept))
    with torch.inference_mode():
        expected = module(torch.from_numpy(x.copy())).numpy()
    np.testing.assert_allclose(edgegen.load(path)(x=x)["output"], expected, atol=1e-5)
    assert main(["bench", str(path), "--batch", "8", "--iters", "2", "--warmup", "0", "--no-generation"]) == 2
    assert capsys.readouterr().err == ("edgegen: error: --batch 8: expected a package whose graphs have a dynamic dim "
                                       "named 'batch', found none (x float32[rows, 4]); time other sizes with --shapes "
                                       "DIM=N\n")
    assert main(["bench", str(path), "--shapes", "rows=8", "--iters", "2", "--warmup", "0", "--no-generation"]) == 0


def test_bench_vs_torch_compares_a_module_without_weights_by_its_outputs(tmp_path, capsys):
    """No weights to tell modules apart by: any factory passed the weight check, and bench timed an
    unrelated module as the one exported (helper 99). Its outputs on a recorded feed are compared."""
    (tmp_path / "weightless.py").write_text(
        "import torch\n\nclass Double(torch.nn.Module):\n    def forward(self, a, b):\n        return a - 2 * b\n\n"
        "class Sum(torch.nn.Module):\n    def forward(self, a, b):\n        return a + b\n\n"
        "class Wide(torch.nn.Module):\n    def forward(self, a, b):\n        return a @ torch.ones(3, 3)\n\n"
        "def make_double():\n    return Double()\n\ndef make_sum():\n    return Sum()\n\ndef make_wide():\n"
        "    return Wide()\n")
    feeds = {"a": np.ones((2, 4), np.float32), "b": np.full((2, 4), 3, np.float32)}
    pkg = export_pytorch(_Difference(), feeds, tmp_path / "pkg")
    module = f"{tmp_path / 'weightless.py'}"
    bench = ["bench", str(pkg), "--iters", "1", "--warmup", "0", "--no-energy", "--vs-torch"]
    assert main([*bench, f"{module}:make_double"]) == 0   # the same computation: timed beside the package
    capsys.readouterr()
    assert main([*bench, f"{module}:make_sum"]) == 2
    assert re.search(r"--vs-torch '.*:make_sum': expected the module package '.*pkg' was exported from \(it has no "
                     r"weights to compare\), found other outputs on its recorded inputs: output @ batch=\d+: "
                     r"max abs", capsys.readouterr().err)
    assert main([*bench, f"{module}:make_wide"]) == 2   # it fails on the package's inputs
    assert "found one failing on its recorded inputs (RuntimeError: " in capsys.readouterr().err


def test_inputs_of_another_shape_or_dtype_are_refused_for_every_precision(tmp_path, capsys):
    """int8's calibration met them as ONNX Runtime's cut-off error, recorded as the variant's refusal,
    and a package of several graphs exited 0 with the rest written (helper 80); fp16 said them."""
    from edgegen.runtimes.feeds import write_feeds

    rng = np.random.default_rng(1)
    good = [{"a": rng.standard_normal((2, 4)).astype(np.float32), "b": rng.standard_normal((2, 4)).astype(np.float32)}
            for _ in range(4)]
    path = export_pytorch(_Difference(), good[0], tmp_path / "pkg", held_out=good)
    manifest = (path / "edgegen.json").read_bytes()
    for changed, said in (({"a": good[0]["a"][:, :3]}, r"input 'a': expected float32\[batch, 4\], found shape \[2, 3\]"),
                          ({"b": good[0]["b"].astype(np.int64)},   # float64 is cast, as a call's is; integers are not
                           r"input 'b': expected float32\[batch, 4\], found dtype int64")):
        write_feeds(tmp_path / "bad.npz", [good[0], good[1], {**good[2], **changed}, good[3]])
        for precision in ("int8", "fp16"):
            assert main(["optimize", str(path), "--precision", precision, "--inputs", str(tmp_path / "bad.npz")]) == 2
            assert re.search(rf"inputs \(.*bad.npz\) feed 2: (graph '.*' )?{said}", capsys.readouterr().err)
    assert (path / "edgegen.json").read_bytes() == manifest   # no refusal recorded as the variant's


class GRUStep(torch.nn.Module):
    """One token of a recurrent text model, its state batch first (as a runtime-owned loop passes it):
    the state's transposes around the GRU, kept in fp32 in an fp16 variant, are what crashed ONNX Runtime."""

    def __init__(self):
        super().__init__()
        self.embed, self.gru, self.head = torch.nn.Embedding(64, 32), torch.nn.GRU(32, 48, batch_first=True), torch.nn.Linear(48, 64)

    def forward(self, input_ids, state):   # [batch], [batch, 1, 48]
        y, new = self.gru(self.embed(input_ids[:, None]), state.transpose(0, 1).contiguous())
        return self.head(y)[:, 0], new.transpose(0, 1)


def test_an_fp16_variant_of_a_recurrent_graph_opens_and_runs_where_onnx_runtime_crashed(tmp_path):
    """ONNX Runtime's NCHWc transformer died (SIGSEGV, no message) opening the fp16 graph of a GRU
    step: optimize's gate and the runtime both. In a child process, so that a crash fails this test only."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    feeds = [{"input_ids": rng.integers(0, 64, (2,)).astype(np.int64),
              "state": rng.standard_normal((2, 1, 48)).astype(np.float32)} for _ in range(4)]
    pkg = export_pytorch(GRUStep().eval(), feeds[0], tmp_path / "pkg", held_out=feeds)
    script = textwrap.dedent(f"""
        import numpy as np, edgegen
        from edgegen.optimize import optimize_package
        record = optimize_package({str(pkg)!r}, "fp16", target="tensorrt", progress=lambda *a, **k: None)["model"]
        assert record["gate"]["passed"] and "refused" not in record, record
        logits, state = edgegen.load({str(pkg)!r}, precision="fp16", backend="ort-cpu")(
            input_ids=np.array([1, 2]), state=np.zeros((2, 1, 48), np.float32)).values()
        print(logits.shape, state.shape)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.split("\n")[-2] == "(2, 64) (2, 1, 48)", (done.returncode, done.stderr[-2000:])
    record = json.loads((pkg / "edgegen.json").read_text())["variants"]["fp16"]["model"]
    assert record["disabled_optimizers"] == ["NchwcTransformer"]
    # Triton's onnxruntime backend opens the graph inside the server: its config runs the extended
    # level, below NCHWc's (it named no level, and the server's process would have died)
    assert main(["triton", str(pkg), "--precision", "fp16", "--out", str(tmp_path / "repo")]) == 0
    assert "optimization { graph { level: 1 } }" in (tmp_path / "repo" / "pkg" / "config.pbtxt").read_text()
    assert main(["triton", str(pkg), "--out", str(tmp_path / "fp32-repo")]) == 0
    assert "optimization" not in (tmp_path / "fp32-repo" / "pkg" / "config.pbtxt").read_text()
    # a graph it opens keeps the transformer (conv nets' fp16 ran 1.9x-3.6x slower without it)
    from edgegen.optimize import optimize_package

    two = export_pytorch(torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)),
                         {"x": feeds[0]["state"].reshape(2, 48)[:, :8].copy()}, tmp_path / "plain")
    assert "disabled_optimizers" not in optimize_package(two, "fp16", target="tensorrt", progress=lambda *a, **k: None)["model"]


class NearestCode(torch.nn.Module):
    """A VQ encoder's last step: the id of each row's nearest codebook entry (int64), and its distance."""

    def __init__(self):
        super().__init__()
        self.project, self.codebook = torch.nn.Linear(8, 16), torch.nn.Parameter(torch.randn(32, 16))

    def forward(self, x):
        distances = torch.cdist(self.project(x), self.codebook)
        return distances.argmin(-1), distances.min(-1).values


def test_id_outputs_are_gated_by_agreement_not_psnr(tmp_path):
    """A graph that outputs ids (a VQ encoder's codes): its variants were judged by the PSNR of the
    ids (an fp16 variant passed at 47 dB moving 4.6% of the codes; int8's refusal read '22 dB')."""
    from types import SimpleNamespace

    from edgegen.optimize import gate_variant, optimize_package

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((16, 8)).astype(np.float32)} for _ in range(4)]
    pkg = export_pytorch(NearestCode().eval(), feeds[0], tmp_path / "pkg", held_out=feeds)
    record = optimize_package(pkg, "fp16", target="tensorrt", progress=lambda *a, **k: None)["model"]
    assert record["gate"]["metric"] == "PSNR dB" and set(record["gate"]["agreement"]) == {"output.0"}
    assert re.search(r", output\.0 agreement [0-9.]+ (>=|<) 0\.95$", record["gate"]["line"]), record["gate"]["line"]

    def session(codes):
        return SimpleNamespace(outputs=[SimpleNamespace(name="codes")], run=lambda feed: {"codes": codes})

    truth = np.arange(100)
    moved = truth.copy()
    moved[:6] += 1   # 94 of 100 ids kept
    gate = gate_variant("generic", "fp16", session(truth), session(moved), [{}], None)
    assert (gate.metric, gate.value, gate.passed) == ("agreement", 0.94, False)
    assert gate.line() == "agreement 0.94 < 0.95 (missed by 0.01)"
    assert gate_variant("generic", "fp16", session(truth), session(truth), [{}], None).passed


def test_what_users_modules_do_is_exported_or_refused_by_its_cause(tmp_path, capsys):
    """A user's walkthrough (helper 105): each of these met a bare traceback, ONNX Runtime's or the
    checker's own words, or a refusal that blamed something else."""
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    linear = torch.nn.Linear(8, 4)

    class Dropped(torch.nn.Module):   # F.dropout's training=True default: a Dropout that draws at eval too
        def forward(self, x):
            return torch.nn.functional.dropout(x, 0.5)

    with pytest.raises(ValidationError, match=r"found random numbers drawn in forward \(Dropout '\w+' in training mode\).*"
                                              r"F.dropout\(x, p\) drops in eval mode too: give it training=self.training"):
        export_pytorch(Dropped(), {"x": x}, tmp_path / "pkg")   # it was a ParityError of max rel 1e12

    class Spectrum(torch.nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x)

    with pytest.raises(ConfigError, match=r"module: expected real outputs, found output 0 complex64 .*torch.view_as_real"):
        export_pytorch(Spectrum(), {"x": x}, tmp_path / "pkg")   # it was a ParityError of "max abs inf"
    with pytest.raises(ConfigError, match=r"output_names \(--output-name\): expected names of at least one character"):
        export_pytorch(linear, {"x": x}, tmp_path / "pkg", output_names=[""])   # it was onnx.checker's "Field 'name'"
    with pytest.raises(ConfigError, match=r"^output: expected a path, found None$"):
        export_pytorch(linear, {"x": x}, None)   # it was Path()'s TypeError

    class Symmetric(torch.nn.Module):   # needs h equal to w
        def forward(self, x):
            return x + x.transpose(2, 3)

    with pytest.raises(ValidationError, match=r"the module needs dim 'w' equal to 'h' .*give those axes one dim name"):
        export_pytorch(Symmetric(), {"x": np.ones((2, 1, 4, 4), np.float32)}, tmp_path / "pkg",
                       dynamic={"x": {0: "batch", 2: "h", 3: "w"}})

    class Ranked(torch.nn.Module):   # drawn inputs clipped to the example's range tied at its ends
        def forward(self, x):
            return x.sort(-1).values, x.topk(2, -1).indices

    export_pytorch(Ranked(), {"x": x}, tmp_path / "ranked")
    ranked = edgegen.load(tmp_path / "ranked")(x=x)
    assert np.array_equal(ranked["output.1"], Ranked()(torch.from_numpy(x))[1].numpy())

    class Scaled(torch.nn.Module):
        def forward(self, x, scale):
            return linear(x) * scale

    bf16 = torch.from_numpy(x).to(torch.bfloat16)   # numpy has none: taken as float32, as float64 is
    export_pytorch(Scaled(), {"x": bf16, "scale": np.float32(3)}, tmp_path / "scaled")   # a 0-d input was made [1]
    scaled = edgegen.load(tmp_path / "scaled")
    assert [list(s.shape) for s in scaled.inputs] == [["batch", 8], []]
    with torch.no_grad():
        expected = (linear(torch.from_numpy(x)) * 2).numpy()
    np.testing.assert_allclose(scaled(x=x, scale=np.float32(2))["output"], expected, atol=1e-6)
    with pytest.raises(InputError, match=r"^input 'scale': expected once, found it both in the dict and as a keyword$"):
        scaled({"x": x, "scale": np.float32(2)}, scale=np.float32(5))   # the keyword won without a word
    with pytest.raises(InputError, match=r"^inputs: expected a dict of \['x', 'scale'\] or names as keywords "
                                         r"\(pipe\(x=\.\.\., scale=\.\.\.\)\), found 2 positional arguments$"):
        scaled(x, np.float32(2))   # Python's TypeError (review 185)

    class SequenceFirst(torch.nn.Module):   # the trace fixes the batch of 2 in a Reshape: ONNX Runtime fails at 1
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(8, 8)

        def forward(self, x):
            return self.rnn(x)[0]

    with pytest.raises(ParityError, match=r"^export of 'SequenceFirst' does not reproduce PyTorch, package not written: "
                                          r"the graph fails at seq=\d+, batch=1, where the module runs \(graph 'model': "
                                          r"expected ONNX Runtime to run it.*the trace fixed something that depends on a size"):
        export_pytorch(SequenceFirst(), {"x": np.ones((5, 2, 8), np.float32)}, tmp_path / "pkg",
                       dynamic={"x": {0: "seq", 1: "batch"}})   # ONNX Runtime's error was all it said, exit 2
    assert not (tmp_path / "pkg").exists()

    class Thirds(torch.nn.Module):   # written as float32 division: 2**30 // 3 came out 357913952
        def forward(self, a):
            return torch.div(a, 3, rounding_mode="trunc"), a // 3

    ids = np.random.default_rng(0).integers(-20, 20, (2, 8)).astype(np.int32)
    with pytest.warns(EdgegenWarning, match=r"^export: the graph computes integers in float32 and casts them back \(at "
                                            r"\w+\): exact only while they stay below 2\*\*24"):
        export_pytorch(Thirds(), {"a": ids}, tmp_path / "thirds")
    class Floors(torch.nn.Module):
        def forward(self, a):
            return a // 3, a.float() / 3   # integers throughout, and floats out: nothing to say

    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)
        export_pytorch(Floors(), {"a": ids}, tmp_path / "floors")

    class WithBuffer(torch.nn.Module):   # fp16 failed: "Duplicate definition of name (output.1)"
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.linspace(0, 1, 3))

        def forward(self, x):
            return x * 2, self.table

    export_pytorch(WithBuffer(), {"x": x}, tmp_path / "buffer")
    assert main(["optimize", str(tmp_path / "buffer"), "--precision", "fp16", "--no-speed-check"]) == 0
    outputs = edgegen.load(tmp_path / "buffer", precision="fp16")(x=x)
    np.testing.assert_allclose(outputs["output.1"], np.linspace(0, 1, 3, dtype=np.float32), atol=1e-3)
    capsys.readouterr()


def test_optimize_refuses_feeds_at_sizes_the_package_refuses(user_model, tmp_path, capsys):
    """optimize --inputs calibrated and gated on a height past the package's limit, which the
    runtime then refuses: a variant judged on inputs it never runs."""
    root, make_model, example = user_model
    export_pytorch(make_model(), example, tmp_path / "pkg", dynamic=DYNAMIC, dim_limits={"height": 64})
    big = {f"{i}/{name}": np.zeros((1, 1, 96, 48), np.float32) for i in range(2) for name in ("image", "mask")}
    np.savez(tmp_path / "big.npz", **big)
    assert main(["optimize", str(tmp_path / "pkg"), "--precision", "int8", "--inputs", str(tmp_path / "big.npz")]) == 2
    assert re.search(r"feed 0: input 'image': expected height \d+ to 64, the sizes the package takes, found 96$",
                     capsys.readouterr().err.strip())


class _Strided(torch.nn.Module):
    """Two stride-2 convolutions and their transposes, with skips: PyTorch and the graph take
    heights and widths of multiples of 4 only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.down = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.down2 = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.up2 = torch.nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.up = torch.nn.ConvTranspose2d(4, 1, 2, stride=2)

    def forward(self, x):
        d = self.down(x)
        return x + self.up(d + self.up2(self.down2(d)))


class _EvenBranch(torch.nn.Module):
    """Right only at even widths: the trace at 16 keeps the even branch."""

    def forward(self, x):
        return x * 2 if x.shape[-1] % 2 == 0 else x * 3


class _FourOrSmall(torch.nn.Module):
    """Right at widths of a multiple of 4, and below 4: the halving checks 8, 4, 2 and 1, the step 4."""

    def forward(self, x):
        return x * 2 if x.shape[-1] % 4 == 0 or x.shape[-1] < 4 else x * 3


def test_a_strided_module_takes_the_step_its_export_found_and_the_runtime_refuses_sizes_between(tmp_path, capsys):
    """The gate tried sizes a step apart, and the package claimed every size between its least and
    its limit: a height of 33 met ONNX Runtime's "Add node" error, and a branch on an odd size the
    trace fixed gave x * 2 for the module's x * 3 without a word. The export now tries the traced
    size plus 1, 2, 4, ... and records the first step the graph matches the module at."""
    dynamic = {"x": {0: "batch", 2: "height", 3: "width"}}
    pkg = export_pytorch(_Strided(), {"x": np.random.default_rng(0).random((2, 1, 32, 32), np.float32)},
                         tmp_path / "strided", dynamic=dynamic)
    config = json.loads((pkg / "edgegen.json").read_text())["config"]
    assert config["dim_multiples"] == {"height": 4, "width": 4} and config["dim_minimums"]["height"] == 4
    pipe = edgegen.load(pkg)
    x = np.random.default_rng(1).random((1, 1, 36, 20), np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(pipe(x=x)["output"], _Strided()(torch.from_numpy(x)).numpy(), atol=1e-5)
    with pytest.raises(InputError, match=r"^input 'x': expected height 4 to 128 in multiples of 4, the sizes its export "
                                         r"checked against PyTorch, found 33: between those steps the graph did not match "
                                         r"the module \(a strided module: pad or crop to one\)$"):
        pipe(x=np.zeros((1, 1, 33, 32), np.float32))
    assert main(["bench", str(pkg), "--shapes", "height=34", "--iters", "1", "--no-energy"]) == 2
    assert "--shapes/--sweep height=34: expected a multiple of 4, the step of the sizes the package takes" in \
        capsys.readouterr().err
    assert main(["bench", str(pkg), "--sweep", "height=32,36,38", "--iters", "1", "--no-energy"]) == 2
    said = capsys.readouterr()   # refused before the first point was timed, not after two
    assert "--shapes/--sweep height=38: expected a multiple of 4" in said.err and "| model |" not in said.out
    np.savez(tmp_path / "odd.npz", **{f"{i}/x": np.zeros((1, 1, 30, 32), np.float32) for i in range(2)})
    assert main(["optimize", str(pkg), "--precision", "fp16", "--inputs", str(tmp_path / "odd.npz")]) == 2
    assert "input 'x': expected height 4 to 128 in multiples of 4, the sizes the package takes, found 30" in \
        capsys.readouterr().err

    with pytest.warns(EdgegenWarning) as said:   # at 1 too: below the halving's 2
        even = export_pytorch(_EvenBranch(), {"x": np.ones((2, 16), np.float32)}, tmp_path / "even",
                              dynamic={"x": {0: "batch", 1: "width"}})
    assert [re.match(r"export: the graph differs from the module at width (1|17)\b", str(w.message)).group(1)
            for w in said] == ["1", "17"]
    assert re.search(r"at width 17: .*MISMATCH.*: the trace fixed a size there, so the package takes width in multiples "
                     r"of 2, and the runtime refuses the others$", str(said[1].message))
    with pytest.raises(InputError, match=r"expected width 2 to 64 in multiples of 2, .* found 17"):
        edgegen.load(even)(x=np.ones((1, 17), np.float32))   # it gave 2 for the module's 3
    with pytest.warns(EdgegenWarning, match="so the package takes width in multiples of 4"):
        small = export_pytorch(_FourOrSmall(), {"x": np.ones((2, 16), np.float32)}, tmp_path / "small",
                               dynamic={"x": {0: "batch", 1: "width"}})
    config = json.loads((small / "edgegen.json").read_text())["config"]   # the least a multiple too (it said 1)
    assert config["dim_multiples"] == {"width": 4} and config["dim_minimums"]["width"] == 4


def test_a_plain_number_for_a_batch_input_and_ids_from_floats_are_taken_without_a_word(tmp_path):
    """Review of the 0-d and integer-in-float changes (helper 108): a plain number for a [batch]
    input is one row, as before (0-d is kept for a scalar input only), and a float computation whose
    integer result is an argmax's ids is no integer computed in float."""
    class Halve(torch.nn.Module):
        def forward(self, t):
            return t / 2

    export_pytorch(Halve(), {"t": np.ones(4, np.float32)}, tmp_path / "halve")
    np.testing.assert_array_equal(edgegen.load(tmp_path / "halve")(t=3.0)["output"], [1.5])
    # for an input of rank 2 or more, a plain number is no row: said as what it is, not as "found shape [1]" (review 185)
    export_pytorch(Halve(), {"t": np.ones((4, 3), np.float32)}, tmp_path / "rows")
    with pytest.raises(InputError, match=r"^input 't': expected float32\[batch, 3\], found a single number \(3.0\)$"):
        edgegen.load(tmp_path / "rows")(t=3.0)

    class Choose(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.score = torch.nn.Linear(8, 4)

        def forward(self, a):
            return self.score(a.float()).argmax(-1).int()

    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)
        export_pytorch(Choose(), {"a": np.random.default_rng(0).integers(0, 9, (2, 8))}, tmp_path / "choose")


def test_a_module_in_half_precision_is_gated_at_float16s_tolerances_and_has_no_fp16_variant_made(tmp_path):
    """Half an MLP's outputs differed by 4e-3 relative between ONNX Runtime's fp16 kernels and
    torch's, so float32's tolerances refused a right graph as a fixed size; and optimize made an
    "fp16 variant" of graphs already in fp16, gated against themselves."""
    from edgegen.optimize import optimize_package

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16)).half()
    x = torch.randn(4, 16).half().numpy()
    validation = json.loads((export_pytorch(mlp, {"x": x}, tmp_path / "pkg") / "edgegen.json").read_text()
                            )["graphs"]["model"]["validation"]
    # float32's tolerances would have refused it: it differs by more than their 1e-3 relative
    assert validation["float16_tolerances"] == [1e-3, 1e-2] and validation["max_rel"] > 1e-3
    given = json.loads((export_pytorch(mlp, {"x": x}, tmp_path / "given", atol=0.5) / "edgegen.json").read_text())
    assert given["graphs"]["model"]["validation"]["float16_tolerances"] == [0.5, 1e-2]
    record = optimize_package(tmp_path / "pkg", "fp16", target="tensorrt", progress=lambda *a, **k: None)["model"]
    assert "file" not in record and record["refused"].startswith("its weights are float16 already")
    assert not list((tmp_path / "pkg").glob("*fp16*"))


class _HalfBeside(torch.nn.Module):
    """A float32 output whose graph is 0.5% off the module (is_exporting: the trace takes the other
    branch), beside a float16 output."""

    def forward(self, x):
        y = x * 2 if torch.compiler.is_exporting() else x * 2.01
        return y, x.mean(-1).half()


def test_a_float16_output_leaves_the_float32_outputs_beside_it_at_their_own_tolerance(tmp_path):
    """One float16 output loosened every output's tolerance tenfold: a float32 output 0.5% off the
    module was written (helper 142). Each output is now held to its own precision's."""
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(ParityError, match=r"output\.0 .*float16 outputs at atol 0\.001, rtol 0\.01"):
        export_pytorch(_HalfBeside(), {"x": x}, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


class _PaddedEncoder(torch.nn.Module):
    def __init__(self, nested: bool, as_attention_mask: bool = False):
        super().__init__()
        layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested)
        self.as_attention_mask = as_attention_mask

    def forward(self, x, mask):
        if self.as_attention_mask:   # a [seq, seq] mask: PyTorch's fast path is off with one
            return self.encoder(x, mask=mask[0, :, None] & mask[0, None, :])
        return self.encoder(x, src_key_padding_mask=mask)


def test_a_transformer_encoders_nested_tensor_fast_path_is_said(tmp_path):
    """Its fast path zeroes padded positions where the padding ends a row; the gate's random masks
    seldom do, so such an export passed or failed by chance (helper 142)."""
    x = np.random.default_rng(0).random((2, 6, 16)).astype(np.float32)
    mask = np.zeros((2, 6), bool)
    mask[:, 4:] = True
    with pytest.warns(EdgegenWarning, match="TransformerEncoder encoder runs PyTorch's nested-tensor fast path.*"
                                            "enable_nested_tensor=False"):
        with contextlib.suppress(ValidationError):   # passed or refused by its draws: the warning is the finding
            export_pytorch(_PaddedEncoder(True).eval(), {"x": x, "mask": mask}, tmp_path / "pkg", opset=18, dynamic={})
    for quiet, out in ((_PaddedEncoder(False), "plain"), (_PaddedEncoder(True, as_attention_mask=True), "attention")):
        with warnings.catch_warnings():   # no fast path, or a mask it is not taken with: nothing to say (review 148)
            warnings.filterwarnings("error", message=".*nested-tensor fast path", category=EdgegenWarning)
            with contextlib.suppress(ValidationError):
                export_pytorch(quiet.eval(), {"x": x, "mask": mask}, tmp_path / out, opset=18, dynamic={})


class _SquareBranch(torch.nn.Module):
    def forward(self, x):
        if x.shape[2] == x.shape[3]:   # the trace at 32 x 48 fixes the other branch
            return x * 0
        return x * 2


def test_a_branch_on_two_sizes_being_equal_is_refused(tmp_path):
    """Every other feed of the gate moves one dim at a time, so the trace's fixed branch on a
    square picture passed, and the package answered every square input wrongly (helper 142)."""
    x = np.random.default_rng(0).random((2, 1, 32, 48)).astype(np.float32)
    with pytest.raises(ParityError, match="where h and w are both 48 .*traced at 32 and 48.*branch on the two being equal"):
        export_pytorch(_SquareBranch(), {"x": x}, tmp_path / "pkg", dynamic={"x": {0: "batch", 2: "h", 3: "w"}})
    assert not (tmp_path / "pkg").exists()


class _ExactSizeBranch(torch.nn.Module):
    def __init__(self, size):
        super().__init__()
        self.size = size

    def forward(self, x):
        if x.shape[-1] == self.size:   # the trace at 64 takes the other branch for every width
            return x * 0
        return x * 2


def test_a_branch_on_one_exact_size_is_gated_there(tmp_path):
    """The gate's sizes step over one size, so a branch the trace fixed on width == 50 passed and
    the package answered every width 50 wrongly (helper 142): the trace's conditions on sizes
    are gated where they do not hold. A branch the runtime never reaches (a size below the
    least the package takes) or that changes nothing passes."""
    x = np.random.default_rng(0).random((2, 3, 64)).astype(np.float32)
    dynamic = {"x": {0: "batch", 2: "width"}}
    with pytest.raises(ParityError, match=r"at width 50, package not written: .*the trace took a branch on width != 50 "
                                          r"\(at width 64\), which width 50 does not meet"):
        export_pytorch(_ExactSizeBranch(50), {"x": x}, tmp_path / "pkg", dynamic=dynamic)
    assert not (tmp_path / "pkg").exists()
    export_pytorch(_ExactSizeBranch(50), {"x": x}, tmp_path / "fixed", dynamic={"x": {0: "batch"}})   # width fixed at 64

    class Harmless(torch.nn.Module):
        def forward(self, x):
            return x * 1.0 if x.shape[-1] == 50 else x   # the same values either way
    export_pytorch(Harmless(), {"x": x}, tmp_path / "harmless", dynamic=dynamic)


class _Branches(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        if self.kind == "eighths":
            taken = x.shape[-1] // 8 == 5   # widths 40 to 47: far from the constants 8 and 5
        elif self.kind == "batch":
            taken = x.shape[0] == 32        # past the batch's limit of 16, which the runtime takes
        elif self.kind == "batches":
            taken = x.shape[0] > 100        # a bound torch.export keeps as the batch's range (review 154)
        else:
            return x[..., :100] * 2 if x.shape[-1] > 100 else x * 2   # a bound: torch.export keeps it as a range
        return x * 0 if taken else x * 2


def test_conditions_are_gated_where_they_turn_whatever_their_constants_and_bounds_name_their_limit(tmp_path):
    """Review 153: a condition was tried only beside its constants and the traced size (width // 8
    == 5 passed), a batch condition only within the limit the runtime passes, and a bound kept
    as a range (T <= 100) was refused at the limit without naming it."""
    x = np.random.default_rng(0).random((2, 3, 64)).astype(np.float32)
    dynamic = {"x": {0: "batch", 2: "width"}}
    with pytest.raises(ParityError, match=r"at width 47, .*the trace took a branch on \(width//8\) != 5 \(at width 64\)"):
        export_pytorch(_Branches("eighths"), {"x": x}, tmp_path / "a", dynamic=dynamic)
    with pytest.raises(ParityError, match=r"at batch 32, .*the trace took a branch on batch != 32 \(at batch 2\)"):
        export_pytorch(_Branches("batch"), {"x": x}, tmp_path / "b", dynamic=dynamic)
    with pytest.raises(ParityError, match=r"at batch 101, .*batch <= 100 \(at batch 2\), which batch 101 does not meet: "
                                          r"take the branch out of forward"):   # no --limit: the runtime takes any batch
        export_pytorch(_Branches("batches"), {"x": x}, tmp_path / "b", dynamic=dynamic)
    # a range past the sizes judged one by one: the 4,096 nearest the traced one still are (review 154)
    with pytest.raises(ParityError, match=r"at width 47, "):
        export_pytorch(_Branches("eighths"), {"x": x}, tmp_path / "a", dynamic=dynamic, dim_limits={"width": 100_000})
    with pytest.raises(ParityError, match=r"the trace took a branch on width <= 100: give --limit width=100 \(dim_limits\)"):
        export_pytorch(_Branches("bound"), {"x": x}, tmp_path / "c", dynamic=dynamic)
    export_pytorch(_Branches("bound"), {"x": x}, tmp_path / "c", dynamic=dynamic, dim_limits={"width": 100})
    # said as Python writes it, not in torch's sympy functions
    import sympy
    from torch.utils._sympy.functions import CeilToInt, IntTrueDiv, PythonMod

    from edgegen.export.onnx_export import SizeCondition

    s = sympy.Symbol("s0", integer=True, positive=True)
    assert SizeCondition(sympy.Eq(PythonMod(s, 7), 3), {s: "width"}).said({"width": 64}) == "(width % 7) != 3"
    assert SizeCondition(sympy.Ne(CeilToInt(IntTrueDiv(s, 8)), 6), {s: "width"}).said({"width": 64}) == \
        "ceil((width / 8)) != 6"


class _KeyPadded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x, mask):
        return self.attention(x, x, x, key_padding_mask=mask, need_weights=False)[0]


def test_drawn_padding_masks_keep_a_key_in_every_row_as_the_example_does(tmp_path):
    """The gate drew a bool mask's values independently, so a row at a small size came out all
    padding, PyTorch itself gave NaN there, and the export was refused (helper 142); rows are drawn
    as the example's are: never all True (or all False) where none of its rows is."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(2, 8, 16)).astype(np.float32)
    mask = np.zeros((2, 8), bool)
    mask[0, 2:], mask[1, 1:] = True, True   # mostly padding: a drawn row of few keys was often all of it
    seq = {0: "batch", 1: "seq"}
    export_pytorch(_KeyPadded().eval(), {"x": x, "mask": mask}, tmp_path / "pkg", opset=18, dynamic={"x": seq, "mask": seq})
    feeds = read_feeds(tmp_path / "pkg" / "held_out.npz")
    assert all(not f["mask"].all(axis=-1).any() and not (~f["mask"]).all(axis=-1).any() for f in feeds)
    # the later checks' feeds too, one key a row among them: the package takes one token (review 153: the mask was
    # flattened for them, every one-key row came out padding, NaN in PyTorch, and the least size became 2)
    assert json.loads((tmp_path / "pkg" / "edgegen.json").read_text())["config"]["dim_minimums"]["seq"] == 1


class _CausalKeyPadded(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = torch.nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x, causal, padding):
        return self.attention(x, x, x, attn_mask=causal, key_padding_mask=padding, need_weights=False)[0]


@pytest.mark.parametrize("opset", [18, 23])
def test_two_masks_a_module_combines_keep_the_key_every_example_row_keeps(tmp_path, opset):
    """nn.MultiheadAttention given a causal attn_mask and a right-padded key_padding_mask (True:
    masked, in both) was refused: the gate drew each mask's rows apart, each kept some key, but
    combined a query often kept none, PyTorch itself gave NaN, and the export stopped there
    (review 188). The first key, kept in every example row of both, is kept in every drawn one."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(3, 6, 16)).astype(np.float32)
    causal = np.triu(np.ones((6, 6), bool), 1)
    padding = np.zeros((3, 6), bool)
    padding[1, 4:], padding[2, 2:] = True, True
    dynamic = {"x": {0: "batch", 1: "seq"}, "causal": {0: "seq", 1: "seq"}, "padding": {0: "batch", 1: "seq"}}
    export_pytorch(_CausalKeyPadded().eval(), {"x": x, "causal": causal, "padding": padding}, tmp_path / "pkg",
                   opset=opset, dynamic=dynamic)
    feeds = read_feeds(tmp_path / "pkg" / "held_out.npz")
    assert all(not (f["causal"][None] | f["padding"][:, None, :]).all(axis=-1).any() for f in feeds)
    assert any(f["padding"][:, 0].size and f["padding"].any() for f in feeds)   # padding was drawn, not left out


def test_a_query_row_a_bool_mask_masks_whole_gives_pytorchs_zeros_at_every_opset(tmp_path):
    """F.scaled_dot_product_attention with a bool mask: below opset 23 (the Jetson targets' 18 and
    21) torch.onnx's graph gave a query row masked whole the average of the values where PyTorch
    gives zeros, and the gate, which draws no such row, passed it."""
    class Attend(torch.nn.Module):
        def forward(self, q, mask):
            return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)

    q = np.random.default_rng(0).standard_normal((2, 2, 5, 4)).astype(np.float32)
    mask = np.ones((2, 1, 5, 5), bool)
    mask[..., 3:] = False
    whole = mask.copy()
    whole[0, 0, 4] = False   # the last query of the first batch row attends to no key
    want = Attend()(torch.from_numpy(q), torch.from_numpy(whole)).numpy()
    assert not want[0, :, 4].any() and want[0, :, :4].all()
    for opset in (18, 23):   # from 23, ONNX's Attention op
        pipe = edgegen.load(export_pytorch(Attend(), {"q": q, "mask": mask}, tmp_path / str(opset), opset=opset))
        np.testing.assert_allclose(pipe(q=q, mask=whole)["output"], want, rtol=1e-5, atol=1e-6)


def test_a_folder_named_like_a_package_torch_looks_for_is_named(tmp_path, monkeypatch):
    """`edgegen triton --out triton`, then an export there: torch took the folder for the triton
    package and failed in it, said as the module's fault (helper 155)."""
    (tmp_path / "triton").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))   # as `python -m` puts the working directory there
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    with pytest.raises(ConfigError, match=r"^folder '.*triton': expected no folder named 'triton' on Python's path .*"
                                          r"rename it, or run edgegen from another folder$"):
        export_pytorch(torch.nn.Linear(4, 2), {"x": np.ones((2, 4), np.float32)}, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()


def test_optimize_refuses_gate_feeds_on_which_the_fp32_graph_itself_gives_nan(tmp_path):
    """fp32's own NaN made the PSNR NaN, which the gate's min() passed over: an int8 variant that
    missed its gate (8.6 dB) was written as "PSNR dB inf"."""
    from edgegen.optimize import optimize_package

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 8))
    pkg = export_pytorch(net, {"x": np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)}, tmp_path / "pkg")
    feeds = {f"{i}/x": np.random.default_rng(i).normal(size=(4, 8)).astype(np.float32) for i in range(6)}
    feeds["5/x"][0] = 3e38   # finite in, inf - inf out (a gate feed: the second half)
    np.savez(tmp_path / "feeds.npz", **feeds)
    with pytest.raises(InputError, match=r"^int8 gate: expected the fp32 graph's outputs to judge the variant "
                                         r"against, found '\w+' holding NaN or Inf on feed 3 of the 3 it judges on"):
        optimize_package(pkg, "int8", inputs=tmp_path / "feeds.npz", speed_check=False, progress=lambda *a, **k: None)
    assert "int8" not in json.loads((pkg / "edgegen.json").read_text()).get("variants", {})


def test_an_example_batch_past_16_is_its_own_limit(tmp_path):
    """An example of 32 rows was refused as "example_dims expected within dim_limits", a limit
    nobody set: the default batch limit is 16, or the example's batch where that is larger."""
    linear = torch.nn.Linear(4, 2)
    pkg = export_pytorch(linear, {"x": np.ones((32, 4), np.float32)}, tmp_path / "pkg")
    assert json.loads((pkg / "edgegen.json").read_text())["config"]["dim_limits"] == {"batch": 32}


def test_a_key_padding_mask_exports_at_opset_23_and_the_attention_kernels_failure_is_said_with_the_opset_that_works(
        tmp_path, monkeypatch):
    """nn.TransformerEncoder with src_key_padding_mask: at opset 23 ONNX Runtime's Attention kernel
    failed on the mask torch writes ([batch, 1, 1, keys]), and the export was refused; it is expanded
    over the queries now. Where the kernel fails, the reason was cut off behind its C++ signature and
    the advice was about fixed sizes: opset 18 exports it."""
    from edgegen.export import translations

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(50, 16)
            self.encoder = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0,
                                                                                        batch_first=True), 1,
                                                       enable_nested_tensor=False)   # as docs say

        def forward(self, ids, mask):
            return self.encoder(self.embed(ids), src_key_padding_mask=mask)

    torch.manual_seed(0)
    mask = np.zeros((2, 8), bool)
    mask[1, 6:] = True
    example = {"ids": np.random.default_rng(0).integers(0, 50, (2, 8)), "mask": mask}
    dynamic = {"ids": {0: "batch", 1: "tokens"}, "mask": {0: "batch", 1: "tokens"}}
    encoder = Encoder().eval()
    pkg = export_pytorch(encoder, example, tmp_path / "pkg", dynamic=dynamic)
    feeds = {"ids": np.random.default_rng(1).integers(0, 50, (3, 11)), "mask": np.zeros((3, 11), bool)}
    feeds["mask"][0, 7:] = feeds["mask"][2, 2:] = True
    with torch.no_grad():
        want = encoder(torch.from_numpy(feeds["ids"]), torch.from_numpy(feeds["mask"])).numpy()
    np.testing.assert_allclose(edgegen.load(pkg)(**feeds)["output"], want, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(translations, "_broadcast_over_queries_or_keys", lambda *args: False)   # the mask as torch writes it
    with pytest.raises(ParityError, match=r"Status Message: .*inconsistent q_sequence_length.*: export with "
                                          r"--opset 18 \(opset=18\), where attention is MatMul, Softmax and MatMul$"):
        export_pytorch(Encoder(), example, tmp_path / "refused", dynamic=dynamic)
    assert (export_pytorch(Encoder(), example, tmp_path / "refused", dynamic=dynamic, opset=18) / "model.onnx").is_file()


@pytest.mark.parametrize("mask_shape", [(1, 5), (2, 4, 1, 5), (5, 1), (2, 1, 1, 5)])
def test_attention_masks_broadcast_over_queries_or_keys_export_at_opset_23(tmp_path, mask_shape):
    """ONNX's Attention op broadcasts its mask, ONNX Runtime's kernel did not: a mask of one row for
    every query (a key-padding mask) or one column for every key was refused at the default opset,
    with 4 query heads to 2 key heads (grouped-query attention) too."""
    class Attend(torch.nn.Module):
        def forward(self, q, k, v, mask):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                    enable_gqa=k.shape[1] != q.shape[1])

    rng = np.random.default_rng(0)
    heads = 2 if mask_shape == (2, 1, 1, 5) else 4   # a key-padding mask with grouped-query attention
    q = rng.standard_normal((2, 4, 5, 8)).astype(np.float32)
    k, v = (rng.standard_normal((2, heads, 5, 8)).astype(np.float32) for _ in "kv")
    # a float mask of a column per key would mask a query's keys all or none: bool masks keep a key
    mask = rng.standard_normal(mask_shape).astype(np.float32) if mask_shape[-1] == 1 else rng.random(mask_shape) > 0.3
    axes = {0: "batch", 2: "queries"}
    dims = {len(mask_shape) - 2: "queries", len(mask_shape) - 1: "keys"}
    dynamic = {"q": axes, "k": {0: "batch", 2: "keys"}, "v": {0: "batch", 2: "keys"},
               "mask": {axis: name for axis, name in dims.items() if mask_shape[axis] != 1}}
    if len(mask_shape) == 4:
        dynamic["mask"][0] = "batch"
    if mask.dtype == bool:
        mask[..., 0] = True
    assert export_pytorch(Attend(), {"q": q, "k": k, "v": v, "mask": mask}, tmp_path / "pkg", dynamic=dynamic).is_dir()


def test_int8_calibration_counts_feeds_where_the_leading_dim_is_no_batch(tmp_path):
    """A point cloud's [points, 3]: its calibration was recorded as 404 inputs, the points."""
    from edgegen.optimize import optimize_package

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 3))
    pkg = export_pytorch(net, {"pts": np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)},
                         tmp_path / "pkg", dynamic={"pts": {0: "points"}})
    record = optimize_package(pkg, "int8", speed_check=False, progress=lambda *a, **k: None)["model"]
    assert record["calibration"]["inputs"] == len(read_feeds(pkg / "held_out.npz")) // 2


class _Scaled(torch.nn.Module):
    def __init__(self, scale: float):
        super().__init__()
        self.linear, self.scale = torch.nn.Linear(8, 8), scale

    def forward(self, x):
        return torch.tanh(self.linear(x)) * self.scale


def test_exports_from_several_threads_at_once_each_write_their_own_module(tmp_path):
    """Exports in a thread pool failed inside torch.export ("Error while creating guard") and left
    the process's stdout and stderr swallowed by the exporter's redirects after they had all ended
    (review 189): each thread's trace now waits for the one before it."""
    from concurrent.futures import ThreadPoolExecutor

    x = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    torch.manual_seed(0)
    modules = [_Scaled(scale).eval() for scale in (1.0, 2.0, 3.0, 4.0)]
    streams = sys.stdout, sys.stderr
    with ThreadPoolExecutor(4) as pool:
        packages = list(pool.map(lambda i: export_pytorch(modules[i], {"x": x}, tmp_path / f"pkg{i}"), range(4)))
    assert (sys.stdout, sys.stderr) == streams
    for module, package in zip(modules, packages):
        with torch.inference_mode():
            expected = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(edgegen.load(package).run({"x": x})["output"], expected, rtol=1e-5, atol=1e-6)


def test_drawn_flags_keep_every_key_drawn_where_a_masks_ends_are_held():
    """A bool input whose rows are flags, not a mask's runs, keeps both values at every key though
    every example row holds one value at its ends (review 190: they were held there too); a
    padding mask's first key, kept in every example row, stays kept."""
    from edgegen.families.generic.export import _draw_like

    rng = np.random.default_rng(0)
    flags = np.array([[1, 0, 1, 1, 0, 1], [1, 1, 0, 0, 1, 1]], bool)   # both ends True in each row
    drawn = np.stack([_draw_like(flags, (4, 6), rng) for _ in range(50)])
    assert drawn[..., 0].any() and not drawn[..., 0].all() and drawn[..., -1].any() and not drawn[..., -1].all()
    padding = np.array([[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]], bool)   # True: padding
    drawn = np.stack([_draw_like(padding, (4, 6), rng) for _ in range(50)])
    assert not drawn[..., 0].any() and drawn[..., 1:].any()


class _WaitsWhileTraced(torch.nn.Module):
    def __init__(self, tracing, printed):
        super().__init__()
        self.tracing, self.printed = tracing, printed

    def forward(self, x):
        print("the module's own line")
        if torch.compiler.is_exporting():   # while torch.export traces it: let the other thread print
            self.tracing.set()
            self.printed.wait(30)
        return x * 2


def test_what_other_threads_print_while_an_export_traces_is_kept(tmp_path, capfd):
    """The exporter's narration is hidden by replacing sys.stdout and sys.stderr, which are the
    process's: a server's other threads printed into nothing while a trace ran (review 191)."""
    import threading

    tracing, printed = threading.Event(), threading.Event()

    def other():
        if tracing.wait(60):
            print("another thread's line")
            print("another thread's warning", file=sys.stderr)
        printed.set()

    thread = threading.Thread(target=other)
    thread.start()
    x = np.ones((2, 3), np.float32)
    try:
        export_pytorch(_WaitsWhileTraced(tracing, printed), {"x": x}, tmp_path / "pkg")
    finally:
        printed.set()
        thread.join()
    out, err = capfd.readouterr()
    assert tracing.is_set() and "another thread's line" in out and "another thread's warning" in err
