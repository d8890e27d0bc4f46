import warnings

import numpy as np
import pytest
import torch

import edgegen
from edgegen.cli import main
from edgegen.errors import ConfigError, InputError, NonFiniteError
from edgegen.training.checkpoint import load_checkpoint
from edgegen.training.data import load_images
from edgegen.families.flow.model import make_points, standard_normal_log_prob


@pytest.fixture(scope="module")
def flow2d(trained):
    return edgegen.load(trained["flow2d"][1], backend="ort-cpu")


@pytest.fixture(scope="module")
def glow(trained):
    return edgegen.load(trained["flow"][1], backend="ort-cpu")


@pytest.fixture(scope="module")
def digits():
    return load_images("digits", image_size=8).test[:6]


def test_round_trips_through_onnx(flow2d, glow, digits):
    x = make_points("moons", 64, seed=9)
    assert np.abs(flow2d.decode(flow2d.encode(x)) - x).max() < 1e-4
    z = np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32)
    assert np.abs(flow2d.encode(flow2d.decode(z)) - z).max() < 1e-4
    assert np.abs(glow.decode(glow.encode(digits)) - digits).max() < 1e-3
    z = 0.7 * np.random.default_rng(1).standard_normal((6, 64)).astype(np.float32)
    assert np.abs(glow.encode(glow.decode(z)) - z).max() < 1e-3


def test_2d_logdet_equals_finite_difference_jacobian_of_the_exported_graph(flow2d):
    x = make_points("moons", 8, seed=3).astype(np.float64)
    logdet = flow2d.sessions["forward"].run({"x": x.astype(np.float32)})["logdet"]
    h = 1e-3  # central differences: O(h^2) error, float32 noise ~1e-7 / h
    for i in range(len(x)):
        jac = np.zeros((2, 2))
        for j in range(2):
            step = np.zeros(2)
            step[j] = h
            plus = flow2d.encode((x[i] + step)[None].astype(np.float32))[0].astype(np.float64)
            minus = flow2d.encode((x[i] - step)[None].astype(np.float32))[0].astype(np.float64)
            jac[:, j] = (plus - minus) / (2 * h)
        expected = np.log(abs(np.linalg.det(jac)))
        assert logdet[i] == pytest.approx(expected, rel=0.01, abs=0.01)


def test_image_logdet_equals_pytorch_autograd_jacobian(trained, glow, digits):
    model = load_checkpoint(trained["flow"][0]).model.freeze()
    x = torch.from_numpy(np.clip(digits[:2], 0.02, 0.98))
    logdet = glow.sessions["forward"].run({"x": x.numpy()})["logdet"]
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda v: model.net(v[None])[0][0], x[i].double().float())
        expected = torch.linalg.slogdet(jac.reshape(64, 64).double())[1].item()
        assert logdet[i] == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("batch", [1, 3])
def test_log_prob_matches_pytorch(trained, flow2d, glow, digits, batch):
    for name, pipe, x in (("flow2d", flow2d, make_points("circles", batch, 2)), ("flow", glow, digits[:batch])):
        model = load_checkpoint(trained[name][0]).model.freeze()
        with torch.inference_mode():
            z, logdet = model.net(torch.from_numpy(x))
            ref = (standard_normal_log_prob(z) + logdet).numpy()
        np.testing.assert_allclose(pipe.log_prob(x), ref, rtol=1e-4)


