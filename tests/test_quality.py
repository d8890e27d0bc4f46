"""Models trained with edgegen's own code do what a user trains them for."""

import pytest

import edgegen
from edgegen.export import export_checkpoint
from edgegen.metrics import roc_auc
from edgegen.models.data import load_images, noise_images
from edgegen.models.train import train


def anomaly_aucs(pipe):
    digits = load_images("digits").test
    crops = load_images("natural", channels=1).test
    noise = noise_images(len(digits), digits.shape[1:], seed=7)
    held_out = pipe.anomaly_score(digits)
    return roc_auc(held_out, pipe.anomaly_score(noise)), roc_auc(held_out, pipe.anomaly_score(crops))


def test_small_vae_anomaly_score_separates_digits_from_noise_and_photos(tmp_path):
    ckpt = train("vae", tmp_path / "ckpt", data="digits", steps=300, progress=False)
    pipe = edgegen.load(export_checkpoint(ckpt, tmp_path / "pkg"))
    vs_noise, vs_photos = anomaly_aucs(pipe)
    assert vs_noise >= 0.95
    assert vs_photos >= 0.95


def test_roc_auc():
    assert roc_auc([0, 1, 2], [3, 4]) == 1.0
    assert roc_auc([3, 4], [0, 1, 2]) == 0.0
    assert roc_auc([1, 1], [1, 1]) == 0.5
    assert roc_auc([0, 2], [1, 3]) == pytest.approx(0.75)
