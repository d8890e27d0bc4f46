"""PixelCNN and WaveNet: causality, the split/step graphs against the full network, fast
generation identical to the naive loop and to PyTorch, likelihoods, the CLI."""

import json
import re
import shutil
import warnings
import wave

import numpy as np
import pytest
import torch

import edgegen
from edgegen.cli import main
from edgegen.demo import PRETRAINED
from edgegen.errors import EdgegenWarning, InputError, NonFiniteError
from edgegen.metrics import roc_auc
from edgegen.export import export_checkpoint
from edgegen.training.checkpoint import load_checkpoint
from edgegen.training.data import load_images
from edgegen.training.train import train
from edgegen.families.wavenet.model import synth_clip
from edgegen.runtimes.audio import mu_law_decode, mu_law_encode, read_wav, write_wav
from edgegen.runtimes.autoregressive import draw, row_uniforms, sampler

WAVENET_TINY = dict(residual_channels=8, skip_channels=16, layers_per_cycle=5, dilation_cycles=2, train_samples=256)


@pytest.fixture(scope="module")
def pixelcnn(tmp_path_factory):
    root = tmp_path_factory.mktemp("pixelcnn")
    ckpt = train("pixelcnn", root / "ckpt", steps=50, batch_size=64, progress=False, width=24)
    return {"ckpt": ckpt, "model": load_checkpoint(ckpt).model, "pkg": export_checkpoint(ckpt, root / "pkg")}


@pytest.fixture(scope="module")
def wavenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("wavenet")
    ckpt = train("wavenet", root / "ckpt", steps=60, batch_size=8, progress=False, **WAVENET_TINY)
    return {"ckpt": ckpt, "model": load_checkpoint(ckpt).model, "pkg": export_checkpoint(ckpt, root / "pkg")}


# ---- PixelCNN ------------------------------------------------------------------------------

def test_pixelcnn_is_causal_in_raster_order_without_a_blind_spot(pixelcnn):
    model = pixelcnn["model"]
    x = torch.rand(1, 1, 8, 8, requires_grad=True)
    for r, c in [(0, 0), (0, 5), (3, 0), (4, 4), (7, 7)]:
        x.grad = None
        model(x, torch.tensor([3]))[0, :, r, c].sum().backward()
        seen = (x.grad[0, 0].abs() > 0).flatten()
        i = r * 8 + c
        assert not seen[i:].any(), f"pixel {(r, c)} sees itself or a later pixel"
        assert seen[:i].all(), f"pixel {(r, c)} has a blind spot"


def test_pixelcnn_package_has_the_network_and_its_two_stacks(pixelcnn):
    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    assert sorted(pipe.sessions) == ["links", "network", "row"]
    assert all(e.extra["validation"]["passed"] for e in pipe.package.graphs.values())
    assert pipe.package.graphs["network"].inputs[0].shape == ("batch", 1, 8, 8)


def _torch_sample(model, n, labels, seed, levels, start=None, todo=None):
    """PyTorch's own naive loop, drawing with the runtime's sampler and random numbers (each row's
    own, a number per pixel); with start and todo [8, 8], only the todo pixels are drawn (completion)."""
    uniforms, sampling = row_uniforms(np.random.default_rng(seed), n, 64), sampler(1.0)
    x = torch.zeros(n, 1, 8, 8) if start is None else torch.from_numpy(start.copy())
    todo = np.ones((8, 8), bool) if todo is None else todo
    with torch.inference_mode():
        for r in range(8):
            for c in range(8):
                if not todo[r, c]:
                    continue
                logits = model(x, torch.from_numpy(labels))[:, :, r, c].numpy()
                x[:, 0, r, c] = torch.from_numpy(draw(logits, sampling, None, uniforms[:, r * 8 + c]) / (levels - 1)).float()
    return x.numpy()


def test_pixelcnn_fast_sampling_equals_naive_and_pytorch(pixelcnn):
    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    labels = np.array([0, 3, 7, 9, 1, 2])
    fast = pipe.sample(6, seed=11, labels=labels)
    assert np.array_equal(fast, pipe.sample(6, seed=11, labels=labels, fast=False))
    assert np.array_equal(fast, _torch_sample(pixelcnn["model"], 6, labels, 11, pipe.levels))
    assert fast.shape == (6, 1, 8, 8) and set(np.unique(fast * 3).round()) <= {0, 1, 2, 3}
    assert not np.array_equal(fast, pipe.sample(6, seed=12, labels=labels))
    unconditional = pipe.sample(3, seed=0)   # the "no label" index
    assert unconditional.shape == (3, 1, 8, 8)
    # a seed gives image i the same at any n (each pixel's draw took a number of the batch's one stream)
    assert np.array_equal(pipe.sample(3, seed=11, labels=labels[:3]), fast[:3])
    assert np.array_equal(pipe.sample(1, seed=0), unconditional[:1])


def test_pixelcnn_samples_a_batch_past_the_rows_per_call_in_pieces(pixelcnn, monkeypatch):
    """Fast and naive sampling and log_prob run their graphs ROWS_PER_CALL rows at a time (the
    links graph keeping only the row it is at) and give what one call gives."""
    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    labels = np.array([0, 3, 7, 9, 1])
    fast, naive = pipe.sample(5, seed=4, labels=labels), pipe.sample(5, seed=4, labels=labels, fast=False)
    scores = pipe.log_prob(fast, labels=labels)
    monkeypatch.setattr("edgegen.runtimes.session.ROWS_PER_CALL", 2)
    assert np.array_equal(pipe.sample(5, seed=4, labels=labels), fast)
    assert np.array_equal(pipe.sample(5, seed=4, labels=labels, fast=False), naive)
    np.testing.assert_allclose(pipe.log_prob(fast, labels=labels), scores, rtol=1e-5)