def test_sampling_interpolation_and_scores(flow2d, glow, digits):
    points = flow2d.sample(500, seed=0)
    assert points.shape == (500, 2)
    np.testing.assert_array_equal(points, flow2d.sample(500, seed=0))
    cold = flow2d.sample(500, seed=0, temperature=0.0)
    assert np.allclose(cold, cold[0])  # every zero latent decodes to the same point
    images = glow.sample(4, seed=1, temperature=0.7)
    assert images.shape == (4, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    path = glow.interpolate(digits[:2], digits[2:4], steps=5)
    assert path.shape == (2, 5, 1, 8, 8) and path.min() >= 0 and path.max() <= 1   # pictures (review 173: -0.016)
    np.testing.assert_allclose(path[:, 0], digits[:2], atol=1e-3)
    bpd = glow.bits_per_dim(digits)
    assert bpd.shape == (6,) and np.isfinite(bpd).all() and (bpd > 0).all()
    noise = np.random.default_rng(2).random((6, 1, 8, 8), dtype=np.float32)
    assert glow.anomaly_score(noise).min() > glow.anomaly_score(digits).max()
    assert (flow2d.anomaly_score(make_points("moons", 10, 5)) < flow2d.anomaly_score(np.full((10, 2), 5.0, np.float32))).all()


def test_the_inverse_graphs_gate_draws_latents_as_sampling_does(trained):
    """Half the gate's latents come from the prior at sampling's default temperature, 1: drawn at
    0.8, flow-moons' int8 variant passed at 32 dB and decoded default samples at 29 (review 174)."""
    from edgegen.families.flow.export import _flow_data, _flow_z

    ckpt = load_checkpoint(trained["flow2d"][0])
    z = _flow_z(ckpt, 4000, np.random.default_rng(0), _flow_data(ckpt, ckpt.trained_data()))["z"]
    assert np.std(z[1::2]) == pytest.approx(1.0, abs=0.03)


def test_bits_per_dim_uses_the_training_bins(glow, digits):
    """A pixel between the grey levels (a picture file resized) falls in the level training puts it
    in, round(x * 16) of 17, as a clean k/16 pixel does (a floor of x * 17 put a fifth of a resized
    picture's pixels one level off: helper 146); the figure is -log2 P(bin) per pixel, the density at
    the bin centre times the bin width."""
    between = np.clip(digits + np.random.default_rng(3).uniform(-0.03, 0.03, digits.shape), 0, 1).astype(np.float32)
    as_trained = (np.round(between * 16) / 16).astype(np.float32)
    np.testing.assert_allclose(glow.bits_per_dim(between), glow.bits_per_dim(as_trained), rtol=1e-6)
    centres = ((np.round(digits * 16) + 0.5) / 17).astype(np.float32)
    expected = (-glow.log_prob(centres).astype(np.float64) + 64 * np.log(17)) / (64 * np.log(2))
    np.testing.assert_allclose(glow.bits_per_dim(digits), expected, rtol=1e-5)


def test_flow_input_errors(flow2d, glow, trained, tmp_path):
    with pytest.raises(InputError, match=r"points: expected shape \[n, 2\], found \[3, 3\]"):
        flow2d.log_prob(np.zeros((3, 3), np.float32))
    with pytest.raises(InputError, match="temperature: expected a number at least 0"):
        glow.sample(2, temperature=-1)
    with pytest.raises(NonFiniteError, match=r"^temperature: expected one whose latents the model decodes \(near 1\), "
                                             r"found 1e\+06 \(graph 'inverse': expected finite outputs"):
        glow.sample(2, temperature=1e6)   # it named the graph alone
    with pytest.raises(InputError, match="x2: expected as many examples as x1"):
        glow.interpolate(np.zeros((2, 1, 8, 8), np.float32), np.zeros((3, 1, 8, 8), np.float32))
    with pytest.raises(InputError, match=r"steps: expected at least 2 images \(both ends of the line\), found 1"):
        glow.interpolate(np.zeros((2, 1, 8, 8), np.float32), np.zeros((2, 1, 8, 8), np.float32), steps=1)
    with pytest.raises(InputError, match="bits_per_dim: expected an image flow package"):
        flow2d.bits_per_dim(np.zeros((2, 2), np.float32))
    # 0-255 pictures were clipped to white and scored; a density float32 cannot hold was -inf
    with pytest.raises(InputError, match=r"images: expected values in \[0, 1\] .*found 0..255$"):
        glow.anomaly_score(np.linspace(0, 255, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8))
    with pytest.raises(NonFiniteError, match="log_prob: expected log densities float32 holds"):
        flow2d.log_prob(np.full((1, 2), 1e30))
    # pictures past the logit's domain have no density: refused as the input, not as the graph's NaN
    for method in (glow.log_prob, glow.encode):
        with pytest.raises(InputError, match=r"^images: expected values in \[0, 1\] \(the model's logit takes them from "
                                             r"-0.05556 to 1.056, ends excluded: .*\), found 0..3$"):
            method(np.linspace(0, 3, 2 * 64, dtype=np.float32).reshape(2, 1, 8, 8))
    edge = np.full((1, 1, 8, 8), 1.05, np.float32)   # past [0, 1], within the domain: a density, as decode's output has
    assert np.isfinite(glow.log_prob(edge)).all()
    from edgegen.errors import DataError
    from edgegen.export import export_checkpoint

    with pytest.raises(DataError, match="expected 2-D points .* found images"):
        export_checkpoint(trained["flow2d"][0], tmp_path / "pkg", data="digits")
    with pytest.raises(DataError, match="expected images for this glow checkpoint, found points"):
        export_checkpoint(trained["flow"][0], tmp_path / "pkg", data="moons")


@pytest.mark.parametrize("package, kind, message", [
    ("flow", "realnvp", r"data_shape expected \[dims\] points for realnvp, found \[1, 8, 8\] and image_shape \[1, 8, 8\]"),
    ("flow2d", "glow", r"data_shape expected \[channels, height, width\] images for glow, found \[2\]"),
])
def test_a_kind_other_than_the_datas_is_refused_at_load(trained, tmp_path, package, kind, message):
    """glow read as realnvp ran: other log-densities, and anomaly scores in nats, not bits/dim."""
    import json
    import shutil

    from edgegen.errors import ManifestError

    copy = shutil.copytree(trained[package][1], tmp_path / "pkg")
    manifest = json.loads((copy / "edgegen.json").read_text())
    manifest["config"]["kind"] = kind
    (copy / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=message):
        edgegen.load(copy)


def test_generate_density_plot_and_image_grid(trained, tmp_path):
    out = tmp_path / "density.png"
    assert main(["generate", str(trained["flow2d"][1]), "--n", "500", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    grid = tmp_path / "grid.png"
    assert main(["generate", str(trained["flow"][1]), "--n", "9", "--temperature", "0.7", "--out", str(grid)]) == 0
    assert grid.read_bytes()[:4] == b"\x89PNG"
    for flag in ("--nrow", "--scale"):   # a density plot draws no grid: they were ignored
        assert main(["generate", str(trained["flow2d"][1]), "--n", "50", flag, "3", "--out", str(tmp_path / "n.png")]) == 2
    assert not (tmp_path / "n.png").exists()
    # samples at one point (one sample, or temperature 0) span nothing: the plot spans a unit square around them
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # matplotlib's "identical low and high ylims", numpy's division by 0
        for args in (["--n", "1"], ["--n", "50", "--temperature", "0"]):
            assert main(["generate", str(trained["flow2d"][1]), *args, "--out", str(tmp_path / "one.png")]) == 0


def test_a_temperature_whose_samples_the_plot_cannot_draw_is_named_by_its_flag(trained, tmp_path, capsys):
    """The plot's log densities of points drawn at 1e30 overflow float32: it said log_prob, which the
    user never called, where the image flow names --temperature."""
    out = tmp_path / "far.png"
    assert main(["generate", str(trained["flow2d"][1]), "--temperature", "1e30", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("edgegen: error: --temperature: expected one whose samples' log densities "
                                              "the plot can draw (near 1), found 1e+30 (log_prob: expected log densities")
    assert not out.exists()


def test_a_density_map_without_matplotlib(trained, tmp_path, monkeypatch):
    """The runtime alone has no matplotlib: the heat map is drawn with Pillow, the likelier places
    brighter and the samples as white dots where they fall."""
    import sys

    from PIL import Image

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "density.png"
    assert main(["generate", str(trained["flow2d"][1]), "--n", "2000", "--seed", "0", "--out", str(out)]) == 0
    picture = np.asarray(Image.open(out).convert("RGB"), np.float32)
    assert picture.shape == (400, 400, 3)
    brightness = picture.sum(axis=2)
    whitish = (picture.min(axis=2) > 140).mean()   # half-white dots over the map
    assert 0.001 < whitish < 0.5, whitish
    assert brightness.max() - brightness.min() > 300   # a map, not one colour


def test_a_glow_fine_tuned_from_a_checkpoint_keeps_its_actnorms(trained, tmp_path):
    """Glow's trainer sets every ActNorm from the first batch: train --init loaded the checkpoint
    and that first step overwrote them, starting the fine-tune from a damaged model."""
    from edgegen.training.train import train

    start = trained["flow"][0]
    tuned = train("flow", tmp_path / "tuned", init=start, steps=1, batch_size=16, lr=1e-12, progress=False)
    before, after = load_checkpoint(start).model.state_dict(), load_checkpoint(tuned).model.state_dict()
    actnorms = [name for name in before if "actnorm" in name]
    assert actnorms and all(torch.allclose(before[name], after[name], atol=1e-6) for name in actnorms)
    # points given to a model of images: said as the data's doing, not as options to leave out
    with pytest.raises(ConfigError, match=r"; the data, 'moons', changes kind 'glow' -> 'realnvp'[^:]*: give data of the "
                                          r"checkpoint's kind \(its classes, its channels; 'digits' trained it\)$"):
        train("flow", tmp_path / "points", init=start, data="moons", steps=1, progress=False)


def test_a_realnvp_fine_tuned_on_other_points_records_the_standardization_its_weights_hold(trained, tmp_path):
    """--init kept the start's mean and std buffers (its weights) while config.json took the new
    data's: the checkpoint said one standardization and ran another (helper 130)."""
    from edgegen.training.train import train

    start = load_checkpoint(trained["flow2d"][0])
    tuned = load_checkpoint(train("flow", tmp_path / "tuned", init=trained["flow2d"][0], data="circles", steps=1,
                                  batch_size=16, lr=1e-12, progress=False))
    assert tuned.data["source"] == "circles"
    assert tuned.config.data_mean == start.config.data_mean and tuned.config.data_std == start.config.data_std
    buffers = {name: value for name, value in tuned.model.state_dict().items() if name.endswith(("mean", "std"))}
    assert buffers and all(np.allclose(value.numpy(), getattr(tuned.config, f"data_{name.rsplit('.', 1)[1]}"))
                           for name, value in buffers.items())


def test_a_flow_variant_judged_before_its_density_check_is_said_at_load(package_copy):
    """An int8 density graph written by PSNR alone (before 2026-12-05) loaded without a word, though
    the density check refuses such variants (flow-digits' int8 was up to 29 nats off; helper 132)."""
    import json

    from edgegen.errors import PrecisionWarning
    from edgegen.optimize import optimize_package

    pkg = package_copy("flow2d")
    optimize_package(pkg, "fp16", speed_check=False, progress=lambda line: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edgegen.load(pkg, precision="fp16")   # judged by the density check: nothing to say
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["variants"]["fp16"]["forward"]["gate"].pop("log_density_error")
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.warns(PrecisionWarning, match=r"fp16 variant of forward in .*: expected a gate record of the log "
                                              r"densities it gives .*found one of PSNR alone .*: run edgegen optimize "
                                              r"--precision fp16 again to judge it"):
        edgegen.load(pkg, precision="fp16")
    # a Triton repository serving it says so too (its server loads it where nobody reads the warning)
    from edgegen.serving.triton import RepositoryOptions, write_repository

    with pytest.warns(PrecisionWarning, match=r"fp16 variant of forward .*found one of PSNR alone"):
        write_repository([str(pkg)], pkg.parent / "models", RepositoryOptions(precision="fp16"), report=lambda line: None)



@pytest.mark.parametrize("z", [-20.0, -100.0])
def test_a_coupling_whose_scale_underflows_keeps_a_finite_log_determinant(z):
    """log(sigmoid(z)) was -inf in ONNX Runtime below z = -17, where its sigmoid underflows to 0
    (in torch below -88): pictures unlike the training's (a blotch on a brick wall) stopped
    `edgegen score` with a NonFiniteError, and such a model's export was refused. The log scale is
    -softplus(-z), exact at any z."""
    import onnxruntime as ort

    from edgegen.export.onnx_export import export_module
    from edgegen.families.flow.model import AffineCoupling
    from edgegen.package import TensorSpec

    coupling = AffineCoupling(4, 8)
    with torch.no_grad():   # the raw scale: z - 2 everywhere, so that the scale is sigmoid(z)
        coupling.net[-1].bias[:2] = z - 2.0
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    graph = export_module(coupling, "coupling", (TensorSpec("x", "float32", ("batch", 4, 3, 3)),), ("y", "logdet"),
                          {"x": x})
    y, logdet = ort.InferenceSession(graph.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(logdet, [z * 2 * 9] * 2, rtol=1e-6)
    with torch.inference_mode():
        expected_y, expected_logdet = coupling(torch.from_numpy(x))
    np.testing.assert_allclose(logdet, expected_logdet.numpy(), rtol=1e-6)
    np.testing.assert_allclose(y, expected_y.numpy(), rtol=1e-5, atol=1e-30)
