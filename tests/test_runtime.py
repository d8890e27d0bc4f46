import numpy as np
import pytest
import torch

import edgegen
from edgegen.errors import BackendError, InputError
from edgegen.training.checkpoint import load_checkpoint
from edgegen.training.data import load_images
from edgegen.runtimes import available_backends, resolve_backend


@pytest.fixture(scope="module")
def vae(trained):
    return edgegen.load(trained["vae"][1], backend="ort-cpu", threads=1)


@pytest.fixture(scope="module")
def gan(trained):
    return edgegen.load(trained["gan"][1], backend="ort-cpu")


@pytest.fixture(scope="module")
def digits():
    return load_images("digits").test[:5]


def test_vae_api_matches_pytorch(trained, vae, digits):
    model = load_checkpoint(trained["vae"][0]).model
    mu, logvar = vae.encode(digits)
    with torch.inference_mode():
        ref_mu, ref_logvar = model.encoder(torch.from_numpy(digits))
        ref_image = model.decoder(ref_mu)
    np.testing.assert_allclose(mu, ref_mu.numpy(), atol=1e-4, rtol=1e-3)
    np.testing.assert_allclose(logvar, ref_logvar.numpy(), atol=1e-4, rtol=1e-3)
    recon = vae.reconstruct(digits)
    np.testing.assert_allclose(recon, ref_image.numpy(), atol=1e-4)
    assert recon.shape == digits.shape and recon.dtype == np.float32


def test_vae_sample_and_scores(vae, digits):
    samples = vae.sample(4, seed=3)
    assert samples.shape == (4, 1, 32, 32) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, vae.sample(4, seed=3))
    assert not np.array_equal(samples, vae.sample(4, seed=4))
    scores = vae.anomaly_score(digits)
    assert scores.shape == (5,) and np.isfinite(scores).all()
    # float64 input is accepted and gives the same scores
    np.testing.assert_allclose(vae.anomaly_score(digits.astype(np.float64)), scores, rtol=1e-6)
    # 0-255 pictures scored inf (and encoded as something else) without a word
    for method in (vae.anomaly_score, vae.encode, vae.reconstruct):
        with pytest.raises(InputError, match=r"images: expected values in \[0, 1\], found .*\.\.2"):
            method(digits * 255)
    # a value just past the range is shown to the digits that show it past: "0..1" would hide it
    nudged = digits.astype(np.float64)
    nudged[0, 0, 0, 0] = 1.0001
    with pytest.raises(InputError, match=r"images: expected values in \[0, 1\], found 0\.\.1\.0001$"):
        vae.anomaly_score(nudged)


def test_gan_generate_matches_pytorch(trained, gan):
    model = load_checkpoint(trained["gan"][0]).model
    z = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    with torch.inference_mode():
        ref = (model.generator_ema(torch.from_numpy(z)).numpy() + 1) / 2
    images = gan.generate(z)
    np.testing.assert_allclose(images, ref, atol=1e-4)
    assert images.min() >= 0 and images.max() <= 1
    np.testing.assert_array_equal(gan.sample(3, seed=0), gan.sample(3, seed=0))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 1, 28, 28), np.float32), r"expected shape \[n, 1, 32, 32\], found \[2, 1, 28, 28\]"),
    (np.zeros((1, 32, 32), np.float32), r"expected shape \[n, 1, 32, 32\], found \[1, 32, 32\]"),
    (np.zeros((2, 1, 32, 32), np.uint8), "divide uint8 pixels by 255"),
    (np.zeros((0, 1, 32, 32), np.float32), "empty batch"),
    ("an image", "expected a floating-point array, found 'an image' \\(are the arguments in the order"),
    (["a", "b"], "found a list of text"),
])
def test_pipeline_input_errors(vae, bad, message):
    with pytest.raises(InputError, match=message):
        vae.encode(bad)


def test_pipeline_count_errors(gan):
    for n in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="expected a positive integer"):
            gan.sample(n)
    with pytest.raises(InputError, match=r"expected shape \[n, 64\], found \[2, 63\]"):
        gan.generate(np.zeros((2, 63), np.float32))


