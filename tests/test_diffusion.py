import re
import warnings
from unittest.mock import patch

import numpy as np
import pytest
import torch

import edgegen
from edgegen.cli import main
from edgegen.errors import ConfigError, InputError
from edgegen.training.checkpoint import load_checkpoint
from edgegen.training.data import load_images
from edgegen.package import Package


@pytest.fixture(scope="module")
def pipe(trained):
    return edgegen.load(trained["diffusion"][1], backend="ort-cpu")


def test_package_records_the_schedule_and_the_gate(trained):
    package = Package(trained["diffusion"][1])
    unet = package.graphs["unet"]
    assert [(t.name, t.dtype, t.shape) for t in unet.inputs] == [
        ("sample", "float32", ("batch", 1, 8, 8)), ("timestep", "float32", ("batch",)),
        ("class_labels", "int64", ("batch",))]
    assert unet.extra["validation"]["passed"] and unet.extra["validation"]["batches"] == [1, 3]
    config = package.config
    assert config["num_classes"] == 10 and config["null_label"] == 10
    assert config["beta_schedule"] == "linear" and config["prediction_type"] == "epsilon"


def test_runtime_sampling_matches_a_pytorch_loop(trained, pipe):
    """The same sampler driven by the PyTorch module gives the same images as the package."""
    model = load_checkpoint(trained["diffusion"][0]).model.unet_ema
    labels = np.array([1, 7, 3])

    def torch_fn(x, t):
        both = np.concatenate([labels, np.full(3, 10)])
        with torch.inference_mode():
            out = model(torch.from_numpy(np.concatenate([x, x])), torch.from_numpy(np.concatenate([t, t])),
                        torch.from_numpy(both)).numpy()
        cond, uncond = np.split(out, 2)
        return uncond + np.float32(3.0) * (cond - uncond)

    ours = pipe.sample(3, steps=10, sampler="ddim", guidance_scale=3.0, labels=labels, seed=4)
    rng = np.random.default_rng(4)
    x_T = rng.standard_normal((3, 1, 8, 8), dtype=np.float32)
    ref = pipe.make_sampler("ddim").sample(torch_fn, x_T, 10)
    np.testing.assert_allclose(ours, np.clip((ref + 1) / 2, 0, 1), atol=1e-4)


def test_guidance_is_one_batch_of_2n(pipe, monkeypatch):
    session = pipe.sessions["unet"]
    calls = []
    original = session.run
    monkeypatch.setattr(session, "run", lambda feeds: calls.append(feeds["class_labels"].copy()) or original(feeds))
    pipe.sample(4, steps=5, guidance_scale=3.0, labels=[0, 1, 2, 3])
    assert len(calls) == 5
    assert all(list(c) == [0, 1, 2, 3, 10, 10, 10, 10] for c in calls)
    calls.clear()
    pipe.sample(4, steps=5, guidance_scale=1.0, labels=2)
    assert all(list(c) == [2, 2, 2, 2] for c in calls)
    calls.clear()
    pipe.sample(2, steps=5)  # no labels: the unconditional branch alone
    assert all(list(c) == [10, 10] for c in calls)
    calls.clear()
    pipe.sample(2, steps=5, guidance_scale=1.0)  # guidance off, said without labels: taken
    assert all(list(c) == [10, 10] for c in calls)


