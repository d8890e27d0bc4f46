import numpy as np
import pytest
from PIL import Image

from edgegen.errors import ConfigError, DataError, OutputExistsError, UnknownFamilyError
from edgegen.training.data import digit_labels, load_images
from edgegen.training.train import train


def test_digits_are_upsampled_and_split():
    data = load_images("digits")
    assert data.train.shape == (1527, 1, 32, 32) and data.test.shape == (270, 1, 32, 32)
    assert data.train.dtype == np.float32 and data.train.min() >= 0 and data.train.max() <= 1
    x_train, y_train, x_test, y_test = digit_labels()
    np.testing.assert_array_equal(x_test, data.test)
    assert len(y_test) == 270 and set(y_train) == set(range(10))


def test_natural_crops_are_photographs_in_rgb_or_grey():
    rgb = load_images("natural", image_size=16)
    assert rgb.train.shape == (4000, 3, 16, 16) and rgb.test.shape == (500, 3, 16, 16)
    assert rgb.train.std() > 0.1  # real image content, not a constant
    grey = load_images("natural", image_size=16, channels=1)
    assert grey.test.shape == (500, 1, 16, 16)


def test_folder_of_user_images(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    data = load_images(str(tmp_path), image_size=16)
    assert data.train.shape[1:] == (3, 16, 16) and len(data.train) + len(data.test) == 5


def test_data_errors(tmp_path):
    with pytest.raises(DataError, match="expected one of digits, natural or a folder of images, found no such folder"):
        load_images("mnist")
    with pytest.raises(DataError, match="found none"):
        load_images(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "ok.png").write_bytes(b"")
    with pytest.raises(DataError, match="expected a readable image"):
        load_images(str(tmp_path))
    with pytest.raises(DataError, match="channels: expected 1 or 3, found 2"):
        load_images("digits", channels=2)
    with pytest.raises(DataError, match="expected at most 128 for the natural crops"):
        load_images("natural", image_size=512)


def test_training_errors(tmp_path):
    with pytest.raises(UnknownFamilyError, match="family 'vqvae': expected one of vae, gan"):
        train("vqvae", tmp_path / "x")
    with pytest.raises(ConfigError, match="image_size expected a multiple of 8"):
        train("vae", tmp_path / "x", image_size=20, steps=1)
    with pytest.raises(ConfigError, match="expected positive steps"):
        train("gan", tmp_path / "x", steps=0)
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputExistsError):
        train("gan", tmp_path / "exists", steps=1)


def test_training_on_rgb_natural_crops(tmp_path):
    ckpt = train("vae", tmp_path / "ckpt", data="natural", steps=2, batch_size=8, progress=False)
    from edgegen.training.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt)
    assert loaded.config.image_channels == 3 and loaded.data["source"] == "natural"