def test_finite_inputs_the_graphs_overflow_on_are_refused_not_returned_as_nan(vae, gan, trained):
    """Latents of 3e38 are finite, so the input checks pass them; the graphs overflow on them. The
    pipelines say so, naming the graph and the inputs' magnitude, instead of returning NaN images."""
    from edgegen.errors import NonFiniteError

    huge = np.full((1, 16), 3e38, np.float32)
    with pytest.raises(NonFiniteError, match=r"graph 'decoder': expected finite outputs, found NaN or Inf in image "
                                             r"\(its inputs reach 3e\+38 in magnitude"):
        vae.decode(huge)
    with pytest.raises(NonFiniteError, match="graph 'generator': expected finite outputs"):
        gan.generate(np.full((1, 64), 3e38, np.float32))
    glow = edgegen.load(trained["flow"][1])
    with pytest.raises(NonFiniteError, match="graph 'inverse': expected finite outputs"):
        glow.sample(2, seed=0, temperature=1e30)
    with pytest.raises(InputError, match=r"images: expected values in \[0, 1\] .*found 1e\+30..1e\+30$"):
        glow.log_prob(np.full((2, *glow.data_shape), 1e30, np.float32))   # refused before the graph: no density there
    assert np.isfinite(vae.decode(np.zeros((1, 16), np.float32))).all()   # ordinary latents pass


def test_float64_inputs_beyond_float32_are_said_as_such_not_as_nan(vae):
    """A finite float64 of 1e300 became Inf in the cast to float32 and was reported as "NaN or Inf"."""
    with pytest.raises(InputError, match=r"^z: expected numbers float32 can hold \(magnitude up to 3.4e\+38\), "
                                         r"found 1e\+300"):
        vae.decode(np.full((1, 16), 1e300))
    with pytest.raises(InputError, match="^z: expected finite numbers, found 16 NaN or Inf"):
        vae.decode(np.full((1, 16), np.inf))
    assert vae.decode(np.zeros((1, 16))).dtype == np.float32   # float64 within range is cast


def test_a_thread_count_or_cache_folder_of_another_type_is_refused_by_name(trained):
    import os

    for threads in ("2", 1.5, True, 0):
        with pytest.raises(BackendError, match=rf"threads: expected a positive number of intra-op threads, found {threads!r}"):
            edgegen.load(trained["gan"][1], threads=threads)
    with pytest.raises(BackendError, match=rf"threads: expected at most 4 per logical core \({4 * os.cpu_count()} on "
                                           r"this machine\), found 2000"):
        edgegen.load(trained["gan"][1], threads=2000)   # would spin 2,000 threads: a tiny run hung
    with pytest.raises(BackendError, match=r"cache_dir: expected a folder's path for the TensorRT engines, found int"):
        edgegen.load(trained["gan"][1], cache_dir=3)


def test_only_integer_pixels_and_samples_get_a_scale_hint(vae, gan):
    with pytest.raises(InputError, match=r"found dtype int32$"):
        gan.generate(np.zeros((1, 64), np.int32))
    with pytest.raises(InputError, match=r"^z: expected a floating-point array, found dtype uint8$"):   # no pixels to scale
        gan.generate(np.zeros((1, 64), np.uint8))
    with pytest.raises(InputError, match=r"found dtype uint8 \(divide uint8 pixels by 255\)$"):
        vae.encode(np.zeros((1, 1, 32, 32), np.uint8))


def test_session_checks_feeds_before_running(gan):
    session = gan.sessions["generator"]
    good = np.zeros((2, 64), np.float32)
    assert session.run({"z": good})["image"].shape == (2, 1, 32, 32)
    with pytest.raises(InputError, match=r"expected inputs \['z'\], found \['latent'\]"):
        session.run({"latent": good})
    with pytest.raises(InputError, match="expected dtype float32, found float64"):
        session.run({"z": good.astype(np.float64)})
    with pytest.raises(InputError, match=r"rank 2\), found shape \[64\]"):
        session.run({"z": good[0]})
    with pytest.raises(InputError, match=r"expected float32\[batch, 64\], found shape \[2, 65\]"):
        session.run({"z": np.zeros((2, 65), np.float32)})
    with pytest.raises(InputError, match="expected a numpy array"):
        session.run({"z": [[0.0] * 64]})