def test_a_batch_past_the_rows_per_call_runs_in_pieces_with_the_same_images(pipe, monkeypatch):
    """A large n goes through the UNet ROWS_PER_CALL rows at a time (100,000 at once needed
    about 22 GB), the guided batch of 2n included, and samples what one call samples."""
    whole = pipe.sample(4, steps=5, guidance_scale=3.0, labels=[0, 1, 2, 3], seed=3)
    session = pipe.sessions["unet"]
    rows, original = [], session.run
    monkeypatch.setattr("edgegen.runtimes.session.ROWS_PER_CALL", 3)
    monkeypatch.setattr(session, "run", lambda feeds: rows.append(len(feeds["sample"])) or original(feeds))
    pieces = pipe.sample(4, steps=5, guidance_scale=3.0, labels=[0, 1, 2, 3], seed=3)
    assert rows == [3, 3, 2] * 5
    np.testing.assert_allclose(pieces, whole, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp-2m", "euler", "euler-a"])
def test_every_sampler_runs_and_is_reproducible(pipe, sampler):
    a = pipe.sample(2, steps=6, sampler=sampler, labels=5, seed=11)
    assert a.shape == (2, 1, 8, 8) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
    np.testing.assert_array_equal(a, pipe.sample(2, steps=6, sampler=sampler, labels=5, seed=11))


def test_ddim_eta_and_callback(pipe):
    seen = []
    pipe.sample(1, steps=4, sampler="ddim", eta=1.0, seed=0, callback=lambda i, t, x: seen.append(i))
    assert seen == [0, 1, 2, 3]
    with pytest.raises(InputError, match=r"callback: expected a function \(step, timestep, x\) or None, found int 3"):
        pipe.sample(1, steps=4, seed=0, callback=3)
    # a function of other arguments: refused before the loop, not by Python after its first step (helper 151)
    with pytest.raises(InputError, match=r"callback: expected a function taking \(step, timestep, x\), found one "
                                         r"taking \(a\)"):
        pipe.sample(1, steps=4, seed=0, callback=lambda a: None)
    pipe.sample(1, steps=2, seed=0, callback=lambda *reported: None)   # any that takes three
    pipe.sample(1, steps=2, seed=0, callback=print.__call__)
    with pytest.raises(ConfigError, match="only the ddim sampler takes eta"):
        pipe.sample(1, steps=4, sampler="euler", eta=0.5)


def test_inpaint_keeps_the_known_pixels(pipe):
    digits = load_images("digits", image_size=8).test[:3]
    mask = np.zeros((8, 8), np.float32)
    mask[4:, :] = 1  # generate the bottom half
    out = pipe.inpaint(digits, mask, steps=8, labels=[0, 1, 2], seed=1)
    np.testing.assert_allclose(out[:, :, :4], digits[:, :, :4], atol=1e-6)
    assert np.abs(out[:, :, 4:] - digits[:, :, 4:]).max() > 1e-3


def test_img2img_strength(pipe):
    digits = load_images("digits", image_size=8).test[:2]
    np.testing.assert_allclose(pipe.img2img(digits, strength=0.0), digits, atol=1e-6)
    light = pipe.img2img(digits, strength=0.2, steps=10, seed=0)
    heavy = pipe.img2img(digits, strength=1.0, steps=10, seed=0)
    assert np.abs(light - digits).mean() < np.abs(heavy - digits).mean()
    # a strength that runs none of the steps would return the input as if denoised: refused, as diffusers does
    with pytest.raises(InputError, match=r"strength 0.05: expected it to run at least one of the 10 steps \(strength x "
                                         r"steps >= 1\), found 0.5: give a strength of at least 0.1, or more steps"):
        pipe.img2img(digits, strength=0.05, steps=10, seed=0)
    assert not np.array_equal(pipe.img2img(digits, strength=0.1, steps=10, seed=0), digits)   # one step


@pytest.mark.parametrize("call, error, message", [
    (lambda p: p.sample(2, labels=10), InputError, "expected class ids from 0 to 9, found 10$"),
    (lambda p: p.sample(3, labels=[12, -1, 3]), InputError, "expected class ids from 0 to 9, found -1, 12$"),
    (lambda p: p.sample(2, labels=[1, 2, 3]), InputError, "expected one class id or 2 of them"),
    (lambda p: p.sample(2, labels=1.5), InputError, "expected integer class ids"),
    # past int64: numpy's object array, which was said as "found dtype object" (helper 130)
    (lambda p: p.sample(2, labels=10**20), InputError, "expected class ids from 0 to 9, found 100000000000000000000$"),
    (lambda p: p.sample(2, labels=[1, -10**20]), InputError, "expected class ids from 0 to 9, found -100000000000000000000$"),
    (lambda p: p.sample(2, labels=np.array([12, 3], dtype=object)), InputError, "expected class ids from 0 to 9, found 12$"),
    (lambda p: p.sample(2, labels=[3, [4]]), InputError, r"labels: expected one class id or 2 of them, found a list "
                                                         r"numpy cannot make one array of \(setting an array element"),
    (lambda p: p.sample(2, labels=[]), InputError, r"labels: expected one class id or 2 of them, found none \(shape \[0\]\)"),
    (lambda p: p.sample(2, sampler="plms"), ConfigError, "sampler 'plms'"),
    (lambda p: p.sample(2, sampler=""), ConfigError, "sampler '': expected one of"),   # not the package's default
    (lambda p: p.sample(2, steps=1000), ConfigError, "steps: expected at most 999 for sampler 'dpmpp-2m'"),
    (lambda p: p.inpaint(np.zeros((1, 1, 8, 8), np.float32), None), InputError, r"mask: expected an array of 0 \(keep\) "
                                                                                r"and 1 \(generate\), found None"),
    (lambda p: p.sample(2, steps=0), ConfigError, "steps: expected an integer from 1 to 1000"),
    (lambda p: p.img2img(np.zeros((1, 1, 8, 8), np.float32) + 2), InputError, r"expected values in \[0, 1\]"),
    (lambda p: p.img2img(np.zeros((1, 1, 8, 8), np.float32), strength=1.5), InputError, "strength"),
    (lambda p: p.inpaint(np.zeros((1, 1, 8, 8), np.float32), np.zeros((5, 5))), InputError,
     re.escape("mask: expected [8, 8] (one for all), [1, 8, 8] or [1, 1, 8, 8], found [5, 5]")),
    (lambda p: p.inpaint(np.zeros((1, 1, 8, 8), np.float32), np.full((8, 8), 0.5)), InputError, "0 \\(keep\\) and 1"),
    (lambda p: p.inpaint(np.zeros((1, 1, 8, 8), np.float32), np.zeros((8, 8))), InputError, "mask: expected some 1s "
     r"\(pixels to generate\), found only 0s"),
    # values that made NaN pictures with exit status 0
    (lambda p: p.sample(2, labels=1, guidance_scale=1e30), InputError, "guidance_scale: expected a number from -100 to 100"),
    (lambda p: p.sample(2, sampler="ddim", eta=1.5), InputError, "eta: expected a number from 0 to 1, found 1.5"),
    # guidance without labels would do nothing (the CLI refuses --guidance without --label): refused
    (lambda p: p.sample(2, guidance_scale=3.0), InputError, "guidance_scale 3: expected with labels .* found labels=None"),
    (lambda p: p.img2img(np.zeros((1, 1, 8, 8), np.float32), guidance_scale=5), InputError, "guidance_scale 5: expected with labels"),
    (lambda p: p.inpaint(np.zeros((1, 1, 8, 8), np.float32), np.ones((8, 8)), guidance_scale=2), InputError,
     "guidance_scale 2: expected with labels"),
    (lambda p: p.sample_batched([dict(n=1, guidance_scale=2.0)]), InputError, "guidance_scale 2: expected with labels"),
    (lambda p: p.img2img(np.full((1, 1, 8, 8), np.nan, np.float32)), InputError, "image: expected finite numbers, found 64 NaN"),
    (lambda p: p.inpaint(np.full((1, 1, 8, 8), np.inf, np.float32), np.ones((8, 8))), InputError, "found 64 NaN or Inf"),
    (lambda p: p.inpaint(np.zeros((1, 1, 8, 8), np.float32), np.full((8, 8), np.nan)), InputError,
     r"mask: expected 0 \(keep\) and 1 \(generate\) only, found 64 NaN or Inf"),   # numpy's all-NaN warning before
])
@pytest.mark.filterwarnings("error::RuntimeWarning")   # numpy's warnings are not the message
def test_diffusion_input_errors(pipe, call, error, message):
    with pytest.raises(error, match=message):
        call(pipe)


def test_class_ids_in_an_object_array_are_taken():
    """Ids in range that a caller holds as Python ints in an object array are ids (the check for
    ids past int64 refused them, naming the array: helper 133)."""
    from edgegen.runtimes.pipeline import class_labels

    np.testing.assert_array_equal(class_labels(np.array([1, 2], dtype=object), 2, 10, None), [1, 2])


def test_unconditional_model_on_natural_crops(tmp_path):
    """Data without classes trains an unconditional model; its package refuses labels."""
    from edgegen.export import export_checkpoint
    from edgegen.training.train import train

    ckpt = train("diffusion", tmp_path / "ckpt", data="natural", channels=1, steps=3, batch_size=8, progress=False)
    pipe = edgegen.load(export_checkpoint(ckpt, tmp_path / "pkg"))
    assert pipe.num_classes == 0 and pipe.config.null_label == 0
    assert pipe.sample(2, steps=3).shape == (2, 1, 8, 8)
    with pytest.raises(InputError, match="labels: expected none for this unconditional model"):
        pipe.sample(2, steps=3, labels=1)


def test_seed_errors(pipe):
    for seed in (-1, 1.5, "7"):
        with pytest.raises(InputError, match="seed: expected a non-negative integer or None"):
            pipe.sample(1, steps=2, seed=seed)


def test_generate_command(trained, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code = main(["generate", str(trained["diffusion"][1]), "--n", "4", "--steps", "5", "--sampler", "euler",
                 "--guidance", "2", "--label", "7", "--seed", "0", "--out", str(out)])
    assert code == 0 and out.stat().st_size > 0
    # guidance without a class to steer toward would do nothing: refused, not ignored
    code = main(["generate", str(trained["diffusion"][1]), "--n", "4", "--steps", "5", "--guidance", "2",
                 "--out", str(tmp_path / "unsteered.png")])
    assert code == 2 and "--guidance 2: expected with --label" in capsys.readouterr().err
    assert not (tmp_path / "unsteered.png").exists()
    code = main(["generate", str(trained["gan"][1]), "--n", "4", "--steps", "5", "--out", str(tmp_path / "g.png")])
    err = capsys.readouterr().err
    assert code == 2 and "--steps: expected an option of gan packages (they take none)" in err
    for bad, message in ((["--steps", "0"], "steps: expected an integer from 1 to 1000"),
                         (["--sampler", "plms"], "sampler 'plms'"), (["--seed", "-3"], "seed: expected")):
        code = main(["generate", str(trained["diffusion"][1]), "--out", str(tmp_path / "x.png"), *bad])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_a_grid_too_large_is_refused_before_the_sampling(trained, tmp_path, capsys):
    """--n 100000 of 8x8 digits at the default scale would make a 642-megapixel grid: refused
    before minutes of sampling (it was after), naming the size and what to change. The grid's
    padding and --nrow count (a 120-megapixel grid of one long row was written)."""
    from edgegen.families.diffusion.pipeline import DiffusionPipeline

    with patch.object(DiffusionPipeline, "sample", side_effect=AssertionError("sampled")):
        code = main(["generate", str(trained["diffusion"][1]), "--n", "100000", "--out", str(tmp_path / "big.png")])
        assert code == 2 and "error: --n 100000: expected a grid of at most 100 megapixels, found 642 megapixels at the " \
                              "default scale 8 (fewer images or a smaller --scale)" in capsys.readouterr().err
        code = main(["generate", str(trained["diffusion"][1]), "--n", "100000", "--scale", "4", "--out", str(tmp_path / "big.png")])
        assert code == 2 and "error: --scale 4: expected a grid of at most 100 megapixels, found 160 megapixels (fewer " \
                              "images or a smaller --scale)" in capsys.readouterr().err
        code = main(["generate", str(trained["diffusion"][1]), "--n", "90000", "--scale", "4", "--out", str(tmp_path / "big.png")])
        assert code == 2 and "found 144 megapixels" in capsys.readouterr().err   # 92 without the padding
        code = main(["generate", str(trained["diffusion"][1]), "--n", "50000", "--nrow", "50000", "--scale", "5",
                     "--out", str(tmp_path / "big.png")])   # one row 500,002 wide and 12 high, 5 times over
        assert code == 2 and "found 150 megapixels (fewer images, a smaller --scale or another --nrow)" in \
            capsys.readouterr().err
        code = main(["generate", str(trained["diffusion"][1]), "--n", "4", "--scale", "0", "--out", str(tmp_path / "s.png")])
        assert code == 2 and "error: --scale: expected a positive integer, found 0" in capsys.readouterr().err
        for flag, value in (("--nrow", "0"), ("--nrow", "-3"), ("--n", "0")):   # --nrow came after the sampling
            code = main(["generate", str(trained["diffusion"][1]), flag, value, "--out", str(tmp_path / "s.png")])
            assert code == 2 and f"error: {flag}: expected a positive" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_picture_files_are_refused_before_a_shipped_models_first_export(tmp_path, capsys, monkeypatch):
    """An unreadable --image, --mask or --control was refused after the export of the shipped
    model on its first use (seconds to a minute)."""
    import edgegen.cli as cli

    def no_export(given):
        raise AssertionError("exported before the refusal")

    monkeypatch.setattr(cli, "_package_or_name", no_export)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    picture = _digit_picture(tmp_path / "digit.png")
    for name, options in (("diffusion-digits", ["--image", "{broken}"]),
                          ("ldm-digits", ["--image", "{picture}", "--mask", "{broken}"]),
                          ("controlnet-digits", ["--control", "{broken}"]),
                          ("text2image-digits", ["--prompt", "a seven", "--image", "{broken}"])):
        args = [o.format(broken=tmp_path / "broken.png", picture=picture) for o in options]
        assert main(["generate", name, *args, "--out", str(tmp_path / "x.png")]) == 2
        assert f"'{tmp_path / 'broken.png'}': expected a picture Pillow can read" in capsys.readouterr().err


def _digit_picture(path, size=32):
    """A digit as a grey PNG larger than the package's 8x8, for --image."""
    from PIL import Image

    digit = load_images("digits", image_size=size).test[0, 0]
    Image.fromarray((digit * 255).round().astype(np.uint8)).save(path)
    return path


def test_generate_starts_from_a_picture_img2img_and_inpainting(trained, pipe, tmp_path, capsys):
    """--image (with --strength) is img2img and --mask inpainting: the grid written is the
    pipeline's call on the picture read at the package's size, --n variations of it."""
    from PIL import Image

    from edgegen.images import load_image, load_mask, save_grid

    picture = _digit_picture(tmp_path / "digit.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[:, 16:] = 255   # the right half generated
    Image.fromarray(mask).save(tmp_path / "mask.png")
    package = str(trained["diffusion"][1])
    images = np.repeat(load_image(picture, (1, 8, 8)), 3, axis=0)
    assert main(["generate", package, "--image", str(picture), "--strength", "0.5", "--steps", "6", "--n", "3",
                 "--label", "2", "--seed", "4", "--out", str(tmp_path / "img2img.png")]) == 0
    assert "sampling: 3/3" in capsys.readouterr().err   # strength 0.5 of 6 steps runs the last 3
    save_grid(pipe.img2img(images, strength=0.5, steps=6, labels=2, seed=4), tmp_path / "expected.png")
    assert (tmp_path / "img2img.png").read_bytes() == (tmp_path / "expected.png").read_bytes()

    assert main(["generate", package, "--image", str(picture), "--mask", str(tmp_path / "mask.png"), "--steps", "6",
                 "--n", "3", "--seed", "4", "--out", str(tmp_path / "inpaint.png")]) == 0
    generated = load_mask(tmp_path / "mask.png", (1, 8, 8))
    assert generated[0, 0, :, :4].max() == 0 and generated[0, 0, :, 4:].min() == 1
    painted = pipe.inpaint(images, generated, steps=6, seed=4)
    np.testing.assert_array_equal(painted[:, :, :, :4], images[:, :, :, :4])   # the left half kept
    assert not np.array_equal(painted[:, :, :, 4:], images[:, :, :, 4:])
    save_grid(painted, tmp_path / "expected.png")
    assert (tmp_path / "inpaint.png").read_bytes() == (tmp_path / "expected.png").read_bytes()
    # the default strength is the pipeline's
    assert main(["generate", package, "--image", str(picture), "--steps", "5", "--n", "1", "--out",
                 str(tmp_path / "default.png")]) == 0
    save_grid(pipe.img2img(images[:1], steps=5, seed=0), tmp_path / "expected.png")
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "expected.png").read_bytes()


@pytest.mark.parametrize("options, message", [
    (["--mask", "{mask}"], "--mask: expected with --image (the picture to inpaint), found it without one"),
    (["--strength", "0.5"], "--strength: expected with --image"),
    (["--image", "{picture}", "--mask", "{mask}", "--strength", "0.5"], "--strength: expected for img2img (--image "
     "without --mask), found it with --mask"),
    (["--image", "{picture}", "--strength", "0.1", "--steps", "5"], "error: --strength 0.1: expected it to run at least "
     "one of the 5 steps"),
    (["--image", "{picture}", "--strength", "1.5"], "strength: expected"),
    (["--image", "{missing}"], "--image '{missing}': expected a picture Pillow can read"),
    (["--image", "{picture}", "--mask", "{folder}"], "--mask '{folder}': expected a picture file, found a directory"),
    (["--image", "{picture}", "--mask", "{black}"], "--mask '{black}': expected white pixels to generate, found none at "
     "the package's 8x8 (its brightest there is grey 64 of 255, and 128 and above generates: a stroke narrower"),
    # a red stroke, which a user marks damage with, is grey 76 (helper 129: it was said to be too narrow)
    (["--image", "{picture}", "--mask", "{red}"], "(its brightest there is grey 76 of 255, and 128 and above generates"),
    (["--image", "{picture}", "--mask", "{dark}"], "found none at the package's 8x8 (the mask is black)"),
    (["--image", "{picture}", "--n", "-1"], "error: --n: expected a positive integer, found -1"),
    (["--image", "{picture}", "--n", "100001"], "error: --n: expected at most 100000 per call"),
])
def test_generate_refuses_picture_options_that_do_not_go_together(trained, tmp_path, capsys, options, message):
    from PIL import Image

    picture = _digit_picture(tmp_path / "digit.png")
    stroke = np.zeros((32, 32), np.uint8)
    stroke[:, 17] = 255   # 1 of 32 pixels wide: a quarter of an 8x8 pixel, gone
    Image.fromarray(stroke).save(tmp_path / "thin.png")
    red = np.zeros((32, 32, 3), np.uint8)
    red[:, 16:] = (255, 0, 0)
    Image.fromarray(red).save(tmp_path / "red.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "dark.png")
    paths = {"picture": picture, "mask": picture, "missing": tmp_path / "missing.png", "folder": tmp_path,
             "black": tmp_path / "thin.png", "red": tmp_path / "red.png", "dark": tmp_path / "dark.png"}
    message = message.format(**paths)
    out = tmp_path / "x.png"
    code = main(["generate", str(trained["diffusion"][1]), "--out", str(out), *(o.format(**paths) for o in options)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists()


def test_a_served_request_may_start_from_a_picture(trained, pipe):
    """The served request carries the picture options as arrays: n variations of each image
    sent, img2img or inpainting as the command line; merged requests with a picture run alone."""
    from edgegen.families import get
    from edgegen.serving.requests import served

    request = served(get("diffusion"), pipe.config)
    fields = {f.name: f for f in request.inputs}
    assert (fields["image"].dims, fields["mask"].dims, fields["strength"].dtype) == ((-1, 1, 8, 8), (-1, -1, 8, 8), "float64")
    images = load_images("digits", image_size=8).test[:2]
    got = next(request.answer(pipe, {"image": images, "strength": 0.5, "n": 2, "steps": 4, "seed": 1}))["images"]
    np.testing.assert_array_equal(got, pipe.img2img(np.repeat(images, 2, axis=0), strength=0.5, steps=4, seed=1))
    mask = np.zeros((2, 1, 8, 8), np.float32)
    mask[1, :, 4:] = 1
    got = next(request.answer(pipe, {"image": images, "mask": mask, "n": 2, "steps": 4, "seed": 1}))["images"]
    np.testing.assert_array_equal(got, pipe.inpaint(np.repeat(images, 2, axis=0), np.repeat(mask, 2, axis=0), steps=4, seed=1))
    np.testing.assert_array_equal(got[:2], np.repeat(images[:1], 2, axis=0))   # the first image's mask keeps it all
    calls = [{"n": 1, "seed": 2, "steps": 3}, {"image": images[:1], "strength": 1.0, "steps": 3, "seed": 2}]
    merged = request.answer_many(pipe, calls)
    np.testing.assert_array_equal(merged[0]["images"], pipe(1, seed=2, steps=3))
    np.testing.assert_array_equal(merged[1]["images"], pipe.img2img(images[:1], strength=1.0, steps=3, seed=2))
    with pytest.raises(ConfigError, match="request input 'mask': expected with request input 'image'"):
        next(request.answer(pipe, {"mask": mask}))
    for bad, message in (({"n": -1}, "n: expected a positive integer, found -1"),
                         ({"n": 60000}, "n x the 2 images of request input 'image': expected at most 100000"),
                         ({"mask": np.ones((3, 1, 8, 8), np.float32)}, r"request input 'mask': expected 1 row, or one "
                                                                        r"per image \(2\), found 3")):
        with pytest.raises(InputError, match=message):
            next(request.answer(pipe, {"image": images, **bad}))
    # requests from noise queued with one from a picture still run as one batch
    calls = [{"n": 1, "seed": 2, "steps": 3}, {"image": images[:1], "steps": 3, "seed": 2}, {"n": 2, "seed": 5, "steps": 3}]
    refused = {"image": images[:1], "strength": 0.1, "steps": 3}   # runs no step: refused, and only it
    with patch.object(type(pipe), "sample_batched", autospec=True, side_effect=type(pipe).sample_batched) as batched:
        merged = request.answer_many(pipe, [*calls, refused])
    assert [len(call) for call in batched.call_args.args[1:]] == [2]   # the two from noise, in one call
    np.testing.assert_array_equal(merged[0]["images"], pipe(1, seed=2, steps=3))
    np.testing.assert_array_equal(merged[2]["images"], pipe(2, seed=5, steps=3))
    np.testing.assert_array_equal(merged[1]["images"], pipe.img2img(images[:1], steps=3, seed=2))
    assert isinstance(merged[3], InputError) and "strength 0.1" in str(merged[3])
    # labels: one per image sent, each for its n variations
    got = next(request.answer(pipe, {"image": images, "labels": [3, 8], "n": 2, "steps": 3, "seed": 1}))["images"]
    np.testing.assert_array_equal(got, pipe.img2img(np.repeat(images, 2, axis=0), labels=[3, 3, 8, 8], steps=3, seed=1))


def test_a_manifest_schedule_that_underflows_is_refused_at_load(trained, tmp_path):
    """beta_end 0.9 over 1000 steps: the cumulative alpha reaches 0 and every sample was NaN."""
    import json
    import shutil

    from edgegen.errors import ManifestError

    pkg = tmp_path / "pkg"
    shutil.copytree(trained["diffusion"][1], pkg)
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["config"]["beta_end"] = 0.9
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="expected the cumulative alpha to stay above 1e-12, found 0"):
        edgegen.load(pkg)


def test_a_sample_that_turns_non_finite_is_refused_not_written(pipe, monkeypatch, tmp_path):
    from edgegen.errors import NonFiniteError
    from edgegen.images import save_grid

    real = pipe.sessions["unet"].run
    monkeypatch.setattr(pipe.sessions["unet"], "run", lambda feeds: {"prediction": real(feeds)["prediction"] * np.inf})
    with pytest.raises(NonFiniteError, match="sample: expected finite values, found NaN or Inf in the result "
                                             "\\(sampler 'dpmpp-2m', guidance_scale 3\\)"), warnings.catch_warnings():
        warnings.simplefilter("error")   # the error alone, not numpy's RuntimeWarnings on the way to it
        pipe.sample(2, labels=1)
    for sampler in ("euler", "lms"):   # unlabelled, so unguided (and said so): through the samplers' own arithmetic
        with pytest.raises(NonFiniteError, match=f"sampler '{sampler}', guidance_scale 1\\)"), warnings.catch_warnings():
            warnings.simplefilter("error")
            pipe.sample(2, sampler=sampler, steps=3)
    with pytest.raises(NonFiniteError, match="found NaN or Inf in 1 of 2 images"):
        save_grid(np.stack([np.zeros((1, 8, 8)), np.full((1, 8, 8), np.nan)]).astype(np.float32), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_non_finite_sample_from_the_callers_noise_names_the_noise(pipe):
    """Finite noise of 1e30 overflows in the loop; the error used to name only the sampler and guidance."""
    from edgegen.errors import NonFiniteError

    with pytest.raises(NonFiniteError, match=r"\(sampler 'dpmpp-2m', guidance_scale 3, the given noise reaching "
                                             r"1e\+30 in magnitude \(standard normal expected\)\)"):
        pipe.sample(2, labels=1, steps=3, noise=np.full((2, *pipe.space_shape), 1e30, np.float32))
    # ordinary noise is not named where the model itself gives NaN (a Fourier time embedding's log(0) at t=0)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(NonFiniteError) as raised:
        patch.setattr(pipe, "denoiser", lambda *args, **kwargs: lambda x, t: np.full_like(x, np.nan))
        pipe.sample(2, labels=1, steps=3, noise=np.random.default_rng(0).standard_normal((2, *pipe.space_shape), np.float32))
    assert "noise" not in str(raised.value), raised.value


@pytest.mark.parametrize("sampler, eta", [("ddpm", 0.0), ("ddim", 1.0), ("euler-a", 0.0), ("dpmpp-2m", 0.0)])
def test_a_seed_gives_each_row_the_same_image_at_any_n(pipe, sampler, eta):
    """The noise drawn at every step (the stochastic samplers', inpaint's re-noised known pixels) is
    each row's own: drawn as one [n, ...] array, row 0 of a seed changed with n (helper 79)."""
    settings = dict(steps=6, sampler=sampler, eta=eta, labels=7, seed=0)
    np.testing.assert_allclose(pipe.sample(3, **settings)[:1], pipe.sample(1, **settings), rtol=0, atol=1e-6)
    images = pipe.sample(3, steps=4, seed=1)
    mask = np.zeros((8, 8), np.float32)
    mask[4:] = 1
    np.testing.assert_allclose(pipe.inpaint(images, mask, **settings)[:1], pipe.inpaint(images[:1], mask, **settings),
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(pipe.img2img(images, 0.6, **settings)[:2], pipe.img2img(images[:2], 0.6, **settings),
                               rtol=0, atol=1e-6)


def test_sample_batched_gives_each_call_what_it_gets_alone(trained):
    """A server's merged requests: one loop per group of equal settings, each call's noise from
    its own seed (the stochastic samplers too), labelled and unlabelled calls apart."""
    pipe = edgegen.load(trained["diffusion"][1], threads=1)
    calls = [dict(n=2, seed=1, labels=3, steps=4, sampler="ddpm"), dict(n=1, seed=2, labels=[4], steps=4, sampler="ddpm"),
             dict(n=1, seed=3, steps=4, sampler="ddpm"), dict(n=3, seed=4, labels=1, steps=4, sampler="euler-a",
                                                              guidance_scale=2.0),
             dict(n=1, seed=5, labels=0, steps=4, sampler="ddim")]
    for call, got in zip(calls, pipe.sample_batched(calls)):
        np.testing.assert_allclose(got, pipe(**call), rtol=0, atol=1e-6)
    loops = []   # calls that run alike share a loop: the default scale and the one it resolves to
    with patch.object(pipe, "_sample", lambda n, *args, **kwargs: loops.append(n) or np.zeros((n, *pipe.image_shape))):
        pipe.sample_batched([dict(n=1, labels=2), dict(n=2, labels=3, guidance_scale=3.0), dict(n=1),
                             dict(n=1, guidance_scale=1.0)])
    assert sorted(loops) == [2, 3]
    with pytest.raises(InputError, match=r"calls\[1\]: guidance_scale 2: expected with labels"):
        pipe.sample_batched([dict(n=1), dict(n=1, guidance_scale=2.0)])
    with pytest.raises(InputError, match=r"expected sample\(\)'s arguments, found \['strength'\]"):
        pipe.sample_batched([dict(n=1, strength=0.5)])
    with pytest.raises(InputError, match=r"^sample_batched: calls\[1\]: labels: expected class ids"):   # which call's
        pipe.sample_batched([dict(n=1, labels=3), dict(n=1, labels=12)])
    # malformed calls: Python's TypeError and AttributeError before
    for calls, said in (([1], "expected a list of calls, each a dict"), ({"n": 1}, "expected a list of calls"),
                        ([dict(n=1, sampler=["ddim"])], r"calls\[0\]: expected single values for steps, sampler"),
                        ([dict(n=1, labels=1, guidance_scale=[2])], r"calls\[0\]: guidance_scale: expected a number"),
                        ([dict(n=1), dict(n=0)], r"calls\[1\]: n: expected a positive integer, found 0"),
                        ([dict(n=60_000), dict(n=60_000, labels=1)], r"n of all the calls together: expected at most "
                                                                     r"100000 per call \(call in batches\), found 120000")):
        with pytest.raises(InputError, match=f"sample_batched: {said}"):
            pipe.sample_batched(calls)
