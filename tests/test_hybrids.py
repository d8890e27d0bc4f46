"""The hybrids so far: the class-conditional GAN (conditioning, truncation, the shipped
model's labels) and the VAE-GAN (served like a VAE)."""

import numpy as np
import pytest

import edgegen
from edgegen.demo import PRETRAINED
from edgegen.errors import ConfigError, InputError
from edgegen.export import export_checkpoint
from edgegen.models.classifier import train_digit_judge
from edgegen.models.train import train
from edgegen.runtimes.pipelines.gan import truncated_normal


@pytest.fixture(scope="module")
def cgan(tmp_path_factory):
    root = tmp_path_factory.mktemp("cgan")
    ckpt = train("cgan", root / "ckpt", steps=20, batch_size=32, progress=False, width=16)
    return export_checkpoint(ckpt, root / "pkg")


def test_conditional_generator_graph_and_sampling(cgan):
    pipe = edgegen.load(cgan, backend="ort-cpu")
    entry = pipe.package.graphs["generator"]
    assert [t.name for t in entry.inputs] == ["z", "labels"] and entry.extra["validation"]["passed"]
    z = np.random.default_rng(0).standard_normal((3, pipe.latent_dim)).astype(np.float32)
    a, b = pipe.generate(z, 4), pipe.generate(z, [4, 4, 4])
    assert np.array_equal(a, b) and a.shape == (3, 1, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert not np.array_equal(a, pipe.generate(z, [5, 5, 5]))          # the label changes the image
    s = pipe.sample(6, labels=[0, 1, 2, 3, 4, 5], truncation=0.5, seed=1)
    assert np.array_equal(s, pipe.sample(6, labels=[0, 1, 2, 3, 4, 5], truncation=0.5, seed=1))
    assert pipe.sample(4, seed=2).shape == (4, 1, 32, 32)                # classes drawn with the seed
    with pytest.raises(InputError, match="class ids in"):
        pipe.sample(2, labels=[1, 10])
    with pytest.raises(InputError, match="truncation"):
        pipe.sample(2, labels=1, truncation=0)
    with pytest.raises(InputError, match="found None"):
        pipe.generate(z, None)


def test_truncation_redraws_values_beyond_the_limit():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((200, 64)).astype(np.float32)
    kept = np.abs(z) <= 0.5
    t = truncated_normal(z, 0.5, rng)
    assert np.abs(t).max() <= 0.5 and np.array_equal(t[kept], z[kept])


def test_unlabelled_data_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="num_classes expected at least 1"):
        train("cgan", tmp_path / "c", data="natural", steps=1, progress=False)


def test_shipped_cgan_draws_the_requested_digit(tmp_path):
    pipe = edgegen.load(export_checkpoint(PRETRAINED / "cgan-digits", tmp_path / "pkg"), backend="ort-cpu")
    judge = train_digit_judge(8)   # the digits' own size: fast to train; samples averaged back down to 8x8
    labels = np.arange(500) % 10
    images = pipe.sample(500, labels=labels, seed=0).reshape(500, 1, 8, 4, 8, 4).mean(axis=(3, 5))
    accuracy = (judge.predict(images) == labels).mean()
    assert accuracy >= 0.9, accuracy


def test_vaegan_is_served_like_a_vae(tmp_path):
    ckpt = train("vaegan", tmp_path / "ckpt", steps=5, batch_size=16, progress=False, width=16)
    pipe = edgegen.load(export_checkpoint(ckpt, tmp_path / "pkg"), backend="ort-cpu")
    assert pipe.family == "vaegan" and sorted(pipe.sessions) == ["decoder", "encoder"]
    images = pipe.sample(3, seed=0)
    mu, logvar = pipe.encode(images)
    assert pipe.reconstruct(images).shape == images.shape and pipe.anomaly_score(images).shape == (3,)
    assert all(e.extra["validation"]["passed"] for e in pipe.package.graphs.values())
