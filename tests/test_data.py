import json
import re
import shutil
import warnings
from unittest.mock import patch

import numpy as np
import pytest
import torch
from PIL import Image

from edgegen.errors import ConfigError, DataError, EdgegenWarning, OutputExistsError, UnknownFamilyError
from edgegen.package import Package
from edgegen.storage import data_files
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
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)   # nothing left out that is a picture
        data = load_images(str(tmp_path), image_size=16)
    assert data.train.shape[1:] == (3, 16, 16) and len(data.train) + len(data.test) == 5


def test_a_folders_subfolders_and_pictures_larger_than_the_default_size_are_said(tmp_path):
    """An ImageFolder's class subfolders were pooled, and 32-pixel photographs trained an 8x8
    diffusion model, without a word (helper 150)."""
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(tmp_path / "data" / label / f"{i}.png")
    with pytest.warns(EdgegenWarning) as said:
        train("vae", tmp_path / "ckpt-vae", data=str(tmp_path / "data"), steps=1, batch_size=4, progress=False)
    assert any(re.search(r"its pictures lie in 2 subfolders \(cats, dogs\), taken together as one set without classes "
                         r"\(the families with classes \(cgan, diffusion, ldm, pixelcnn\) read them as classes; this one takes "
                         r"none\)$", str(w.message)) for w in said), [str(w.message) for w in said]
    with pytest.warns(EdgegenWarning) as said:
        train("diffusion", tmp_path / "ckpt", data=str(tmp_path / "data"), steps=1, batch_size=4, progress=False,
              width=8)
    messages = [str(w.message) for w in said]
    assert not any("lie in 2 subfolders" in m for m in messages)   # a family with classes takes them
    assert any(re.search(r"training at 8x8 pixels, the diffusion family's default, where the folder's pictures are 32 "
                         r"pixels or more on their short side: give --image-size", m) for m in messages), messages
    for i in range(2):   # a JPEG's size as stored: read_picture decodes it near the training size (review 154)
        (tmp_path / "jpegs").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(tmp_path / "jpegs" / f"{i}.jpg")
    with pytest.warns(EdgegenWarning, match="where the folder's pictures are 256 pixels or more"):
        train("diffusion", tmp_path / "ckpt-jpegs", data=str(tmp_path / "jpegs"), steps=1, batch_size=2, progress=False,
              width=8)
    for i in range(2):   # every picture grey, trained in colour by a folder's default: said (helper 150)
        (tmp_path / "grey").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / "grey" / f"{i}.png")
    with pytest.warns(EdgegenWarning, match=r"every picture is grey, trained as colour .*give --channels 1"):
        train("diffusion", tmp_path / "ckpt-grey", data=str(tmp_path / "grey"), steps=1, batch_size=2, progress=False,
              width=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*every picture is grey", category=EdgegenWarning)
        train("diffusion", tmp_path / "ckpt-grey1", data=str(tmp_path / "grey"), steps=1, batch_size=2, progress=False,
              width=8, channels=1)
        train("diffusion", tmp_path / "ckpt-rgb", data=str(tmp_path / "jpegs"), steps=1, batch_size=2, progress=False,
              width=8, image_size=8)
    with warnings.catch_warnings(record=True) as said:   # a size given: the user's choice, not said
        warnings.simplefilter("always")
        train("diffusion", tmp_path / "ckpt16", data=str(tmp_path / "data" / "cats"), steps=1, batch_size=4,
              progress=False, width=8, image_size=8)
    assert not [w for w in said if "family's default" in str(w.message) or "subfolders" in str(w.message)]


def test_pictures_of_formats_left_out_are_named(tmp_path):
    """A folder's pictures of formats edgegen does not take (.ppm, .psd) were left out without a
    word (helper 143); they are named. A .jfif is a JPEG, and taken."""
    from edgegen.anomaly import scored_files

    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "web.jfif", format="JPEG")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "scan.ppm")
    (tmp_path / "features.h5").write_bytes(b"\x89HDF")   # no picture of anyone's: not said (review 154)
    (tmp_path / "old.psd").symlink_to(tmp_path / "gone.psd")   # a link to nothing edgegen would not read: no error
    with pytest.warns(EdgegenWarning, match=r"data folder .*: left out 1 file of picture formats edgegen does not take "
                                            r"\('scan.ppm'\); expected .*convert them to PNG"):
        data = load_images(str(tmp_path), image_size=16)
    assert len(data.train) + len(data.test) == 5
    with pytest.warns(EdgegenWarning, match="--normal .*left out 1 file"):   # edgegen score's folders too
        assert len(scored_files([str(tmp_path)], "--normal", audio=False)) == 5


def test_data_errors(tmp_path):
    from edgegen.families.sr.data import photo_split

    with pytest.raises(DataError, match="expected one of digits, natural or a folder of images, found no such folder"):
        load_images("mnist")
    # super-resolution trains on photographs: digits was said to be "no such folder"
    with pytest.raises(DataError, match=r"data 'digits': expected natural or a folder of photographs, found a data set "
                                        r"of the vae, gan, .*pixelcnn families, not of photographs$"):
        photo_split("digits", 0)
    with pytest.raises(DataError, match="found none"):
        load_images(str(tmp_path))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "ok.png").write_bytes(b"")
    # both named in one refusal: one a run made three runs to find three (helper 143)
    with pytest.raises(DataError, match=r"2 of its 2 image files cannot be read: .*broken.png': expected a picture Pillow "
                                        r"can read.*; .*ok.png'"):
        load_images(str(tmp_path))
    with pytest.raises(DataError, match="channels: expected 1 or 3, found 2"):
        load_images("digits", channels=2)
    with pytest.raises(DataError, match="expected at most 128 for the natural crops"):
        load_images("natural", image_size=512)
    with pytest.raises(DataError, match="--image-size: expected at most 512 for a folder of images .*found 4096"):
        load_images(str(tmp_path), image_size=4096)