def test_a_large_batch_runs_in_pieces_of_rows_per_call(gan, vae, digits, monkeypatch):
    """run_finite, which the image families' graphs go through, splits a batch past
    ROWS_PER_CALL into calls of that many rows, joining every output back in order."""
    z = np.random.default_rng(0).standard_normal((5, gan.latent_dim)).astype(np.float32)
    images, (mean, logvar) = gan.generate(z), vae.encode(digits)
    monkeypatch.setattr("edgegen.runtimes.session.ROWS_PER_CALL", 2)
    np.testing.assert_allclose(gan.generate(z), images, atol=1e-6)
    pieces = vae.encode(digits)
    np.testing.assert_allclose(pieces[0], mean, atol=1e-6)
    np.testing.assert_allclose(pieces[1], logvar, atol=1e-6)


def test_named_dynamic_dims_must_agree():
    from edgegen.package import TensorSpec
    from edgegen.runtimes.session import check_feeds

    specs = (TensorSpec("a", "float32", ("batch", 2)), TensorSpec("b", "int64", ("batch",)))
    check_feeds("g", specs, {"a": np.zeros((3, 2), np.float32), "b": np.zeros(3, np.int64)})
    with pytest.raises(InputError, match="expected dim 'batch' = 3 as in input 'a', found 4"):
        check_feeds("g", specs, {"a": np.zeros((3, 2), np.float32), "b": np.zeros(4, np.int64)})


def test_backend_choice(trained):
    assert resolve_backend("auto") == available_backends()[0]
    assert "ort-cpu" in available_backends()
    with pytest.raises(BackendError, match=r"expected one of auto, tensorrt, ort-tensorrt, ort-cuda, ort-cpu, found .cuda. \(did you mean .ort-cuda.\?\)"):
        edgegen.load(trained["gan"][1], backend="cuda")
    if __import__("importlib").util.find_spec("tensorrt") is None:
        with pytest.raises(BackendError, match="expected the tensorrt and cuda-python packages"):
            edgegen.load(trained["gan"][1], backend="tensorrt")
    with pytest.raises(BackendError, match="threads: expected a positive number"):
        edgegen.load(trained["gan"][1], backend="ort-cpu", threads=0)


def test_tensorrt_missing_is_said_with_what_helps_on_this_machine(tmp_path, monkeypatch):
    """Without a GPU, installing TensorRT cannot help: the message says so (helper 79: it sent a
    machine without a GPU to pip)."""
    from edgegen.runtimes import backends

    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)
    looks_in = backends.no_nvidia_gpu_here
    monkeypatch.setattr(backends, "no_nvidia_gpu_here", lambda: looks_in(tmp_path))   # a machine's root of our own
    with pytest.raises(BackendError, match=r"found tensorrt and cuda missing and no NVIDIA GPU on this machine \(none "
                                           r"of /dev/nvidiactl, /dev/nvidia\[0-9\]\*, /dev/dxg, /etc/nv_tegra_release\): "
                                           r"TensorRT engines are built on the GPU that runs them; here, 'edgegen check "
                                           r"PACKAGE --target"):
        backends.require_tensorrt()
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "nvidia1").write_text("")   # a container given GPU 1 alone (helper 81)
    with pytest.raises(BackendError, match=r"found tensorrt and cuda missing \(pip install 'edgegen\[tensorrt\]'"):
        backends.require_tensorrt()


@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(),
                    reason="this machine has the CUDA provider")
def test_gpu_backends_are_refused_where_absent(trained):
    for backend in ("ort-cuda", "ort-tensorrt"):
        with pytest.raises(BackendError, match=f"backend '{backend}': expected ONNX Runtime's"):
            edgegen.load(trained["gan"][1], backend=backend)


def test_threads_are_applied(trained):
    pipe = edgegen.load(trained["gan"][1], backend="ort-cpu", threads=1)
    session = pipe.sessions["generator"]
    assert session.threads == 1
    assert session.inference_session.get_session_options().intra_op_num_threads == 1
    assert session.providers == ["CPUExecutionProvider"]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-tensorrt"])