class Stop(Exception):
    """A service's own exception, raised in a callback to stop a call."""


def test_pixelcnn_reports_each_pixel_and_stops_where_its_callback_raises(pixelcnn):
    """A service's progress and its way to stop a call (a client gone): sampling ran to its end."""
    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    heard = []
    images = pipe.sample(3, seed=2, callback=lambda done, total: heard.append((done, total)))
    assert heard == [(p, 64) for p in range(1, 65)] and np.array_equal(images, pipe.sample(3, seed=2))
    mask = np.zeros((8, 8))
    mask[5:] = 1   # rows 0-4 known: reported, not drawn
    heard.clear()
    pipe.complete(images, mask, seed=1, callback=lambda done, total: heard.append(done), fast=False)
    assert heard == list(range(1, 65))

    def stop_at_pixel_20(done, total):   # a pixel of n images: a large n's stop waits for n / 256 calls at most
        if done == 20:
            raise Stop(f"{done} of {total}")

    with pytest.raises(Stop, match="20 of 64"):
        pipe.sample(2, seed=0, callback=stop_at_pixel_20)
    assert np.array_equal(pipe.sample(3, seed=2), images)   # and the pipeline serves the next call as before
    with pytest.raises(InputError, match=r"callback: expected a function \(pixels done, pixels\) or None, found int 3"):
        pipe.sample(1, callback=3)


def test_pixelcnn_log_prob_is_exact_and_separates_digits_from_noise(pixelcnn):
    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    digits = load_images("digits", image_size=8).test[:200]
    ours = pipe.log_prob(digits)
    x = torch.from_numpy(pipe.quantized(digits))
    with torch.inference_mode():
        logits = pixelcnn["model"](x, torch.full((len(x),), 10))
    reference = -torch.nn.functional.cross_entropy(logits, torch.round(x * 3).long()[:, 0], reduction="none").sum((1, 2))
    np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-4)
    assert ours.dtype == np.float32   # as every family's log_prob gives
    noise = np.random.default_rng(0).random((200, 1, 8, 8)).astype(np.float32)
    assert roc_auc(-ours, -pipe.log_prob(noise)) >= 0.95
    # values the quantization would clip: a likelihood of something else, refused
    with pytest.raises(InputError, match=r"images: expected values in \[0, 1\], found 0..5$"):
        pipe.log_prob(digits * 5)
    # bits per pixel without labels: what edgegen score reads (it had no PixelCNN scores, helper 146)
    np.testing.assert_allclose(pipe.anomaly_score(digits), -ours / (64 * np.log(2)), rtol=1e-5)
    with pytest.raises(InputError, match=r"image: expected values in \[0, 1\], found -1..0$"):
        pipe.complete(digits[:2] - 1, np.ones((8, 8)), seed=0)