def test_a_link_to_nothing_among_the_images_is_said_as_a_broken_file_is(tmp_path):
    """It was left out without a word, where an unreadable file stops training (helper 78)."""
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(DataError, match=r"gone.png': expected a file to read, found a link to nothing \('.*nowhere.png'\)"):
        load_images(str(tmp_path), image_size=16)
    (tmp_path / "gone.png").unlink()
    (tmp_path / "im.png").mkdir()   # a folder named like a picture is no file: left out
    (tmp_path / "also.png").symlink_to(tmp_path / "im0.png")   # a link to a picture is read
    assert [p.name for p in data_files(tmp_path, (".png",))] == ["also.png", "im0.png", "im1.png", "im2.png"]
    # a linked folder is followed (its 40 pictures were left out unsaid), a folder reached twice or by a link back
    # up walked once (by its first name), hidden ones not
    (tmp_path / "more").mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "more" / "m.png")
    (tmp_path / "linked").symlink_to(tmp_path / "more")
    (tmp_path / "more" / "up").symlink_to(tmp_path)
    (tmp_path / ".hidden").mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / ".hidden" / "h.png")
    found = [str(p.relative_to(tmp_path)) for p in data_files(tmp_path, (".png",))]
    assert found == ["also.png", "im0.png", "im1.png", "im2.png", "linked/m.png"], found
    # a link to a folder holding the data folder (train/ to its parent) would take in its siblings: left out, said
    (tmp_path / "more" / "parent").symlink_to(tmp_path.parent)
    with pytest.warns(EdgegenWarning, match=r"links to .*, a folder holding it: left out"):
        assert [str(p.relative_to(tmp_path)) for p in data_files(tmp_path, (".png",))] == found


def test_a_built_in_sets_name_beside_a_folder_of_that_name_is_said(tmp_path, monkeypatch):
    """--data digits with a folder named digits here trains on the built-in set, as the name says:
    it did so without a word (helper 78); ./digits is the folder."""

    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    with pytest.warns(EdgegenWarning, match=r"--data 'digits': the built-in data set, not the folder of that name here "
                                            r"\(give ./digits to train on it\)"):
        train("vae", tmp_path / "x", data="digits", steps=1, progress=False)


def test_training_errors(tmp_path):
    with pytest.raises(UnknownFamilyError, match="family 'vqvae': expected one of vae, gan") as refused:
        train("vqvae", tmp_path / "x")
    assert "generic" not in str(refused.value)   # which train refuses (helper 78)
    with pytest.raises(UnknownFamilyError, match="family 'generic': expected one that edgegen trains"):
        train("generic", tmp_path / "x")
    for family in ("ldm", "text2image"):   # the UNet was left untrained, and exported (helper 78)
        with pytest.raises(ConfigError, match=rf"training steps \(--steps\): expected at least 2 for {family}, whose "
                                              r"autoencoder trains first and its UNet after, a step each at the least, "
                                              r"found 1"), patch("edgegen.training.train.load_images", side_effect=AssertionError):
            train(family, tmp_path / "x", steps=1)   # before the data loads
    with pytest.raises(ConfigError, match="image_size expected a multiple of 8"), \
            patch("edgegen.training.train.load_images", side_effect=AssertionError):   # before a folder's loading
        train("vae", tmp_path / "x", image_size=20, steps=1)
    with pytest.raises(ConfigError, match=r"training steps \(--steps\): expected a positive integer, found 0"):
        train("gan", tmp_path / "x", steps=0)
    with pytest.raises(ConfigError, match=r"training batch_size \(--batch-size\): expected a positive integer, found -3"):
        train("gan", tmp_path / "x", batch_size=-3)
    with pytest.raises(DataError, match="data 'moons': expected one of digits, natural or a folder of images, found a "
                                        "data set of the flow family, not of images"):
        train("vae", tmp_path / "x", data="moons", steps=1)
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputExistsError):
        train("gan", tmp_path / "exists", steps=1)
    (tmp_path / "pkg").mkdir()   # a package where a checkpoint goes: said as one, not as "other files"
    (tmp_path / "pkg" / "edgegen.json").write_text("{}")
    with pytest.raises(OutputExistsError, match=r"expected an edgegen checkpoint to replace \(weights.safetensors in it\) "
                                                r"or an empty folder, found an edgegen package \(edgegen.json\)"):
        train("vae", tmp_path / "pkg", steps=1, overwrite=True)
    # --data "$DATA" with DATA unset trained on the built-in set without a word (helper 107)
    with pytest.raises(ConfigError, match=r"^data \(--data\): expected a built-in data set's name or a path, found ''$"):
        train("vae", tmp_path / "x", data="", steps=1)
    (tmp_path / "points.csv").write_text("1,2\n3,4\n")   # flow's refusal named image data alone
    with pytest.raises(DataError, match=r"expected one of moons, circles, blobs \(2-D points: RealNVP\), digits, natural "
                                        r"or a folder of images \(Glow\), found a file \(points from a file are not read\)$"):
        train("flow", tmp_path / "x", data=str(tmp_path / "points.csv"), steps=1)
    with pytest.raises(DataError, match=r"data 'digits': expected one of stdlib or a UTF-8 text file, found a data set "
                                        r"of the .* families, not of text$"):   # it said "nothing at that path"
        train("gpt", tmp_path / "x", data="digits", steps=1)
    (tmp_path / "classes" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "classes" / "cat" / f"{i}.png")
    with pytest.raises(ConfigError, match=r"num_classes expected at least 1 \(a class-conditional GAN needs labelled "
                                          r"data: the built-in digits, or a folder whose every picture lies in one of two "
                                          r"or more subfolders, its classes\), found 0"), \
            patch("edgegen.training.train.load_images", side_effect=AssertionError):   # before the folder loads
        train("cgan", tmp_path / "x", data=str(tmp_path / "classes"), steps=1)
    with pytest.raises(DataError, match=r"data folder '.*classes': expected captions for text2image, a metadata.jsonl "
                                        r"or metadata.csv .*found none$"):   # before the pictures are read
        train("text2image", tmp_path / "x", data=str(tmp_path / "classes"), steps=2)