def test_gpu_backend_matches_cpu(request, tmp_path, backend):
    if backend not in available_backends():   # before the trained fixture, which trains for a minute
        pytest.skip(f"{backend} is not available here (needs onnxruntime-gpu{' and TensorRT' if 'tensorrt' in backend else ''} and an NVIDIA GPU)")
    trained = request.getfixturevalue("trained")
    cpu = edgegen.load(trained["gan"][1], backend="ort-cpu")
    gpu = edgegen.load(trained["gan"][1], backend=backend, cache_dir=tmp_path)
    z = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_allclose(gpu.generate(z), cpu.generate(z), atol=1e-3)


def test_threads_sharing_one_pipeline_get_what_a_single_thread_gets(trained):
    """Eight threads, five calls each, on one loaded pipeline (a service's usual shape): every
    result equals the one the same call gives alone, bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    pipe = edgegen.load(trained["diffusion"][1], backend="ort-cpu")
    calls = [(seed, 1 + seed % 3) for seed in range(40)]
    alone = {call: pipe.sample(call[1], steps=4, seed=call[0]) for call in calls}
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda call: pipe.sample(call[1], steps=4, seed=call[0]), calls))
    assert all(np.array_equal(alone[call], result) for call, result in zip(calls, together))


def test_a_pipeline_handed_to_another_process_says_to_load_it_there(vae, trained):
    """pickle (multiprocessing's way to hand a worker its arguments) met ONNX Runtime's own
    TypeError, naming neither the pipeline nor the way out (review 173); its results pickle."""
    import pickle

    with pytest.raises(InputError, match=rf"the pipeline of package '.*{trained['vae'][1].name}': expected to stay in "
                                         r"the process that loaded it .*load the package in each process"):
        pickle.dumps(vae)
    images = vae.sample(2, seed=0)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(images)), images)
    import copy

    twin = copy.copy(vae)   # a second reference to the same sessions, as before (review 177)
    assert twin.sessions is vae.sessions and np.array_equal(twin.sample(2, seed=0), images)


def test_loading_and_running_a_package_writes_nothing_into_it(trained, tmp_path):
    """A package can sit on a read-only volume or belong to another user: the runtime only
    reads it (checked here by its files and their times, since this suite may run as root,
    whom no file mode stops)."""
    import os
    import shutil

    pkg = shutil.copytree(trained["vae"][1], tmp_path / "pkg")
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in pkg.rglob("*")}
    os.chmod(pkg, 0o555)
    try:
        pipe = edgegen.load(pkg, backend="ort-cpu")
        pipe.sample(4, seed=0)
        pipe.anomaly_score(pipe.sample(2, seed=1))
    finally:
        os.chmod(pkg, 0o755)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in pkg.rglob("*")} == before


def test_a_package_replaced_while_it_loads_is_read_once_more_whole(trained, tmp_path, monkeypatch):
    """A service's load racing an `export --force` into the same path met the old manifest and the
    new graphs, or a graph gone with the old version: a raw FileNotFoundError. The whole load is
    read again where the manifest changed meanwhile; a package missing a file of its own still
    fails, as a PackageError."""
    import os
    import shutil

    import edgegen.runtimes as runtimes
    from edgegen.errors import PackageError

    pkg = tmp_path / "pkg"
    shutil.copytree(trained["vae"][1], pkg)
    real_open = runtimes.open_sessions
    replaced = []

    def replaced_midway(package, *args, **kwargs):
        if not replaced:   # another command switches the GAN's package in at this path, after the manifest was read
            replaced.append(True)
            stage = tmp_path / ".pkg.new"
            shutil.copytree(trained["gan"][1], stage)
            shutil.rmtree(pkg)
            os.replace(stage, pkg)
        return real_open(package, *args, **kwargs)

    monkeypatch.setattr(runtimes, "open_sessions", replaced_midway)
    assert edgegen.load(pkg).family == "gan" and replaced == [True]
    monkeypatch.setattr(runtimes, "open_sessions", real_open)
    (pkg / "generator.onnx").unlink()   # gone, and nothing replaced: the package's own fault, said once
    with pytest.raises(PackageError, match="generator"):
        edgegen.load(pkg)



def test_score_says_normal_pictures_from_the_training_folder(trained, vae, tmp_path, capsys):
    """A threshold calibrated on the very pictures the model trained on sits low (they score lower
    than pictures it never saw) and flagged held-out normal ones, without a word (helper 156)."""
    import json
    import shutil

    from PIL import Image

    from edgegen.cli import main

    side = vae.image_shape[1]
    folder = tmp_path / "normal"
    folder.mkdir()
    for i, digit in enumerate(load_images("digits", image_size=side).test[:4]):
        Image.fromarray((digit[0] * 255).round().astype(np.uint8)).save(folder / f"{i:02}.png")
    package = shutil.copytree(trained["vae"][1], tmp_path / "pkg")
    manifest = json.loads((package / "edgegen.json").read_text())
    manifest["config"]["data"]["source"] = str(folder.resolve())   # as training on that folder records it
    (package / "edgegen.json").write_text(json.dumps(manifest))
    main(["score", str(package), str(folder / "00.png"), "--normal", str(folder)])
    assert (f"edgegen: warning: --normal: 4 of its 4 pictures lie in the folder the model was trained on "
            f"({str(folder.resolve())!r})") in capsys.readouterr().err
    main(["score", str(trained["vae"][1]), str(folder / "00.png"), "--normal", str(folder)])   # trained on digits
    assert "warning" not in capsys.readouterr().err

def test_score_reads_pictures_as_training_read_a_folder_and_flags_those_above_a_calibrated_threshold(trained, vae, tmp_path,
                                                                                                      capsys, monkeypatch):
    """`edgegen score`: the CLI had no way to score pictures for an inspection station (helper 129).
    Its threshold is the quantile of the normal folder's scores, each picture read as `edgegen
    train --data FOLDER` reads it (so the same pictures through load_images give the same scores)."""
    import json

    from PIL import Image

    from edgegen.cli import main

    channels, side, _ = vae.image_shape
    normal = tmp_path / "normal"
    normal.mkdir()
    for i, digit in enumerate(load_images("digits", image_size=side).test[:12]):
        Image.fromarray((digit[0] * 255).round().astype(np.uint8)).save(normal / f"{i:02}.png")
    (normal / ".thumbs").mkdir()   # hidden: left out, as training leaves it out
    Image.fromarray(np.zeros((side, side), np.uint8)).save(normal / ".thumbs" / "x.png")
    odd = tmp_path / "odd"
    odd.mkdir()
    Image.fromarray(np.full((side, side * 2, 3), 255, np.uint8)).save(odd / "white.png")   # wide, RGB: cropped, grey
    as_trained = load_images(str(normal), image_size=side, channels=channels)
    normal_scores = vae.anomaly_score(np.concatenate([as_trained.train, as_trained.test]))

    code = main(["score", str(trained["vae"][1]), str(odd), str(normal / "03.png"), "--normal", str(normal), "--json"])
    said = capsys.readouterr()
    assert said.out.startswith("{"), (code, said.err)
    report = json.loads(said.out)
    assert report["report"] == "edgegen.score/1" and report["calibration"]["pictures"] == 12
    # one of the normal scores, at or above 99% of them: 12 pictures' interpolated quantile fell below the
    # highest, which was then always flagged (helper 133)
    assert report["threshold"] == pytest.approx(normal_scores.max(), rel=1e-5)
    white, digit = report["pictures"]
    assert white["path"].endswith("white.png") and white["above"] and code == 1
    # the verdict said on stderr too, as check's and info's (a CI log shows a failed step's stderr)
    assert said.err.rstrip().endswith(f"edgegen: score: 1 of 2 pictures score above {report['threshold']:.6g}")
    assert white["score"] == pytest.approx(float(vae.anomaly_score(np.ones((1, channels, side, side), np.float32))[0]),
                                           rel=1e-5)
    assert np.isclose(normal_scores, digit["score"], rtol=1e-5).any()
    # a threshold given: nothing above it exits 0, the table says so
    assert main(["score", str(trained["vae"][1]), str(normal / "03.png"), "--threshold", "1e9"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "0 of 1 pictures score above 1e+09"
    assert main(["score", str(trained["vae"][1]), str(normal), "--json"]) == 0   # no threshold: nothing is above or not
    assert {picture["above"] for picture in json.loads(capsys.readouterr().out)["pictures"]} == {None}
    for args, refusal in (
            (["--quantile", "0.9"], "--quantile: expected with --normal"),
            (["--normal", str(normal), "--threshold", "3"], "--threshold: expected either it or --normal"),
            (["--normal", str(normal), "--quantile", "1"], "--quantile: expected a fraction of normal pictures to pass"),
            (["--threshold", "nan"], "--threshold: expected a finite score, found nan"),
            (["--normal", str(odd / "none")], f"--normal {str(odd / 'none')!r}: expected a picture or WAV file, or a "
                                              "folder of them, found nothing at that path")):
        assert main(["score", str(trained["vae"][1]), str(odd), *args]) == 2
        assert refusal in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["score", str(trained["vae"][1]), str(tmp_path / "empty")]) == 2
    assert "found a folder without any" in capsys.readouterr().err
    assert main(["score", str(trained["gan"][1]), str(odd)]) == 2
    assert "expected one with anomaly scores (vae, vaegan, pixelcnn, a flow over images, wavenet), found a gan package" in \
        capsys.readouterr().err
    assert main(["score", str(trained["flow2d"][1]), str(odd)]) == 2
    assert "expected a model of pictures, found a flow model of points" in capsys.readouterr().err
    # a shipped name's first export (a minute) comes after the options' and the pictures' checks (helper 133)
    from edgegen import cli

    monkeypatch.setattr(cli, "_package_or_name", lambda given: pytest.fail(f"resolved {given}"))
    assert main(["score", "vae-digits", str(odd), "--quantile", "0.5"]) == 2
    assert main(["score", "vae-digits", str(tmp_path / "no-such")]) == 2


def test_a_calibrated_threshold_is_the_least_normal_score_the_quantile_is_at_or_below():
    """Of 100 normal scores at 0.99 the threshold was the highest (none of them flagged, not one), of
    two at 0.5 the higher: numpy's "higher" rounds up where q x (n - 1) is not whole."""
    from edgegen.anomaly import quantile_score

    scores = np.arange(1.0, 101.0)[::-1].copy()   # 100 down to 1, in no order the rule may rely on
    assert quantile_score(scores, 0.99) == 99.0 and (scores > 99.0).sum() == 1
    assert quantile_score(np.array([347.06, 277.55]), 0.5) == 277.55
    assert quantile_score(np.arange(1.0, 41.0), 0.5) == 20.0
    assert quantile_score(np.arange(1.0, 13.0), 0.99) == 12.0   # under 100: the highest
    assert quantile_score(np.arange(1.0, 101.0), 0.07) == 7.0   # 0.07 x 100 = 7.000000000000001: not the 8th


def test_score_says_the_graphs_that_ran_in_fp32_at_the_precision_asked(trained, tmp_path, capsys):
    """A flow whose forward variant its gate refused scored every picture in fp32 while the report
    said "int8", without a word (helper 138)."""
    import json
    import shutil

    from PIL import Image

    from edgegen.cli import main
    from edgegen.optimize import optimize_package

    pkg = shutil.copytree(trained["vae"][1], tmp_path / "pkg")
    optimize_package(pkg, "fp16", progress=lambda *a: None, speed_check=False)
    manifest = json.loads((pkg / "edgegen.json").read_text())
    (pkg / manifest["variants"]["fp16"]["decoder"]["file"]).unlink()
    manifest["variants"]["fp16"]["decoder"] = {"refused": "PSNR 20.0 dB below 30", "target": "ort-cpu"}
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "black.png")
    assert main(["score", str(pkg), str(tmp_path / "black.png"), "--precision", "fp16", "--json"]) == 0
    said = capsys.readouterr()
    assert json.loads(said.out)["fp32_graphs"] == {
        "decoder": "its fp16 variant was refused: PSNR 20.0 dB below 30"}
    assert "edgegen: warning: precision fp16: graph 'decoder' runs in fp32 (its fp16 variant was refused" in said.err


def test_score_flags_the_pictures_the_model_cannot_score_and_scores_the_others(trained, tmp_path, capsys, monkeypatch):
    """A picture whose scoring overflows (NaN or Inf inside the graph, or a NaN score) ended the whole
    `edgegen score` run with status 2, naming the inputs' range (helper 156); a NaN score would have
    been above no threshold. Now it scores inf, above any threshold, said by name; the others are
    scored as they were, and a normal picture like it is refused for calibration, by name."""
    import json

    from PIL import Image

    from edgegen.cli import main
    from edgegen.errors import NonFiniteError

    package = trained["vae"][1]
    pipe_class = type(edgegen.load(package))
    real = pipe_class.anomaly_score

    def overflowing(self, x):   # the graph refuses a batch holding a white picture; a black one's score is NaN
        x = np.asarray(x)
        if (x.reshape(len(x), -1).min(axis=1) > 0.99).any():
            raise NonFiniteError("graph 'encoder': expected finite outputs, found NaN or Inf in mu")
        scores = real(self, x)
        return np.where(x.reshape(len(x), -1).max(axis=1) < 0.01, np.nan, scores).astype(np.float32)

    side = edgegen.load(package).image_shape[1]
    folder = tmp_path / "today"
    folder.mkdir()
    for name, value in (("a-white.png", 255), ("b-grey.png", 128), ("c-black.png", 0)):
        Image.fromarray(np.full((side, side), value, np.uint8)).save(folder / name)
    assert main(["score", str(package), str(folder / "b-grey.png"), "--json"]) == 0
    grey = json.loads(capsys.readouterr().out)["pictures"][0]["score"]
    monkeypatch.setattr(pipe_class, "anomaly_score", overflowing)
    assert main(["score", str(package), str(folder), "--threshold", "1e9", "--json"]) == 1
    said = capsys.readouterr()
    pictures = json.loads(said.out)["pictures"]
    assert [(p["score"], p["above"]) for p in pictures] == [(None, True), (pytest.approx(grey), False), (None, True)]
    assert ("edgegen: warning: 2 pictures the model cannot score (NaN or Inf inside it: far from the pictures it was "
            f"trained on): {folder / 'a-white.png'}, {folder / 'c-black.png'}; scored inf, above any threshold") in said.err
    assert main(["score", str(package), str(folder / "b-grey.png"), "--normal", str(folder)]) == 2
    assert "--normal: expected pictures the model scores, found 2 pictures the model cannot score" in \
        capsys.readouterr().err


def test_score_scores_the_pictures_that_read_and_names_those_that_do_not(trained, tmp_path, capsys):
    """A camera's upload cut short (a truncated JPEG) ended the whole `edgegen score` run with
    status 2 and no scores (review 162). Now the others are scored and printed, the unreadable ones
    named; the status is 1 where one scores above the threshold (the station's news), else 2. Among
    the --normal pictures one that does not read is refused: a threshold without it is not the one
    asked for."""
    import json

    from PIL import Image

    from edgegen.cli import main

    package = trained["vae"][1]
    side = edgegen.load(package).image_shape[1]
    today = tmp_path / "today"
    today.mkdir()
    Image.fromarray(np.full((side, side), 255, np.uint8)).save(today / "a-white.png")
    Image.fromarray(load_images("digits", image_size=side).test[0, 0].__mul__(255).astype(np.uint8)).save(today / "b.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "whole.jpg")
    (today / "c-cut.jpg").write_bytes((tmp_path / "whole.jpg").read_bytes()[:300])   # its upload cut short
    assert main(["score", str(package), str(today), "--threshold", "1e9", "--json"]) == 2   # none above: the error
    said = capsys.readouterr()
    rows = json.loads(said.out)["pictures"]
    assert [(row["score"] is None, row["above"]) for row in rows] == [(False, False), (False, False), (True, None)]
    assert "c-cut.jpg" in rows[2]["error"] and "edgegen: error: score: 1 file that could not be read (picture " \
        f"'{today / 'c-cut.jpg'}': expected a picture Pillow can read" in said.err and "the others were scored" in said.err
    white = rows[0]["score"]
    assert main(["score", str(package), str(today), "--threshold", str(white / 2)]) == 1   # one above: the verdict
    said = capsys.readouterr()
    assert "unreadable  " in said.out and said.out.splitlines()[-1] == \
        f"1 of 3 pictures score above {white / 2:.6g} (1 unreadable)"
    assert said.err.rstrip().endswith(f"edgegen: score: 1 of 3 pictures score above {white / 2:.6g} (1 unreadable)")
    assert main(["score", str(package), str(today / "b.png"), "--normal", str(today)]) == 2
    assert "--normal: expected pictures that read, found 1 file that could not be read" in capsys.readouterr().err