def test_edgegen_score_reads_a_pixelcnns_bits_per_pixel(pixelcnn, tmp_path, capsys):
    import json

    from PIL import Image

    from edgegen.cli import main

    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    digit = load_images("digits", image_size=8).test[0]
    Image.fromarray((digit[0] * 255).round().astype(np.uint8)).save(tmp_path / "digit.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "noise.png")
    assert main(["score", str(pixelcnn["pkg"]), str(tmp_path / "digit.png"), str(tmp_path / "noise.png"), "--json"]) == 0
    digit_score, noise_score = (p["score"] for p in json.loads(capsys.readouterr().out)["pictures"])
    assert digit_score == pytest.approx(float(pipe.anomaly_score(digit[None])[0]), rel=1e-4) and noise_score > digit_score


def test_edgegen_score_reads_a_wavenets_bits_per_sample_of_wav_files(shipped_package, tmp_path, capsys):
    """WaveNet had no `edgegen score` (note 40): a microphone's clips are scored as WAV files, read as
    training reads a folder's (mono, resampled to the model's rate), calibrated on normal clips;
    noise scores above the tones it was trained on (the shipped model: about 2 bits per sample for a
    tone, 40 for noise), and the verdict is the exit status."""
    package = shipped_package("wavenet-tones")
    pipe = edgegen.load(package, backend="ort-cpu")
    normal, today = tmp_path / "normal", tmp_path / "today"
    normal.mkdir(), today.mkdir()
    for i in range(6):   # tones at 16 kHz: each resampled to the model's 8 kHz
        write_wav(normal / f"{i}.wav", synth_clip("tone", np.random.default_rng(10 + i), 16000, 0.25), 16000)
    tone = synth_clip("tone", np.random.default_rng(99), 8000, 0.25)
    write_wav(today / "a-tone.wav", tone, 8000)
    write_wav(today / "b-noise.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 2000).astype(np.float32), 8000)
    (today / "notes.png").write_bytes(b"not read: a wavenet scores WAV files")
    assert main(["score", str(package), str(today), "--normal", str(normal), "--json"]) == 1
    said = capsys.readouterr()
    report = json.loads(said.out)
    (tone_row, noise_row) = report["pictures"]
    assert tone_row["path"].endswith("a-tone.wav") and not tone_row["above"] and noise_row["above"]
    assert said.err.rstrip().endswith(f"edgegen: score: 1 of 2 clips score above {report['threshold']:.6g}")
    stored = read_wav(today / "a-tone.wav", 8000)   # as the file holds it: 16-bit
    assert tone_row["score"] == pytest.approx(pipe.anomaly_score(stored), rel=1e-4)
    assert pipe.anomaly_score(stored) == pytest.approx(-pipe.log_prob(stored) / np.log(2), rel=1e-6)
    np.testing.assert_allclose(pipe.anomaly_score(stored[None]), [pipe.anomaly_score(stored)], rtol=1e-5)
    square = np.sign(np.sin(2 * np.pi * 440 * np.arange(11025) / 44100)).astype(np.float32)   # clipped, loud
    write_wav(tmp_path / "loud.wav", square, 44100)   # resampled to 8 kHz it overshoots [-1, 1] (review 162)
    assert main(["score", str(package), str(tmp_path / "loud.wav")]) == 0
    capsys.readouterr()
    write_wav(tmp_path / "one.wav", np.zeros(1, np.float32), 8000)
    assert main(["score", str(package), str(tmp_path / "one.wav")]) == 2
    assert "one.wav: expected a clip of at least 2 samples at 8000 Hz, found 1" in capsys.readouterr().err
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "x.png").write_bytes(b"")
    assert main(["score", str(package), str(tmp_path / "pictures")]) == 2
    assert "clip " in (err := capsys.readouterr().err) and "expected a WAV file or a folder of them (.wav), found a " \
        "folder without any" in err


def test_the_command_line_completes_a_picture(pixelcnn, tmp_path, capsys):
    """complete() had no command line (helper 146): --image with --keep-rows or --mask writes the
    completions complete() makes, and the flags are refused without each other."""
    from PIL import Image

    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    digit = load_images("digits", image_size=8).test[0, 0]
    Image.fromarray((digit * 255).round().astype(np.uint8)).resize((32, 32), Image.NEAREST).save(tmp_path / "d.png")
    lower = np.zeros((32, 32), np.uint8)
    lower[16:] = 255
    Image.fromarray(lower).save(tmp_path / "lower.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "black.png")
    from edgegen.images import load_image, save_grid

    picture = load_image(tmp_path / "d.png", pipe.image_shape)
    mask = np.zeros((8, 8))
    mask[4:] = 1
    expected = pipe.complete(np.repeat(picture, 3, axis=0), mask, seed=2, temperature=0.9)
    run = ["generate", str(pixelcnn["pkg"]), "--image", str(tmp_path / "d.png"), "--n", "3", "--seed", "2",
           "--temperature", "0.9"]
    save_grid(expected, tmp_path / "expected.png", nrow=3, scale=1)
    for how, out in ((["--keep-rows", "4"], "rows.png"), (["--mask", str(tmp_path / "lower.png")], "mask.png")):
        assert main(run + how + ["--out", str(tmp_path / out), "--scale", "1", "--nrow", "3"]) == 0
        assert np.array_equal(np.asarray(Image.open(tmp_path / out)), np.asarray(Image.open(tmp_path / "expected.png")))
    capsys.readouterr()
    for how, said in ((["--keep-rows", "8"], "--keep-rows: expected 0 to 7 (rows kept of the package's 8), found 8"),
                      ([], "--image: expected --mask or --keep-rows with it (the pixels to generate), found neither"),
                      (["--mask", str(tmp_path / "black.png")], "expected white pixels to generate, found none at the "
                                                                "package's 8x8 (the mask is black)")):
        assert main(run + how + ["--out", str(tmp_path / "x.png")]) == 2
        assert said in capsys.readouterr().err
    assert main(["generate", str(pixelcnn["pkg"]), "--keep-rows", "3", "--out", str(tmp_path / "x.png")]) == 2
    assert "--keep-rows: expected with --image" in capsys.readouterr().err


def test_a_served_request_samples_or_completes_a_picture(pixelcnn, tmp_path):
    """edgegen triton serves PixelCNN packages (review 154: the completion's file options made the
    derived request refuse the family): samples as before, and a picture with keep_rows or a mask."""
    from edgegen.families import get
    from edgegen.serving.requests import arguments, served
    from edgegen.serving.triton import RepositoryOptions, write_repository

    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    request = served(get("pixelcnn"), pipe.config)

    def answered(**values):
        sent = {name: np.asarray([value] if np.ndim(value) == 0 else value) for name, value in values.items()}
        return next(iter(request.answer(pipe, arguments(request.inputs, sent))))["images"]

    assert np.array_equal(answered(n=2, seed=1, temperature=0.9), pipe.sample(2, seed=1, temperature=0.9))
    picture = pipe.quantized(load_images("digits", image_size=8).test[:2])
    mask = np.zeros((8, 8), np.float32)
    mask[5:] = 1
    expected = pipe.complete(np.repeat(picture, 3, axis=0), mask, seed=4)
    assert np.array_equal(answered(n=3, seed=4, image=picture, keep_rows=5), expected)
    assert np.array_equal(answered(n=3, seed=4, image=picture, mask=mask[None, None]), expected)
    for values, said in (({"keep_rows": 2}, "request input 'keep_rows': expected with request input 'image'"),
                         ({"image": picture}, "expected request input 'mask' or request input 'keep_rows' with it"),
                         ({"image": picture, "keep_rows": 9}, "request input 'keep_rows': expected 0 to 7")):
        with pytest.raises(edgegen.EdgegenError, match=re.escape(said)):
            answered(**values)
    write_repository([str(pixelcnn["pkg"])], tmp_path / "repo", RepositoryOptions(), report=lambda line: None)


def test_pixelcnn_complete_keeps_known_pixels_and_fills_the_rest(pixelcnn):
    pipe = edgegen.load(pixelcnn["pkg"], backend="ort-cpu")
    digits = pipe.quantized(load_images("digits", image_size=8).test[:4])
    mask = np.zeros((8, 8))
    mask[4:] = 1
    labels = np.array([0, 1, 2, 3])
    done = pipe.complete(digits, mask, seed=0, labels=labels)
    assert np.array_equal(done[:, :, :4], digits[:, :, :4])
    assert np.array_equal(done, pipe.complete(digits, mask, seed=0, labels=labels, fast=False))
    assert np.array_equal(done, _torch_sample(pixelcnn["model"], 4, labels, 0, pipe.levels, digits, mask > 0))
    assert not np.array_equal(done[:, :, 4:], pipe.complete(digits, mask, seed=1, labels=labels)[:, :, 4:])
    with pytest.raises(InputError, match="mask"):
        pipe.complete(digits, np.zeros((7, 8)))
    with pytest.raises(InputError, match=r"mask: expected some 1s \(pixels to generate\), found only 0s"):
        pipe.complete(digits, np.zeros((8, 8)))   # as inpaint: nothing to generate is a mistake, not a copy
    for bad, found in ((0.5, "other values"), (-1.0, "other values"), (np.nan, "32 NaN")):   # was read as "keep"
        with pytest.raises(InputError, match=r"mask: expected 0 \(keep\) and 1 \(generate\) only, found " + found):
            pipe.complete(digits, np.where(mask > 0, bad, 0.0), seed=0, labels=labels)
    assert np.array_equal(done, pipe.complete(digits, mask > 0, seed=0, labels=labels))   # a boolean mask is one too
    # the diffusion families' mask shapes: per image [n, 1, H, W] (refused before) and [n, H, W]
    assert np.array_equal(done, pipe.complete(digits, np.broadcast_to(mask, (4, 1, 8, 8)), seed=0, labels=labels))
    assert np.array_equal(done, pipe.complete(digits, np.broadcast_to(mask, (4, 8, 8)), seed=0, labels=labels))
    with pytest.raises(InputError, match=re.escape("mask: expected [8, 8] (one for all), [4, 8, 8] or [4, 1, 8, 8], "
                                                   "found [3, 8, 8]")):
        pipe.complete(digits, np.ones((3, 8, 8)))
    for shape in ((), (8,)):   # a number or a row broadcast over everything
        with pytest.raises(InputError, match=re.escape(f"found {list(shape)}")):
            pipe.complete(digits, np.ones(shape))
    with pytest.raises(InputError, match="labels: expected class ids from 0 to 9, found 10$"):
        pipe.sample(2, labels=[3, 10])


@pytest.mark.parametrize("family, change, message", [
    ("pixelcnn", dict(levels=3), r"levels 3: expected logits of graph 'network' to have 3 at axis 1, found 4"),
    ("pixelcnn", dict(layers=5), r"layers 5: expected links of graph 'links' to have 5 at axis 1, found 6"),
    ("pixelcnn", dict(width=32), r"width 32: expected links of graph 'links' to have 64 at axis 2, found 48"),
    ("pixelcnn", dict(null_label=0), r"null_label expected num_classes \(10: the index after the classes, the model's "
                                     r"'no label'\), found 0"),
    ("wavenet", dict(receptive_field=10), r"receptive_field expected \d+ \(the queue_lengths' sum \+ 1\), found 10"),
    ("wavenet", dict(null_label=99), r"null_label expected num_classes \(\d+: the index after the classes"),
])
def test_a_config_that_disagrees_with_the_model_is_refused_at_load(pixelcnn, wavenet, tmp_path, family, change, message):
    """Each field of the config a sampling loop reads: a wrong one made samples outside [0, 1]
    (levels), log-likelihoods of other windows (receptive_field) or class 0 for "no label"."""
    from edgegen.errors import ManifestError

    pkg = shutil.copytree({"pixelcnn": pixelcnn, "wavenet": wavenet}[family]["pkg"], tmp_path / "pkg")
    manifest = json.loads((pkg / "edgegen.json").read_text())
    manifest["config"].update(change)
    (pkg / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=message):
        edgegen.load(pkg)


# ---- WaveNet -------------------------------------------------------------------------------

def test_mu_law_round_trip_and_wav_files(tmp_path):
    audio = np.linspace(-1, 1, 1001).astype(np.float32)
    codes = mu_law_encode(audio)
    assert codes.min() == 0 and codes.max() == 255 and mu_law_encode(np.zeros(1))[0] == 128
    assert np.abs(mu_law_decode(codes) - audio).max() < 0.04
    write_wav(tmp_path / "a.wav", audio, 8000)
    np.testing.assert_allclose(read_wav(tmp_path / "a.wav", 8000), audio, atol=1e-4)
    assert len(read_wav(tmp_path / "a.wav", 16000)) == 2002   # resampled
    from edgegen.errors import DataError

    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(DataError, match="expected a 16-bit PCM WAV file, found an empty or truncated file"):
        read_wav(tmp_path / "empty.wav", 8000)   # "found: " and nothing
    header = bytearray((tmp_path / "a.wav").read_bytes())
    header[20:22] = (3).to_bytes(2, "little")   # the format tag of float samples
    (tmp_path / "float.wav").write_bytes(bytes(header))
    with pytest.raises(DataError, match=r"found floating-point samples \(format 3\): save it as 16-bit PCM"):
        read_wav(tmp_path / "float.wav", 8000)
    # a header's rate of 0 divided by zero, 1 Hz made 8,000 samples of each (helper 107): internal errors, memory;
    # 4 GHz built a filter of 36 million taps, minutes and 1.7 GB for one file (helper 138)
    for rate in (0, 1, 4_000_000_000):
        header = bytearray((tmp_path / "a.wav").read_bytes())
        header[24:28], header[28:32] = rate.to_bytes(4, "little"), (2 * rate % 2**32).to_bytes(4, "little")
        (tmp_path / "rate.wav").write_bytes(bytes(header))
        with pytest.raises(DataError, match=rf"rate.wav: expected a sample rate from 1000 to 768000 Hz in its header, "
                                            rf"found {rate} Hz$"):
            read_wav(tmp_path / "rate.wav", 8000)
    # a chunk of odd size written without its pad byte: wave's seek raised a bare RuntimeError
    data = (tmp_path / "a.wav").read_bytes()
    odd = data[:36] + b"LIST\x03\x00\x00\x00abc" + data[36:]
    (tmp_path / "odd.wav").write_bytes(odd[:4] + (len(odd) - 8).to_bytes(4, "little") + odd[8:])   # RIFF's size
    with pytest.raises(DataError, match=r"odd.wav: expected a 16-bit PCM WAV file, found chunks the wave module cannot read"):
        read_wav(tmp_path / "odd.wav", 8000)
    write_wav(tmp_path / "silent.wav", np.zeros(0, np.float32), 44100)   # no frames: nothing to filter
    assert read_wav(tmp_path / "silent.wav", 8000).shape == (0,)
    # down to 8 kHz: what lies above 4 kHz is filtered out first, not folded into the band (5 kHz came back as 3)
    t = np.arange(44100) / 44100
    for hertz, kept in ((5000, False), (4100, False), (1000, True), (3300, True)):
        write_wav(tmp_path / "tone.wav", (0.5 * np.sin(2 * np.pi * hertz * t)).astype(np.float32), 44100)
        rms = float(np.sqrt(np.mean(read_wav(tmp_path / "tone.wav", 8000)[500:-500] ** 2)))
        assert (abs(rms - 0.5 / np.sqrt(2)) < 0.01) if kept else rms < 1e-3, (hertz, rms)
    with pytest.raises(NonFiniteError, match="expected finite samples, found NaN or Inf"):
        write_wav(tmp_path / "b.wav", np.array([0.0, np.nan], np.float32), 8000)
    assert not (tmp_path / "b.wav").exists()


def test_step_graph_equals_full_sequence_graph_at_every_position(wavenet):
    pipe = edgegen.load(wavenet["pkg"], backend="ort-cpu")
    codes = mu_law_encode(synth_clip("chord", np.random.default_rng(0), 8000)[:300])[None]
    labels = np.array([1])
    full = pipe.sessions["network"].run({"codes": codes, "labels": labels})["logits"][0]
    queues = {f"state.{i}": np.zeros((1, pipe.channels, n), np.float32) for i, n in enumerate(pipe.queue_lengths)}
    for t in range(codes.shape[1]):
        out = pipe.sessions["step"].run({"code": codes[:, t], "labels": labels, **queues})
        np.testing.assert_allclose(out["logits"][0], full[:, t], atol=1e-4, rtol=1e-4)
        queues = {f"state.{i}": out[f"next_state.{i}"] for i in range(len(pipe.queue_lengths))}


def test_the_step_gates_queues_are_stepped_on_one_torch_thread_and_the_count_restored(wavenet, monkeypatch):
    """Thousands of microsecond steps per export: a second thread only waited on each (4-10x
    slower on a busy 2-core machine); the caller's thread count is left as it was."""
    from edgegen.families.wavenet.export import _wavenet_data, _wavenet_step_inputs

    ckpt = load_checkpoint(wavenet["ckpt"])
    seen, step = set(), ckpt.model.step
    monkeypatch.setattr(ckpt.model, "step", lambda *args: seen.add(torch.get_num_threads()) or step(*args))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        feeds = _wavenet_step_inputs(ckpt, 2, np.random.default_rng(0), _wavenet_data(ckpt, "tones"))
        assert seen == {1} and torch.get_num_threads() == 2 and feeds["code"].shape == (2,)
    finally:
        torch.set_num_threads(before)


def test_log_prob_of_a_long_waveform_runs_in_windows_and_equals_the_whole_call(wavenet):
    """Two and a half seconds: windows of the package's sample limit, each a receptive field
    early, give each sample's log-probability as one call over the whole waveform gives it (a
    minute of audio took 4.5 GB in one call)."""
    from edgegen.runtimes.autoregressive import log_softmax

    pipe = edgegen.load(wavenet["pkg"], backend="ort-cpu")
    audio = np.stack([synth_clip("chord", np.random.default_rng(i), 8000, seconds=2.5) for i in range(2)])
    codes = mu_law_encode(audio)
    labels = np.array([1] * len(codes))
    whole = pipe.sessions["network"].run({"codes": codes[:, :-1], "labels": labels})["logits"]
    expected = np.take_along_axis(log_softmax(whole), codes[:, None, 1:], axis=1)[:, 0]
    windowed = pipe.log_prob(audio, labels=1, per_sample=True)
    assert windowed.shape == expected.shape and codes.shape[1] > 2 * pipe.sample_rate
    np.testing.assert_allclose(windowed, expected, atol=1e-4, rtol=1e-4)


def test_fast_generation_equals_naive_and_pytorch_for_2000_samples(wavenet):
    pipe = edgegen.load(wavenet["pkg"], backend="ort-cpu")
    fast = pipe.generate_codes(2000, seed=5, labels=2)
    assert np.array_equal(fast, pipe.generate_codes(2000, seed=5, labels=2, fast=False))
    model, rng, sampling = wavenet["model"], np.random.default_rng(5), sampler(1.0)
    with torch.inference_mode():
        queues, code, theirs = model.empty_queues(1), torch.tensor([128]), []
        for _ in range(2000):
            out = model.step(code, torch.tensor([2]), *queues)
            queues = out[1:]
            theirs.append(int(draw(out[0].numpy(), sampling, rng)[0]))
            code = torch.tensor(theirs[-1:])
    assert fast.tolist() == theirs
    assert np.array_equal(pipe.generate_codes(700, seed=5, labels=2), fast[:700])   # a seed's start at any length
    audio = pipe.generate(400, seed=5, labels=2)
    assert audio.dtype == np.float32 and audio.shape == (400,) and np.abs(audio).max() <= 1
    assert np.array_equal(audio, mu_law_decode(fast[:400]))


def test_a_second_of_audio_shows_progress_only_when_asked(wavenet, capsys):
    """A library call (a service's log) gets no line unasked; progress=None, as edgegen generate
    passes it, a bar on a terminal and one summary line elsewhere."""
    pipe = edgegen.load(wavenet["pkg"], backend="ort-cpu")
    quiet = pipe.generate_codes(pipe.sample_rate, seed=0)
    assert capsys.readouterr().err == ""
    assert np.array_equal(quiet, pipe.generate_codes(pipe.sample_rate, seed=0, progress=None))
    assert re.fullmatch(rf"generate: {pipe.sample_rate}/{pipe.sample_rate} in [0-9.]+s\n", capsys.readouterr().err)
    pipe.generate_codes(pipe.sample_rate // 4, seed=0, progress=None)   # a short clip: no line unless asked
    assert capsys.readouterr().err == ""
    pipe.generate_codes(pipe.sample_rate // 4, seed=0, progress=True)   # asked: shown at any length
    assert f"{pipe.sample_rate // 4}/{pipe.sample_rate // 4}" in capsys.readouterr().err
    with pytest.raises(InputError, match=r"progress: expected False, None \(a bar on a terminal\) or True, found 'yes'"):
        pipe.generate(10, progress="yes")
    # a clip longer than a call takes is not made of calls in batches: each starts from silence
    with pytest.raises(InputError, match=rf"num_samples: expected at most {600 * pipe.sample_rate} \(600 s at "
                                         rf"{pipe.sample_rate} Hz\) per call: each call starts from silence, found "):
        pipe.generate(600 * pipe.sample_rate + 1)


def test_wavenet_reports_every_thousand_samples_and_stops_where_its_callback_raises(wavenet):
    pipe = edgegen.load(wavenet["pkg"], backend="ort-cpu")
    for fast in (True, False):
        heard = []
        codes = pipe.generate_codes(2500, seed=3, fast=fast, callback=lambda done, total: heard.append((done, total)))
        assert heard == [(1000, 2500), (2000, 2500), (2500, 2500)]
    assert np.array_equal(codes, pipe.generate_codes(2500, seed=3))

    def deadline(done, total):
        if done >= 2000:
            raise Stop("past the deadline")

    with pytest.raises(Stop, match="past the deadline"):
        pipe.generate(3000, seed=3, callback=deadline)
    assert np.array_equal(pipe.generate_codes(2500, seed=3), codes)
    with pytest.raises(InputError, match=r"callback: expected a function \(done, total\) or None, found str 'x'"):
        pipe.generate(10, callback="x")


def test_shipped_wavenet_log_prob_separates_tones_from_noise(shipped_package):
    pipe = edgegen.load(shipped_package("wavenet-tones"), backend="ort-cpu")
    rng = np.random.default_rng(1)
    tones = np.stack([synth_clip(kind, rng, 8000)[:800] for kind in ("tone", "chord", "chirp", "mixture") * 5])
    noise = rng.uniform(-0.5, 0.5, tones.shape).astype(np.float32)
    ours = pipe.log_prob(tones)
    assert ours.shape == (20,) and isinstance(pipe.log_prob(tones[0]), float)
    each = pipe.log_prob(tones[:2], labels=[1, 2], per_sample=True)
    codes = torch.from_numpy(mu_law_encode(tones[:2]))
    model = load_checkpoint(PRETRAINED / "wavenet-tones").model
    with torch.inference_mode():
        logits = model(codes[:, :-1], torch.tensor([1, 2]))
    reference = -torch.nn.functional.cross_entropy(logits, codes[:, 1:], reduction="none").numpy()
    np.testing.assert_allclose(each, reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pipe.log_prob(tones[:2], labels=[1, 2]), reference.mean(axis=1), rtol=1e-5)
    assert roc_auc(-ours, -pipe.log_prob(noise)) >= 0.95
    with pytest.raises(InputError, match=r"waveform: expected shape \[T\] or \[n, T\], found \[1, 1, 800\]"):
        pipe.log_prob(tones[:1, None])
    with pytest.raises(InputError, match=r"waveform: expected numbers shaped \[T\] or \[n, T\], found a list numpy cannot make one "
                                           r"array of \(setting an array element with a sequence"):
        pipe.log_prob([[0.1, 0.2], [0.3]])   # ragged rows: numpy's ValueError before
    with pytest.raises(InputError, match=r"per_sample: expected True or False, found 'yes'"):   # was taken as True
        pipe.log_prob(tones[0], per_sample="yes")
    with pytest.raises(InputError, match=r"waveform: expected a floating-point array, found 'abc'"):   # was "found []"
        pipe.log_prob("abc")
    with pytest.raises(InputError, match=r"fast: expected True or False, found 1"):
        pipe.generate(10, fast=1)
    with pytest.raises(InputError, match=r"found dtype int16 \(divide int16 samples by 32768\)"):
        pipe.log_prob((tones[0] * 32767).astype(np.int16))
    with pytest.raises(InputError, match=r"waveform: expected values in \[-1, 1\], found 3..3$"):   # mu-law clips it
        pipe.log_prob(np.full(100, 3.0, np.float32))
    for empty in (np.zeros(0, np.float32), np.zeros((1, 0), np.float32)):   # its own check, not numpy's min()
        with pytest.raises(InputError, match=r"waveform: expected at least 2 samples, found 0"):
            pipe.log_prob(empty)
    with pytest.raises(InputError, match=r"temperature: expected a number from 0.0001 to 10000, found 0$"):
        pipe.generate(10, seed=0, temperature=0)   # no greedy mode to point to


def test_generate_and_bench_refuse_tensorrt_for_wavenets_fast_loop_before_loading(wavenet, shipped_package, tmp_path,
                                                                                  capsys):
    """The fast loop binds ONNX Runtime's IO: on TensorRT's own backend generate failed every time
    (after its engines built, minutes on a device), as triton already refused (helper 130)."""
    out = tmp_path / "chord.wav"
    assert main(["generate", str(wavenet["pkg"]), "--seconds", "0.1", "--backend", "tensorrt", "--out", str(out)]) == 2
    said = capsys.readouterr().err
    assert ("backend (--backend) 'tensorrt': expected a backend wavenet's generation runs on, found TensorRT, which its "
            "fast generation's queues cannot use") in said and "fast=False" in said and not out.exists()
    assert main(["bench", str(wavenet["pkg"]), "--backend", "tensorrt"]) == 2
    assert "or its graphs alone on TensorRT with --no-generation" in capsys.readouterr().err
    assert main(["bench", str(wavenet["pkg"]), "--backend", "tensorrt", "--no-generation"]) == 2   # its graphs: on to
    assert "fast generation's queues" not in capsys.readouterr().err                              # TensorRT (none here)
    from edgegen.bench import bench_package
    from edgegen.errors import ConfigError

    shipped_package("wavenet-tones")   # exported: its name is read as load() reads it (helper 133: "no such path")
    with pytest.raises(ConfigError, match="fast generation's queues cannot use"):
        bench_package("wavenet-tones", backend="tensorrt")


def test_wavenet_cli_writes_a_wav_and_trains_on_a_wav_folder(wavenet, pixelcnn, tmp_path, capsys):
    out = tmp_path / "tone.wav"
    assert main(["generate", str(wavenet["pkg"]), "--seconds", "0.00001", "--out", str(out)]) == 0
    assert f"wrote {out} (1 sample, 0.000125 s at 8000 Hz, no label, seed" in capsys.readouterr().out   # "0.00 s"; "label None"
    assert main(["generate", str(wavenet["pkg"]), "--seconds", "0.05", "--label", "1", "--out", str(out)]) == 0
    assert "8000 Hz, label 1, seed" in capsys.readouterr().out
    with wave.open(str(out)) as w:
        assert (w.getframerate(), w.getnframes(), w.getsampwidth()) == (8000, 400, 2)
    assert main(["generate", str(wavenet["pkg"]), "--label", "1", "--out", str(out)]) == 0   # a second by default
    with wave.open(str(out)) as w:
        assert w.getnframes() == 8000
    assert main(["generate", str(wavenet["pkg"]), "--seconds", "0.05", "--out", str(tmp_path / "x.png")]) == 2
    assert main(["generate", str(wavenet["pkg"]), "--seconds", "0.05", "--out", str(tmp_path / ".wav")]) == 2
    assert not (tmp_path / ".wav").exists()   # a hidden file of no name
    # bench times the calls the runtime makes: a second through the network (it timed 1 sample), and
    # PixelCNN's links over the whole image (1 row)
    for package, shapes, rates in ((wavenet["pkg"], {"samples": 8000}, {"network": "clips/s", "step": "clip steps/s"}),
                                   (pixelcnn["pkg"], {"rows": 8}, {"network": "samples/s", "links": "sample steps/s",
                                                                   "row": "sample steps/s"})):
        capsys.readouterr()
        assert main(["bench", str(package), "--iters", "2", "--warmup", "1", "--no-generation", "--no-energy", "--json",
                     str(tmp_path / "bench.json")]) == 0
        assert json.loads((tmp_path / "bench.json").read_text())["shapes"] == shapes
        # a WaveNet row is a clip: "samples/s" beside its 8000 audio samples read as those; a step graph's
        # call makes one step of each row, not the row's clip or image (its 4630 "clips/s" were steps)
        out = capsys.readouterr().out
        assert "| min ms | rate (from the mean) |" in out
        for graph, rate in rates.items():
            assert re.search(rf"^\| {graph} \| edgegen ort-cpu \| .* \| [0-9.]+ {rate} \|", out, re.M), (graph, out)
        units = {r["graph"]: r["unit"] for r in json.loads((tmp_path / "bench.json").read_text())["results"]}
        assert units == {graph: rate[:-2] for graph, rate in rates.items()}
    assert main(["generate", str(wavenet["pkg"]), "--seconds", "0.05", "--label", "9", "--out", str(out)]) == 2
    folder = tmp_path / "wavs"
    folder.mkdir()
    for i in range(3):
        write_wav(folder / f"{i}.wav", synth_clip("tone", np.random.default_rng(i), 16000, 0.5), 16000)
    with pytest.warns(EdgegenWarning, match=r"of its 3 WAV files, 3 resampled to the model's 8000 Hz \(from 16000 Hz\)"):
        ckpt = train("wavenet", tmp_path / "ckpt", data=str(folder), steps=2, batch_size=2, progress=False, **WAVENET_TINY)
    assert load_checkpoint(ckpt).config.num_classes == 0
    with pytest.raises(edgegen.EdgegenError, match="WAV"):
        train("wavenet", tmp_path / "c2", data=str(tmp_path / "empty"), steps=1, progress=False)


def test_optimize_judges_each_graphs_speed_at_the_call_generation_makes(pixelcnn, wavenet, tmp_path):
    """WaveNet's step runs one sample of one clip per call, its network a second of audio, and
    PixelCNN's links the whole image: a variant that pays at the gate's batch of 8 may not there."""
    from edgegen.optimize import optimize_package

    calls = {}
    for name, fixture in (("wavenet", wavenet), ("pixelcnn", pixelcnn)):
        pkg = shutil.copytree(fixture["pkg"], tmp_path / name)
        # the tensorrt target keeps every variant that passes its gate, whatever its speed here
        optimize_package(pkg, "fp16", checkpoint=fixture["ckpt"], target="tensorrt", progress=lambda *a: None)
        variants = json.loads((pkg / "edgegen.json").read_text())["variants"]["fp16"]
        # the call timed, before what else the timing says (", timed twice ...")
        calls[name] = {part: record["speed_measured_at"].split(", timed")[0] for part, record in variants.items()}
    assert calls == {"wavenet": {"network": "batch 1, samples 8000", "step": "batch 1"},
                     "pixelcnn": {"network": "batch 8", "row": "batch 8", "links": "batch 8, rows 8"}}
    # each logits graph's gate now records its distributions' KL divergence; a variant written before
    # (PSNR alone, which passed wavenet-tones' int8 network) is said at every load, with the way out
    manifest = json.loads((tmp_path / "wavenet" / "edgegen.json").read_text())
    assert all("kl_nats" in record["gate"] for record in manifest["variants"]["fp16"].values())
    with warnings.catch_warnings(record=True) as said:   # made for tensorrt: its slower-on-CPU warning comes
        warnings.simplefilter("always")
        edgegen.load(tmp_path / "wavenet", precision="fp16")
    assert not [w for w in said if "KL divergence" in str(w.message)]
    for record in manifest["variants"]["fp16"].values():
        record["gate"].pop("kl_nats")
    (tmp_path / "wavenet" / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.warns(edgegen.PrecisionWarning, match=r"fp16 variant of network, step in .*: expected a gate record of "
                                                      r"its distributions' KL divergence from fp32's, found one of PSNR "
                                                      r"alone .*: run edgegen optimize --precision fp16 --target tensorrt "
                                                      r"again"):
        edgegen.load(tmp_path / "wavenet", precision="fp16")
    # and the rows fed are the ones said: the step's first held-out row, not the gate's 8
    from edgegen.optimize import _speed_feeds
    from edgegen.package import Package

    package = Package(wavenet["pkg"])
    entry = package.graphs["step"]
    gate_feed = {spec.name: np.random.default_rng(0).standard_normal(
        [8 if d == "batch" else d for d in spec.shape]).astype(np.float32 if spec.dtype == "float32" else np.int64)
        for spec in entry.inputs}
    feeds, said = _speed_feeds(package, entry, gate_feed)
    assert said == "batch 1" and all(np.array_equal(feeds[name], value[:1]) for name, value in gate_feed.items())


def test_pixelcnn_and_wavenet_run_where_torch_cannot_be_imported(pixelcnn, wavenet, tmp_path):
    import subprocess
    import sys

    script = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'onnx', 'onnxscript', 'safetensors', 'matplotlib'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import edgegen\n"
        "from edgegen.runtimes.audio import write_wav\n"
        "digits = edgegen.load(sys.argv[1], backend='ort-cpu').sample(2, seed=0, labels=[1, 2])\n"
        "assert digits.shape == (2, 1, 8, 8)\n"
        "audio = edgegen.load(sys.argv[2], backend='ort-cpu').generate(100, seed=0, labels=1)\n"
        "write_wav(sys.argv[3], audio, 8000)\n"
        "print('ok')\n")
    result = subprocess.run([sys.executable, "-c", script, str(pixelcnn["pkg"]), str(wavenet["pkg"]),
                             str(tmp_path / "a.wav")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