def test_training_on_rgb_natural_crops(tmp_path):
    ckpt = train("vae", tmp_path / "ckpt", data="natural", steps=2, batch_size=8, progress=False)
    from edgegen.training.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt)
    assert loaded.config.image_channels == 3 and loaded.data["source"] == "natural"


def test_a_picture_given_to_generate_is_decoded_as_training_decodes_one(tmp_path):
    """--image, --control and --mask read a picture as a folder's images are read (transparency
    over white, EXIF turned, float refused) and resize it to the package's shape; a mask is 0
    where black, 1 where white, grey to the nearer."""
    from edgegen.errors import InputError
    from edgegen.images import load_image, load_mask

    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255            # red under transparent pixels
    rgba[:2, :, 3] = 255          # the top half opaque red
    Image.fromarray(rgba).save(tmp_path / "icon.png")
    colour = load_image(tmp_path / "icon.png", (3, 2, 2))
    np.testing.assert_array_equal(colour[0, :, 0, 0], [1, 0, 0])
    np.testing.assert_array_equal(colour[0, :, 1, 0], [1, 1, 1])   # white, not the hidden red
    sideways = Image.fromarray(np.repeat(np.array([[0, 255]], np.uint8), 4, axis=0).repeat(2, axis=1))   # 4 x 4
    exif = sideways.getexif()
    exif[0x0112] = 6   # turned 90 degrees clockwise on display: the white right half at the bottom
    sideways.save(tmp_path / "phone.png", exif=exif)
    np.testing.assert_array_equal(load_image(tmp_path / "phone.png", (1, 2, 2))[0, 0], [[0, 0], [1, 1]])
    Image.fromarray(np.array([[0, 100], [160, 255]], np.uint8)).save(tmp_path / "mask.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "mask.png", (1, 2, 2)), [[[[0, 0], [1, 1]]]])
    strokes = np.zeros((4, 4, 4), np.uint8)
    strokes[:, 2:] = 255          # opaque white strokes on the right half of a transparent layer
    Image.fromarray(strokes).save(tmp_path / "layer.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "layer.png", (1, 2, 2)), [[[[0, 1], [0, 1]]]])   # the rest kept
    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(tmp_path / "float.tiff")
    with pytest.raises(InputError, match="--mask '.*float.tiff': expected 8- or 16-bit pixels"):
        load_mask(tmp_path / "float.tiff", (1, 2, 2), "--mask")
    # a sample written alone is the picture itself, unframed: it reads back as it was
    from edgegen.images import save_grid

    sample = np.random.default_rng(0).random((1, 1, 8, 8), dtype=np.float32)
    save_grid(sample, tmp_path / "one.png", nrow=4)   # a row of one
    assert Image.open(tmp_path / "one.png").size == (64, 64)
    np.testing.assert_allclose(load_image(tmp_path / "one.png", (1, 8, 8)), sample, atol=0.5 / 255 + 1e-6)


def test_grids_and_picture_reading_refuse_what_they_cannot_draw_or_read(tmp_path):
    """uint8 pixels were drawn white wherever above 0, an empty batch divided by zero, a shape of
    two numbers unpacked in Python; a file object, a 16-bit PGM and a 16-bit grey PNG's
    transparent colour are read as Pillow and viewers read them."""

    from edgegen.errors import InputError
    from edgegen.images import load_image, picture_format, save_grid

    images = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    for bad, message in (((images * 255).astype(np.uint8), r"found dtype uint8 \(divide uint8 pixels by 255\)"),
                         (images[:0], r"with n of at least 1, found shape \[0, 1, 8, 8\]"),
                         (images > 0.5, "found dtype bool"),
                         ([images[0], images[1][:, :4]], "ragged shape")):
        with pytest.raises(InputError, match=message):
            save_grid(bad, tmp_path / "grid.png")
    assert not (tmp_path / "grid.png").exists()
    save_grid(list(images), tmp_path / "grid.png")   # a list of [C, H, W] pictures is an array of them
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "rgb.png")
    for shape in ((8, 8), (2, 8, 8), (1, 0, 8)):
        with pytest.raises(InputError, match=r"shape: expected (a picture shape )?\(C, H, W\)"):
            load_image(tmp_path / "rgb.png", shape)
    with open(tmp_path / "rgb.png", "rb") as file:
        assert load_image(file, (3, 4, 6)).shape == (1, 3, 4, 6)
    grey16 = np.array([[0, 65535], [32896, 1000]], np.uint16)
    (tmp_path / "grey.pgm").write_bytes(b"P5\n2 2\n65535\n" + grey16.astype(">u2").tobytes())
    np.testing.assert_allclose(load_image(tmp_path / "grey.pgm", (1, 2, 2))[0, 0], np.round(grey16 / 257) / 255)
    keyed = Image.fromarray(grey16)
    keyed.save(tmp_path / "keyed.png", transparency=1000)
    assert load_image(tmp_path / "keyed.png", (1, 2, 2))[0, 0, 1, 1] == 1.0   # the transparent colour over white
    with pytest.raises(InputError, match=r"JPEG holds 8-bit grey or RGB pictures, found mode I;16 \(16-bit or other "
                                         r"pixels\)"):
        picture_format(tmp_path / "x.jpg", "I;16")


def test_a_photograph_is_decoded_near_the_size_it_becomes(tmp_path):
    """Where only a small picture is needed, a JPEG is decoded at a reduced scale (the memory of
    a phone's photograph), never below the size asked; other formats decode whole."""
    from edgegen.images import load_image, read_picture
    from edgegen.training.data import load_images

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(tmp_path / "photo.jpg")
    assert read_picture(tmp_path / "photo.jpg").size == (1600, 1200)
    assert read_picture(tmp_path / "photo.jpg", least_side=140).size == (200, 150)   # 1/8: both sides >= 140
    assert read_picture(tmp_path / "photo.jpg", least_side=151).size == (400, 300)   # 1/4
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "small.png")
    assert read_picture(tmp_path / "small.png", least_side=8).size == (60, 40)
    assert load_image(tmp_path / "photo.jpg", (3, 32, 32)).shape == (1, 3, 32, 32)
    Image.fromarray(rng.integers(0, 255, (900, 700, 3), dtype=np.uint8)).save(tmp_path / "second.jpg")
    import edgegen.training.data as data_module

    asked = []
    with patch.object(data_module, "read_picture", side_effect=lambda path, least_side=None: asked.append(least_side)
                      or read_picture(path, least_side)):
        data = load_images(str(tmp_path), image_size=64, channels=3)
    assert asked == [64, 64, 64]   # each file decoded no larger than the training size needs
    assert data.train.shape[1:] == (3, 64, 64) and len(data.train) + len(data.test) == 3


def test_folder_images_are_read_as_a_viewer_shows_them(tmp_path):
    """16-bit grey scaled (not clipped to white), EXIF orientation applied, transparency over white
    (not the colour hidden under it), hidden files and folders left out; float pictures, which have
    no fixed range, and decompression bombs refused, naming the file."""
    from edgegen.training.data import folder_images

    folder = tmp_path / "own"
    (folder / ".ipynb_checkpoints").mkdir(parents=True)
    Image.fromarray(np.full((6, 8), 32896, np.uint16)).save(folder / "a16.png")   # 16-bit mid-grey
    sideways = Image.fromarray(np.zeros((4, 10, 3), np.uint8))
    exif = sideways.getexif()
    exif[0x0112] = 6   # stored sideways: viewers turn it 90 degrees
    sideways.save(folder / "b_phone.jpg", exif=exif)
    rgba = np.zeros((5, 5, 4), np.uint8)
    rgba[..., 0] = 255            # red under fully transparent pixels
    rgba[2, 2] = (0, 0, 255, 255)  # one opaque blue pixel
    Image.fromarray(rgba).save(folder / "c_icon.png")
    (folder / "._c_icon.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")   # macOS's metadata, not an image
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(folder / ".ipynb_checkpoints" / "copy.png")

    images = {path.name: pixels for path, pixels in folder_images(folder)}
    assert sorted(images) == ["a16.png", "b_phone.jpg", "c_icon.png"]
    assert images["a16.png"].shape == (6, 8, 3) and (images["a16.png"] == 128).all()
    assert images["b_phone.jpg"].shape == (10, 4, 3)
    icon = images["c_icon.png"]
    assert tuple(icon[0, 0]) == (255, 255, 255) and tuple(icon[2, 2]) == (0, 0, 255)

    Image.fromarray(np.full((4, 4), 0.5, np.float32)).save(folder / "d_float.tiff")
    with pytest.raises(DataError, match=r"d_float.tiff': expected 8- or 16-bit pixels, found floating-point ones"):
        folder_images(folder)
    (folder / "d_float.tiff").unlink()
    Image.fromarray(np.full((3, 3), 200, np.int32)).save(folder / "d_int32.tiff")   # 8-bit values? 12-bit? unknown
    with pytest.raises(DataError, match=r"d_int32.tiff': expected 8- or 16-bit pixels, found 32-bit integer ones"):
        folder_images(folder)
    (folder / "d_int32.tiff").unlink()
    bomb = folder / "e_bomb.png"
    bomb.write_bytes(_png_claiming(30000, 30000))   # 900 megapixels declared: Pillow refuses it on opening
    with pytest.raises(DataError, match="e_bomb.png'.*decompression bombs"):
        folder_images(folder)


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header declares another size (its checksum mended), read no further than that."""
    import io
    import struct
    import zlib

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29], data[29:33] = header, struct.pack(">I", zlib.crc32(header))
    return bytes(data)


def test_training_refuses_values_it_cannot_train_with(tmp_path):
    for value in (float("nan"), float("inf"), 1e300, 0.0, -1e-3):
        with pytest.raises(ConfigError, match=r"learning rate \(--lr\): expected a number above 0 and at most 1000 \(Adam moves "
                                              rf"each weight by about the rate per step\), found {re.escape(str(value))}"):
            train("gan", tmp_path / "x", lr=value)
    for seed in (-1, 2**64):
        with pytest.raises(ConfigError, match=f"seed: expected an integer from 0 to {2**63 - 1}.*found {seed}"):
            train("gan", tmp_path / "x", seed=seed)
    text = tmp_path / "short.txt"
    text.write_text("x" * 2560)
    with pytest.raises(DataError, match="expected at least 2561 bytes of text for 128-token windows, found 2560"):
        train("gpt", tmp_path / "x", data=str(text), steps=1)
    text.write_text("x" * 2561)   # the least that holds a window in its held-out twentieth: taken
    with pytest.raises(ConfigError, match="--image-size: expected an option of image data, found gpt training on"):
        train("gpt", tmp_path / "x", data=str(text), steps=1, image_size=64)
    with pytest.raises(ConfigError, match="--channels: expected an option of image data, found flow training on 'moons'"):
        train("flow", tmp_path / "x", data="moons", steps=1, channels=1)
    # two pictures (one held out) at size 8: a batch of one through a GAN's 1x1 batch norm was an internal error
    (tmp_path / "two").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "two" / f"{i}.png")
    with pytest.raises(ConfigError, match="training: expected a batch of 2 or more, found a batch of 1 reaching a batch "
                                          "normalization with one value per channel"):
        train("gan", tmp_path / "x", data=str(tmp_path / "two"), steps=2, image_size=8)
    assert not (tmp_path / "x").exists()


def test_a_diverged_run_writes_no_checkpoint_and_keeps_the_old_one(tmp_path):
    from edgegen.errors import TrainingError
    from edgegen.package import sha256_file

    good = train("gan", tmp_path / "ckpt", steps=2, batch_size=8, image_size=16, progress=False)
    before = sha256_file(good / "weights.safetensors")
    with pytest.raises(TrainingError, match=r"expected finite losses, found .*nan or inf at step \d+ \(the run diverged: "
                                            r"try a smaller --lr than 1000\); no checkpoint written"):
        train("gan", good, steps=30, batch_size=8, image_size=16, lr=1000, overwrite=True, progress=False)
    with pytest.raises(TrainingError, match="the run diverged"):   # the VAE's loss refuses NaN images itself
        train("vae", tmp_path / "vae", steps=30, batch_size=8, lr=1000, progress=False)
    # finite, a million-fold: a GAN at --lr 1000 for 3 steps ended at 7e18 and was written (review 143)
    with pytest.raises(TrainingError, match=r"expected losses that did not explode, found loss_d \S+ -> \S+e\+\d+.* "
                                            r"after step 3 \(the run diverged: try a smaller --lr than 1000\); no "
                                            "checkpoint written"):
        train("gan", good, steps=3, batch_size=8, lr=1000, overwrite=True, progress=False)
    assert sha256_file(good / "weights.safetensors") == before and not (tmp_path / "vae").exists()


def test_weights_ruined_by_the_last_step_are_refused_before_anything_is_written(tmp_path, monkeypatch):
    from edgegen.errors import TrainingError
    from edgegen.families.gan import model as gan

    step = gan.Trainer.step

    def ruining(self, *args):   # a last update that leaves a weight infinite while its loss was finite
        losses = step(self, *args)
        with torch.no_grad():
            next(self.model.generator_ema.parameters()).view(-1)[0] = float("inf")
        return losses

    monkeypatch.setattr(gan.Trainer, "step", ruining)
    with pytest.raises(TrainingError, match=r"expected finite weights, found \S+ holding nan or inf after step 2"):
        train("gan", tmp_path / "ckpt", steps=2, batch_size=8, image_size=16, progress=False)
    assert not (tmp_path / "ckpt").exists()


def test_a_checkpoint_records_its_data_folder_whole_and_export_says_when_it_is_gone(tmp_path, monkeypatch):
    from edgegen.export import export_checkpoint
    from edgegen.training.checkpoint import load_checkpoint

    rng = np.random.default_rng(0)
    (tmp_path / "pics").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "pics" / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    ckpt = train("vae", "ckpt", data="pics", steps=1, batch_size=64, image_size=16, progress=False)
    loaded = load_checkpoint(ckpt)
    assert loaded.data["source"] == str(tmp_path / "pics")
    assert loaded.training["batch_size"] == 3   # the whole of the 3 training images, as it ran
    (tmp_path / "pics").rename(tmp_path / "moved")
    with pytest.raises(DataError, match=f"data '{tmp_path / 'pics'}': expected the data checkpoint 'ckpt' was trained "
                                        "on there, found nothing at that path .*give export its new place with --data"):
        export_checkpoint("ckpt", tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
    # given its new place, export records it and optimize draws from it too (it was refused, naming export)
    from edgegen.optimize import optimize_package

    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)   # the trained data moved: --data is what it is for
        export_checkpoint("ckpt", tmp_path / "pkg", data="moved")
    assert Package(tmp_path / "pkg").manifest.provenance["source_checkpoint"]["data"] == str(tmp_path / "moved")
    # other data while the trained data is there: taken, and said (photographs for a grey model went unsaid)
    shutil.copytree(tmp_path / "moved", tmp_path / "pics")
    with pytest.warns(EdgegenWarning, match=r"--data 'moved': the checkpoint was trained on '.*pics', which is there"):
        export_checkpoint("ckpt", tmp_path / "other", data="moved")
    shutil.rmtree(tmp_path / "pics")
    records = optimize_package(tmp_path / "pkg", "fp16", target="tensorrt", progress=lambda line: None)
    assert records and all(r["gate_inputs"] == str(tmp_path / "moved") for r in records.values())
    # and where export's --data has moved too: said with the ways on, not as an unknown data set's name (helper 146)
    (tmp_path / "moved").rename(tmp_path / "gone")
    with pytest.raises(DataError, match=f"data '{tmp_path / 'moved'}': expected the data export gated package .* on "
                                        r"\(its --data\), found nothing at that path .*export it again with --data"):
        optimize_package(tmp_path / "pkg", "int8", target="tensorrt", progress=lambda line: None)
    (tmp_path / "gone").rename(tmp_path / "moved")
    # an edgegen before December 2026 recorded the folder as given, relative to where it trained:
    # from elsewhere it was said as a built-in set's name that does not exist (helper 94)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config["data"]["source"] = "pics"
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"data 'pics': expected the data checkpoint 'ckpt' was trained on there, found "
                                        r"nothing at that path \(moved or deleted\?, a path relative to where an earlier "
                                        r"edgegen trained it, which recorded no folder\): give export its new place"):
        export_checkpoint("ckpt", tmp_path / "pkg2")
    # such a path found here is read from here, said, and recorded whole: optimize from another folder read that
    # folder's "pics", unrelated pictures, or failed (helper 132)
    (tmp_path / "moved").rename(tmp_path / "pics")

    with pytest.warns(EdgegenWarning, match=rf"data 'pics': a path an earlier edgegen recorded relative to where it "
                                            rf"trained 'ckpt', read from this folder as '{tmp_path / 'pics'}'"):
        export_checkpoint("ckpt", tmp_path / "pkg2")
    assert Package(tmp_path / "pkg2").manifest.provenance["source_checkpoint"]["data"] == str(tmp_path / "pics")
    (tmp_path / "elsewhere" / "pics").mkdir(parents=True)   # a folder of the same name, elsewhere: never read
    monkeypatch.chdir(tmp_path / "elsewhere")
    records = optimize_package(tmp_path / "pkg2", "fp16", target="tensorrt", progress=lambda line: None)
    assert records and all(r["gate_inputs"] == str(tmp_path / "pics") for r in records.values())


def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path):
    """A command stopped by SIGTERM (timeout, a container stopping) removes its staging folder and
    lock, keeps the old output, and exits 143."""
    import subprocess
    import sys

    from edgegen.package import sha256_file

    good = train("gan", tmp_path / "ckpt", steps=1, batch_size=8, image_size=16, progress=False)
    before = sha256_file(good / "weights.safetensors")
    code = ("import os, signal, sys; from edgegen import storage; "
            "storage._kill_self = lambda: os.kill(os.getpid(), signal.SIGTERM); "   # at the first fault point: staging
            "from edgegen.cli import main; "
            f"sys.exit(main(['train', 'gan', '--out', {str(good)!r}, '--force', '--steps', '1', '--batch-size', '8', "
            "'--image-size', '16']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "EDGEGEN_FAULT_AT": "1"})
    assert result.returncode == 143, result.stderr[-2000:]
    assert result.stderr.strip().endswith("edgegen: terminated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]   # no .partial, no .ckpt.lock
    assert sha256_file(good / "weights.safetensors") == before


def test_sigterm_during_a_shipped_names_first_export_cleans_up_too(tmp_path):
    """info, check and build export a shipped name before their work, where SIGTERM had Python's
    own handling: its staging folder and lock were left in the cache, and nothing was said."""
    import subprocess
    import sys

    code = ("import os, signal, sys; from edgegen import storage; "
            "storage._kill_self = lambda: os.kill(os.getpid(), signal.SIGTERM); "
            "from edgegen.cli import main; sys.exit(main(['info', 'gan-digits']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**__import__("os").environ, "EDGEGEN_FAULT_AT": "1",
                                 "XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert result.returncode == 143, result.stderr[-2000:]
    assert result.stderr.strip().endswith("edgegen: terminated")
    assert [p.name for p in (tmp_path / "cache" / "edgegen" / "packages").iterdir()] == []   # no .partial, no .lock


def test_audio_and_photograph_folders_name_what_they_cannot_take(tmp_path):
    """WavNet's folders: hidden files and a folder named .wav left out, a truncated stereo file read
    to its last whole frame, one clip refused (one is held out) as one image is; super-resolution
    names the photograph too small for its crops."""
    import wave

    from edgegen.families.sr.data import photo_split
    from edgegen.families.wavenet.model import load_audio
    from edgegen.runtimes.audio import read_wav

    folder = tmp_path / "wavs"
    (folder / "sub.wav").mkdir(parents=True)
    (folder / "._0.wav").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    with wave.open(str(folder / "0.wav"), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.arange(400, dtype="<i2").tobytes())
    stereo = folder / "0.wav"
    stereo.write_bytes(stereo.read_bytes()[:-3])   # cut inside its last frame
    assert len(read_wav(stereo, 8000)) == 199
    with pytest.raises(DataError, match=f"data '{folder}': expected 'tones' or a folder of at least 2 WAV files "
                                        r"\(one held out\), found one .wav file in it"):
        load_audio(str(folder), 8000, 0)
    with pytest.raises(DataError, match="found a file \\(give the folder holding it\\)"):
        load_audio(str(stereo), 8000, 0)
    # a short clip is left out before the split: the one held out could be it, and training said "found none"
    for name, seconds in (("long.wav", 1.0), ("long2.wav", 1.0), ("short.wav", 0.01)):
        with wave.open(str(folder / name), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes(np.zeros(int(8000 * seconds), "<i2").tobytes())
    for seed in range(4):   # and said: they were dropped without a word (helper 107)
        with pytest.warns(EdgegenWarning, match=r"left out 2 WAV file\(s\) shorter than 1026 samples at 8000 Hz \(a "
                                                r"training window\): 0.wav, short.wav$"):
            train, _, test, _, _ = load_audio(str(folder), 8000, seed, min_samples=1026)
        assert len(train) == len(test) == 1 and all(len(c) == 8000 for c in train + test)
    with pytest.warns(EdgegenWarning, match=r"of its 4 WAV files, 1 of several channels averaged to mono$"):   # said now
        load_audio(str(folder), 8000, 0, min_samples=1026)
    (folder / "long2.wav").unlink()
    with pytest.raises(DataError, match=r"expected at least 2 WAV files \(one held out\) of 1026 samples or more at "
                                        r"8000 Hz, found 1; shorter: 0.wav, short.wav"):
        load_audio(str(folder), 8000, 0, min_samples=1026)

    # channels in opposite phase average to silence: said (helper 146); a stereo mix of one sound is not
    tone = (8000 * np.sin(np.arange(800) * 0.3)).astype("<i2")
    for name, right in (("opposite.wav", -tone), ("mixed.wav", tone // 2)):
        with wave.open(str(tmp_path / name), "wb") as w:
            w.setnchannels(2), w.setsampwidth(2), w.setframerate(8000)
            w.writeframes(np.stack([tone, right], axis=1).tobytes())
    with pytest.warns(EdgegenWarning, match=r"opposite.wav: its 2 channels cancel when averaged to mono \(the mix is "
                                            r"\d+ dB below them: opposite phase\), so it is read as near silence"):
        assert np.abs(read_wav(tmp_path / "opposite.wav", 8000)).max() < 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error", EdgegenWarning)
        read_wav(tmp_path / "mixed.wav", 8000)

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, size in (("big.png", 80), ("big2.png", 80), ("small.png", 30)):
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(photos / name)
    with pytest.raises(DataError, match="small.png': expected at least 64 pixels on each side for the model's 64-pixel crops, "
                                        "found 30x30"):
        photo_split(str(photos), 0, 64)


def test_latent_dim_is_refused_by_name_for_families_without_a_latent_vector(tmp_path, capsys):
    from edgegen.cli import main

    assert main(["train", "diffusion", "--out", str(tmp_path / "x"), "--latent-dim", "8"]) == 2
    err = capsys.readouterr().err
    assert "--latent-dim: expected an option of a family with a latent vector (vae, gan" in err
    assert err.rstrip().endswith("found it given to 'edgegen train diffusion'")


def test_a_folders_subfolders_are_the_classes_of_the_families_that_take_classes(tmp_path, capsys):
    """An ImageFolder (cats/, dogs/) trains cgan, diffusion and pixelcnn on its subfolders as
    classes, in sorted order as torchvision's; each picture's label is its subfolder's through the
    split; the names are in the package, and --label takes them. A folder with pictures at its top
    too has none, said."""
    from edgegen.training.checkpoint import load_checkpoint
    from edgegen.training.data import folder_classes

    colours = {"blue": (0, 0, 255), "red": (255, 0, 0), "green": (0, 255, 0)}
    for name, colour in colours.items():
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), colour, np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    assert folder_classes(tmp_path / "data") == ["blue", "green", "red"]
    data = load_images(str(tmp_path / "data"), image_size=8, classes=True)
    assert data.num_classes == 3 and data.class_names == ["blue", "green", "red"]
    for pictures, labels in ((data.train, data.train_labels), (data.test, data.test_labels)):
        strongest = pictures.mean(axis=(2, 3)).argmax(1)   # 0 red, 1 green, 2 blue
        assert [["red", "green", "blue"][s] for s in strongest] == [data.class_names[label] for label in labels]
    assert load_images(str(tmp_path / "data"), image_size=8).num_classes == 0   # a family without classes
    ckpt = train("cgan", tmp_path / "cgan", data=str(tmp_path / "data"), steps=1, batch_size=4, progress=False)
    trained = load_checkpoint(ckpt)
    assert trained.config.num_classes == 3 and trained.data["classes"] == ["blue", "green", "red"]
    import edgegen
    from edgegen.cli import main
    from edgegen.errors import InputError
    from edgegen.export import export_checkpoint

    pipe = edgegen.load(export_checkpoint(ckpt, tmp_path / "pkg"))
    assert pipe.class_names == ["blue", "green", "red"]
    np.testing.assert_array_equal(pipe(2, labels="red", seed=1), pipe(2, labels=2, seed=1))
    np.testing.assert_array_equal(pipe(2, labels=["red", "blue"], seed=1), pipe(2, labels=[2, 0], seed=1))
    from edgegen.runtimes.pipeline import class_labels

    with pytest.raises(InputError, match=r"^labels: expected class ids \(this model's classes have no names\), found 'red'$"):
        class_labels("red", 2, 10, None)   # the digits'
    assert class_labels("7", 1, 10, None).tolist() == [7]   # the command line's --label 7
    numbered = ["0", "1", "10", "2"]   # subfolders named by number, sorted as text: a number is a name
    assert class_labels(["2", "10", " 0 "], 3, 4, None, names=numbered).tolist() == [3, 2, 0]
    with pytest.raises(InputError, match=r"expected one of the model's class names \(0, 1, 10, 2\): as some are "
                                         r"numbers, a number is read as a name only, found '3'$"):
        class_labels("3", 1, 4, None, names=numbered)   # it was id 3, the one named 2
    with pytest.raises(InputError, match=r"expected class ids or the model's class names .*found '\+-3'$"):
        class_labels("+-3", 1, 3, None, names=["blue", "green", "red"])   # int() raised a ValueError (review 158)
    assert class_labels(np.array(["red", "blue"]), 2, 3, None, names=["blue", "green", "red"]).tolist() == [2, 0]
    assert class_labels(["red", 1], 2, 3, None, names=["blue", "green", "red"]).tolist() == [2, 1]
    assert class_labels("z\u00e9ro", 1, 2, None, names=["one", "ze\u0301ro"]).tolist() == [1]   # NFC on both sides
    with pytest.raises(InputError, match=r"expected class ids from 0 to 2 or the class names \(blue, green, red\), "
                                         r"found 5$"):
        class_labels(5, 1, 3, None, names=["blue", "green", "red"])
    with pytest.raises(InputError, match=r"^labels: expected class ids or the model's class names \(blue, green, red\), "
                                         r"found 'cat'$"):
        pipe(1, labels="cat")
    assert main(["generate", str(tmp_path / "pkg"), "--label", "green", "--n", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert main(["generate", str(tmp_path / "pkg"), "--n", "3", "--seed", "0", "--out", str(tmp_path / "r.png")]) == 0
    drawn = " ".join(pipe.class_names[c] for c in pipe.drawn_labels(3, seed=0))
    assert f"classes drawn: {drawn} (row by row)" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "pkg")]) == 0   # the names --label takes, not only inside the raw config
    assert "classes   3: 0 blue, 1 green, 2 red (--label takes a name or an id)" in capsys.readouterr().out
    from edgegen.cli import _classes_line

    assert _classes_line({"num_classes": 3, "data": {"classes": ["0", "10", "2"]}}, "cgan") == \
        "3: '0', '10', '2' (--label takes a name: some are numbers)"   # "1 10" read as label 1 being 10 (162)
    assert _classes_line({"num_classes": 10, "data": {"source": "digits"}}, "cgan") == "10: ids 0 to 9 (--label takes an id)"
    assert _classes_line({"num_classes": 0}, "cgan") == _classes_line({}, "cgan") == ""
    # a plugin's family names its own flag, or is not installed here: --label was said all the same (review 172)
    assert _classes_line({"num_classes": 2}, "no-such-family") == "2: ids 0 to 1 (labels= takes an id)"
    # a start of other class names: each id's embedding takes the new class, said (review 158)
    for name in ("apples", "pears", "plums"):
        (tmp_path / "fruit" / name).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / "fruit" / name / f"{i}.png")
    with pytest.warns(EdgegenWarning, match=r"its classes become the data's, id by id \(0: blue -> apples; 1: green -> "
                                            r"pears; 2: red -> plums\)"):
        train("cgan", tmp_path / "fruit-cgan", data=str(tmp_path / "fruit"), init=ckpt, steps=1, batch_size=4,
              progress=False)
    base = train("diffusion", tmp_path / "base", data=str(tmp_path / "data"), steps=1, batch_size=4, progress=False,
                 width=8)
    capsys.readouterr()
    assert main(["bench", str(export_checkpoint(base, tmp_path / "base-pkg")), "--iters", "1", "--warmup", "0",
                 "--no-energy", "--steps", "2"]) == 0
    assert ", label 0 (blue) at guidance" in capsys.readouterr().out   # the class timed, by name
    with pytest.raises(edgegen.errors.ConfigError, match=r"expected the base model's classes \(blue, green, red\), found "
                                                         r"apples, pears, plums: a ControlNet steers"):
        train("controlnet", tmp_path / "cn", base=str(base), data=str(tmp_path / "fruit"), steps=1, progress=False)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "data" / "top.png")
    assert folder_classes(tmp_path / "data") == []
    with pytest.raises(edgegen.errors.ConfigError, match=r"num_classes expected at least 1 .*; --data '.*': 1 picture at "
                                                         r"its top \(top.png\) outside its 3 subfolders$"):   # cgan's refusal named no file (158)
        train("cgan", tmp_path / "stray", data=str(tmp_path / "data"), steps=1, progress=False)
    shutil.copytree(tmp_path / "fruit", tmp_path / "lone" / "fruit")
    with pytest.raises(edgegen.errors.ConfigError, match=r"its pictures all lie in one subfolder, fruit \(give --data "
                                                         r"'.*lone/fruit', whose subfolders are classes\)$"):
        train("cgan", tmp_path / "one", data=str(tmp_path / "lone"), steps=1, progress=False)
    with pytest.warns(EdgegenWarning, match=r"taken together as one set without classes \(some lie at its top: "
                                            r"subfolders are read as classes where every picture lies in one\)"):
        ckpt = train("diffusion", tmp_path / "pooled", data=str(tmp_path / "data"), steps=1, batch_size=4,
                     progress=False, width=8)
    assert load_checkpoint(ckpt).config.num_classes == 0
