"""Super-resolution: tiling that leaves no seam, every picture form in and out, the command line,
profiles over height and width, and the shipped x4 model against bicubic upscaling."""

import json

import numpy as np
import pytest
from PIL import Image

import edgegen
from edgegen.check import check_package
from edgegen.cli import main
from edgegen.errors import ConfigError, InputError
from edgegen.export import export_checkpoint
from edgegen.families.sr.degrade import bicubic, degrade
from edgegen.families.sr.pipeline import LUMA, blend_weights, tile_starts
from edgegen.runtimes.engines import package_profiles
from edgegen.training.train import train


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A tiny x4 model (radius 4: two body convs), a few steps through both training phases."""
    root = tmp_path_factory.mktemp("sr")
    ckpt = train("sr", root / "ckpt", steps=4, batch_size=4, image_size=32, width=8, body_convs=2, progress=False)
    return export_checkpoint(ckpt, root / "pkg")


@pytest.mark.parametrize("length, tile, overlap, radius", [(100, 32, 8, 4), (33, 32, 8, 4), (250, 128, 16, 8),
                                                           (61, 20, 6, 4), (20, 32, 8, 4), (97, 16, 1, 3)])
def test_blend_weights_sum_to_one_and_skip_each_tiles_cut_context(length, tile, overlap, radius):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    weights = blend_weights(length, starts, tile, overlap, radius)
    total = np.zeros(length)
    margin = min(radius, overlap // 2)
    for start, w in zip(starts, weights):
        total[start:start + len(w)] += w
        inner_left = start > 0
        inner_right = start + len(w) < length
        if inner_left:
            assert not w[:margin].any()
        if inner_right:
            assert not w[len(w) - margin:].any()
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_tiled_output_equals_untiled_where_the_overlap_covers_the_receptive_field(package):
    pipe = edgegen.load(package)
    assert pipe.config.receptive_radius == 4 and pipe.config.overlap == 8
    image = np.random.default_rng(0).random((45, 67, 3), dtype=np.float32)
    whole = pipe.upscale(image, tile=512)
    assert whole.shape == (180, 268, 3) and whole.dtype == np.float32
    for tile, batch in ((16, 1), (20, 3), (33, 8)):
        tiled = pipe.upscale(image, tile=tile, batch=batch)   # overlap 8 = twice the radius: exact
        assert np.abs(tiled - whole).max() < 1e-5
    blended = pipe.upscale(image, tile=16, overlap=2)         # too little context: blended, close, not exact
    assert 0 < np.abs(blended - whole).max() < 0.5 and np.isfinite(blended).all()


def test_upscale_reports_each_call_of_tiles_and_stops_where_its_callback_raises(package):
    """A large picture's tiles are minutes of work: a service's progress, and its way to stop."""
    from PIL import Image

    pipe = edgegen.load(package)
    image = np.random.default_rng(0).random((45, 67, 3), dtype=np.float32)
    heard = []
    upscaled = pipe.upscale(image, tile=20, batch=3, callback=lambda done, total: heard.append((done, total)))
    tiles = heard[-1][1]
    assert tiles > 3 and heard == [(min(done, tiles), tiles) for done in range(3, tiles + 3, 3)]
    assert np.array_equal(upscaled, pipe.upscale(image, tile=20, batch=3))
    heard.clear()   # a Pillow picture takes the same road
    pipe.upscale(Image.fromarray((image * 255).astype(np.uint8)), tile=20, callback=lambda *a: heard.append(a))
    assert heard[-1] == (tiles, tiles)

    class Gone(Exception):
        pass

    def client_gone(done, total):
        raise Gone(f"after {done} of {total}")

    with pytest.raises(Gone, match=f"after 3 of {tiles}"):
        pipe.upscale(image, tile=20, batch=3, callback=client_gone)
    with pytest.raises(edgegen.InputError, match=r"callback: expected a function \(tiles done, tiles\) or None"):
        pipe.upscale(image, callback="stop")
    for progress in ("yes", 2):   # it showed a bar without a word, where WaveNet's refused
        with pytest.raises(edgegen.InputError, match=rf"^progress: expected False, None \(a bar on a terminal\) or True, "
                                                     rf"found {progress!r}$"):
            pipe.upscale(image, progress=progress)


def test_every_picture_form_comes_back_in_its_own_form(package):
    pipe = edgegen.load(package)
    rng = np.random.default_rng(1)
    rgba = (rng.random((9, 13, 4)) * 255).astype(np.uint8)
    out = pipe.upscale(rgba)
    assert out.shape == (36, 52, 4) and out.dtype == np.uint8
    alpha = (bicubic(rgba[None, :, :, 3].astype(np.float32) / 255, 4)[0] * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[:, :, 3], alpha)                      # alpha: plain bicubic
    np.testing.assert_array_equal(out[:, :, :3], pipe.upscale(rgba[:, :, :3]))
    grey = rgba[:, :, 0]
    from_rgb = pipe.upscale(np.repeat(grey[:, :, None], 3, axis=2).astype(np.float32) / 255)
    expected = (np.clip(from_rgb @ LUMA, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(pipe.upscale(grey), expected)              # grey: luma of the RGB result
    for mode, back in (("L", "L"), ("LA", "LA"), ("RGB", "RGB"), ("RGBA", "RGBA"), ("P", "RGB"), ("1", "L")):
        result = pipe(Image.fromarray(rgba if "A" in mode else rgba[:, :, :3]).convert(mode))
        assert (result.mode, result.size) == (back, (52, 36))
    assert pipe(rgba.astype(np.float32) / 255).dtype == np.float32
    grey_alpha = pipe(rgba[:, :, [0, 3]])                                    # [H, W, 2]: grey and alpha
    np.testing.assert_array_equal(grey_alpha[:, :, 1], alpha)
    wide = rgba.astype(np.uint16) * 257                                      # 16-bit: the same picture, finer steps
    assert pipe(wide).dtype == np.uint16
    assert np.abs(pipe(wide) / 257 - out).max() <= 0.51   # the same result, rounded to finer steps


def test_working_memory_grows_with_the_tile_row_not_the_image(package):
    """numpy's allocations while upscaling a tall picture: the uint8 result, the float input, and
    one tile row's band of float output; no float copy of the whole result (4 bytes a value, 4x
    the uint8 result) is made. tracemalloc counts numpy's buffers, not ONNX Runtime's arena, and
    the same code allocates the same buffers on every run."""
    import tracemalloc

    pipe = edgegen.load(package)
    tall = (np.random.default_rng(6).random((1920, 64, 3)) * 255).astype(np.uint8)
    pipe.upscale(tall[:64], tile=32, batch=1)       # sessions warmed up outside the measurement
    tracemalloc.start()
    try:
        out = pipe.upscale(tall, tile=32, batch=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result, float_input = out.nbytes, tall.size * 4
    band = 3 * (32 * 4) * (64 * 4) * 4              # one tile row of float output
    call = 3 * (32 * 4) ** 2 * 4                    # one graph call's output
    # the input as float32 twice (as read, and contiguous by plane), the band and its conversion's
    # temporaries, one graph call's output and its slices: far below a float copy of the result (4x it)
    assert peak < result + 2 * float_input + 6 * band + 2 * call < 3 * result


def test_transparency_colour_modes_and_16_bit_grey_are_kept(package):
    """A tRNS colour in a grey or RGB PNG, a palette's transparent entry: alpha is kept, not
    dropped. CMYK comes back as RGB; 16-bit grey (16-bit PNGs) stays 16-bit."""
    pipe = edgegen.load(package)
    rgb = Image.fromarray((np.random.default_rng(4).random((9, 13, 3)) * 255).astype(np.uint8))
    keyed = rgb.copy()
    keyed.info["transparency"] = rgb.getpixel((0, 0))
    grey = rgb.convert("L")
    grey.info["transparency"] = grey.getpixel((0, 0))
    palette = rgb.convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))
    for picture, mode in ((keyed, "RGBA"), (grey, "LA"), (palette, "RGBA"), (rgb.convert("P"), "RGB"),
                          (rgb.convert("CMYK"), "RGB")):
        result = pipe(picture)
        assert (result.mode, result.size) == (mode, (52, 36))
        if mode.endswith("A"):    # the transparent pixel's corner stays transparent
            assert result.getpixel((0, 0))[-1] < 128 and np.asarray(result)[..., -1].max() == 255
    sixteen = Image.fromarray(np.asarray(grey, np.uint16) * 257)
    assert sixteen.mode == "I;16"
    result = pipe(sixteen)
    assert (result.mode, result.size) == ("I;16", (52, 36))
    eight_bit = pipe(Image.fromarray(np.asarray(grey)))
    assert np.abs(np.asarray(result) / 257 - np.asarray(eight_bit)).max() <= 0.51


@pytest.mark.parametrize("bad, message", [
    (np.zeros((8, 8), np.int16), "expected uint8 or uint16 pixels or floats in"),
    (np.zeros((8, 8), bool), "found ndarray of dtype bool"),
    (np.full((8, 8, 3), np.nan, np.float32), "found NaN or Inf"),
    (np.full((8, 8, 3), 2.0, np.float32), "found values from 2.0 to 2.0"),
    (np.zeros((8, 8, 5), np.uint8), r"expected \[height, width\] or \[height, width, 1\|2\|3\|4\]"),
    (np.zeros((0, 8, 3), np.uint8), "found shape"),
    (Image.new("F", (8, 8)), "found mode 'F': floating-point pixels, which have no fixed range"),
    ("photo.jpg", r"expected an array of pixels or a Pillow image, found the path 'photo.jpg': open it first, "
                  r"PIL.Image.open\(path\)"),   # was "found str of dtype <U9" (review 173)
    (b"photo", r"expected an array of pixels \(uint8, uint16 or float\) or a Pillow image, found bytes"),
])
def test_bad_pictures_are_refused_with_what_was_found(package, bad, message):
    with pytest.raises(InputError, match=message):
        edgegen.load(package).upscale(bad)


def test_bad_tiling_and_huge_outputs_are_refused(package):
    pipe = edgegen.load(package)
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match="tile: expected an integer from 1 to 512, found 513"):
        pipe.upscale(image, tile=513)
    with pytest.raises(InputError, match="overlap: expected fewer pixels than the tile's 16, found 16"):
        pipe.upscale(image, tile=16, overlap=16)
    with pytest.raises(InputError, match=r"tile: expected more pixels than the package's overlap of 8 \(or a smaller "
                                         r"overlap\), found 4"):   # the overlap not given: the tile is named
        pipe.upscale(image, tile=4)
    with pytest.raises(InputError, match=r"expected an output of at most 0.001 megapixels at x4, found 0.00102 "
                                         r"\(raise --max-megapixels"):
        pipe.upscale(image, max_megapixels=0.001)
    # the size first, before the pixels are copied to floats and scanned (a 12000 x 12000 array took 3.4 s
    # and 3.4 GB to be refused, helper 151): a NaN pixel is not reached
    with pytest.raises(InputError, match="expected an output of at most 0.001 megapixels"):
        pipe.upscale(np.full((8, 8, 3), np.nan, np.float32), max_megapixels=0.001)
    with pytest.raises(InputError, match="batch: expected an integer from 1 to 16, found 17"):
        pipe.upscale(image, batch=17)
    with pytest.raises(InputError, match="max_megapixels: expected a positive number, found -1"):
        pipe.upscale(image, max_megapixels=-1)


@pytest.mark.parametrize("low", [8, 16, 24])
def test_trace_and_gate_sizes_differ_and_none_is_square(low):
    from edgegen.families.sr.export import gate_size

    sizes = [gate_size(batch, low) for batch in (1, 2, 3)]
    assert len(set(sizes)) == 3 and all(h != w and 0 < h <= low and 0 < w <= low for h, w in sizes)
    assert any(h % 2 for h, _ in sizes) and gate_size(8, low) is None


def test_the_graph_takes_any_height_and_width_and_was_gated_at_unseen_ones(package):
    manifest = json.loads((package / "edgegen.json").read_text())
    graph = manifest["graphs"]["upscaler"]
    assert graph["inputs"][0]["shape"] == ["batch", 3, "height", "width"] and graph["validation"]["passed"]
    pipe = edgegen.load(package)
    out = pipe.sessions["upscaler"].run({"image": np.random.default_rng(0).random((2, 3, 7, 11), np.float32)})
    assert out["upscaled"].shape == (2, 3, 28, 44)


@pytest.mark.parametrize("scale", [2, 8])
def test_a_scale_other_than_the_graphs_is_refused_at_load(package, tmp_path, scale):
    """scale 2 on the x4 graph pasted its tiles onto an x2 grid (a scrambled picture, exit 0);
    scale 8 failed in numpy's broadcasting."""
    import shutil

    from edgegen.errors import ManifestError

    copy = shutil.copytree(package, tmp_path / "pkg")
    manifest = json.loads((copy / "edgegen.json").read_text())
    manifest["config"]["scale"] = scale
    (copy / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=rf"config disagrees with its graphs: scale {scale}: expected upscaled of "
                                            rf"graph 'upscaler' to be {scale} times image at axis 2, found 4\*height "
                                            r"\(a x4 model\)"):
        edgegen.load(copy)


def test_tensorrt_profile_spans_height_and_width_from_the_declared_limits(package, capsys):
    (profile,) = package_profiles(edgegen.load(package).package).values()
    assert profile == (("image", (1, 3, 1, 1), (4, 3, 128, 128), (16, 3, 512, 512)),)
    (check,) = check_package(package)
    assert check.ok and check.profile == profile and not check.unprofiled_dims
    assert main(["check", str(package)]) == 0
    assert "profile      image: min [1, 3, 1, 1], opt [4, 3, 128, 128], max [16, 3, 512, 512]" in capsys.readouterr().out
    # bench times a size past them as asked, and says so (it ran 66 s at height 100000 without a word)
    assert main(["bench", str(package), "--shapes", "height=520,width=8", "--batch", "1", "--iters", "2"]) == 0
    assert "--shapes/--sweep height=520: beyond the largest height the package declares, which its TensorRT " \
           "profiles are built to (512); timed as asked" in capsys.readouterr().err
    assert main(["bench", str(package), "--sweep", "height=8,520", "--shapes", "width=8", "--batch", "1", "--iters", "2",
                 "--no-generation"]) == 0
    assert "--shapes/--sweep height=520: beyond the largest height" in capsys.readouterr().err   # it named --shapes
    assert main(["bench", str(package), "--iters", "0"]) == 2
    assert "edgegen: error: --iters: expected at least 1, found 0" in capsys.readouterr().err


def test_upscale_command_reads_and_writes_png_and_jpeg(package, tmp_path, capsys):
    rng = np.random.default_rng(2)
    Image.fromarray((rng.random((10, 14, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.jpg", quality=90)
    Image.fromarray((rng.random((10, 14, 4)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.jpg"), "--package", str(package), "--out", str(tmp_path / "o.jpg"),
                 "--tile", "12", "--tile-batch", "2"]) == 0
    with Image.open(tmp_path / "o.jpg") as written:
        assert (written.format, written.mode, written.size) == ("JPEG", "RGB", (56, 40))
    assert main(["upscale", str(tmp_path / "in.png"), "--package", str(package), "--out", str(tmp_path / "o.png")]) == 0
    with Image.open(tmp_path / "o.png") as written:
        assert (written.format, written.mode, written.size) == ("PNG", "RGBA", (56, 40))
    assert main(["generate", str(package), "--image", str(tmp_path / "in.png"), "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes() == (tmp_path / "o.png").read_bytes()
    capsys.readouterr()
    assert main(["generate", str(package), "--image", str(tmp_path / "in.png"), "--seed", "3", "--out",
                 str(tmp_path / "s.png")]) == 2   # accepted and ignored before
    assert "--seed: expected an option of packages that draw at random, found it given to a sr package" in \
        capsys.readouterr().err
    for args, message in (
            (["--out", str(tmp_path / "a.jpg")], "JPEG holds 8-bit grey or RGB pictures, found mode RGBA"),
            (["--out", str(tmp_path / "a.gif")], "expected an extension among .png, .jpg, .jpeg, found .gif"),
            (["--out", str(tmp_path / "a.png"), "--scale", "2"], "--scale 2: expected the factor of the package given, x4"),
            (["--out", str(tmp_path / "a.png"), "--scale", "0"], "--scale: expected an upscale factor of at least 2, found 0")):
        assert main(["upscale", str(tmp_path / "in.png"), "--package", str(package), *args]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / args[1]).exists()


def test_upscale_keeps_what_the_user_has_and_turns_photographs_upright(package, tmp_path, capsys, monkeypatch):
    """An existing --out is replaced only with --force, and never the input itself; a sideways
    camera photograph (EXIF orientation) is upscaled as viewers show it; a picture too large for
    Pillow, or for --max-megapixels, is refused in one line."""
    photo = Image.fromarray((np.random.default_rng(5).random((10, 14, 3)) * 255).astype(np.uint8))
    exif = photo.getexif()
    exif[0x0112] = 6    # "rotate 90 degrees clockwise to view"
    photo.save(tmp_path / "in.jpg", exif=exif)
    upscale = ["upscale", str(tmp_path / "in.jpg"), "--package", str(package)]
    out = tmp_path / "out.png"
    out.write_bytes(b"the user's own")
    assert main([*upscale, "--out", str(out)]) == 2
    assert "expected a new file, found one already there (--force replaces it)" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's own"
    assert main([*upscale, "--out", str(out), "--force"]) == 0
    with Image.open(out) as written:
        assert written.size == (40, 56)      # upright: 10 wide, 14 high, times 4
    before = (tmp_path / "in.jpg").read_bytes()
    assert main([*upscale, "--out", str(tmp_path / "in.jpg"), "--force"]) == 2
    assert "expected a file other than the picture being upscaled, found the input itself" in capsys.readouterr().err
    assert (tmp_path / "in.jpg").read_bytes() == before
    # never inside a package (its own or another): a file added there made export --force refuse it
    assert main([*upscale, "--out", str(package / "up.png")]) == 2
    assert "found it inside the package" in capsys.readouterr().err and not (package / "up.png").exists()
    assert main([*upscale, "--out", str(tmp_path / "big.png"), "--max-megapixels", "0.001"]) == 2
    assert "expected an output of at most 0.001 megapixels at x4, found 0.00224" in capsys.readouterr().err
    assert main([*upscale, "--out", str(tmp_path / "big.png"), "--tile-batch", "17"]) == 2
    assert "edgegen: error: --tile-batch: expected an integer from 1 to 16, found 17" in capsys.readouterr().err
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)    # 140 pixels is then twice over Pillow's guard
    assert main([*upscale, "--out", str(tmp_path / "big.png")]) == 2
    assert "expected a picture Pillow agrees to decode (at most 60 pixels" in capsys.readouterr().err
    assert not (tmp_path / "big.png").exists()


def test_the_python_upscale_reads_a_picture_as_the_command_does(package, tmp_path):
    """A sideways camera photograph comes back upright, as `edgegen upscale` writes it (it came
    back sideways); premultiplied alpha and a 16-bit PGM are upscaled, not refused as modes without
    a fixed range; a closed image is an InputError, not Pillow's bare AssertionError."""
    pipe = edgegen.load(package)
    photo = Image.fromarray((np.random.default_rng(5).random((10, 14, 3)) * 255).astype(np.uint8))
    exif = photo.getexif()
    exif[0x0112] = 6    # "rotate 90 degrees clockwise to view"
    photo.save(tmp_path / "in.jpg", exif=exif)
    assert main(["upscale", str(tmp_path / "in.jpg"), "--package", str(package), "--out", str(tmp_path / "o.png")]) == 0
    with Image.open(tmp_path / "in.jpg") as sideways, Image.open(tmp_path / "o.png") as written:
        upscaled = pipe.upscale(sideways)
        assert upscaled.size == written.size == (40, 56)
        assert np.array_equal(np.asarray(upscaled), np.asarray(written))
    rgba = Image.fromarray((np.random.default_rng(6).random((6, 5, 4)) * 255).astype(np.uint8))
    for premultiplied, mode in ((rgba.convert("RGBa"), "RGBA"), (rgba.convert("LA").convert("La"), "LA")):
        assert pipe(premultiplied).mode == mode
    (tmp_path / "grey.pgm").write_bytes(b"P5\n3 2\n65535\n" + np.arange(6, dtype=">u2").tobytes() * 1000)
    with Image.open(tmp_path / "grey.pgm") as pgm:
        assert pgm.mode == "I" and pipe(pgm).mode == "I;16"
    with Image.open(tmp_path / "o.png") as closed:
        pass
    with pytest.raises(InputError, match=r"image: expected a Pillow image whose pixels can be read, found one that "
                                         r"cannot \(AssertionError; closed\?\)"):
        pipe(closed)


def test_an_upscaled_photograph_keeps_its_colour_profile(package, tmp_path, capsys):
    """The upscale keeps the picture's values, which its ICC profile gives colours to (a phone's
    Display P3): the profile was dropped, and viewers showed the values as sRGB. A CMYK profile no
    longer describes the RGB the picture is converted to, and is not kept. RGBX and native 16-bit
    grey are 8-bit colour and 16-bit grey: they were refused as pixels without a fixed range."""
    from PIL import ImageCms

    pipe = edgegen.load(package)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    grey_profile = bytearray(srgb)
    grey_profile[16:20] = b"GRAY"   # only the header's colour space is read
    pixels = (np.random.default_rng(7).random((6, 5, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6   # turned upright: the profile stays
    for suffix in (".png", ".jpg"):
        Image.fromarray(pixels).save(tmp_path / f"in{suffix}", icc_profile=srgb, exif=exif)
        assert main(["upscale", str(tmp_path / f"in{suffix}"), "--package", str(package),
                     "--out", str(tmp_path / f"out{suffix}")]) == 0
        with Image.open(tmp_path / f"out{suffix}") as written:
            assert written.info.get("icc_profile") == srgb and written.size == (24, 20)
    capsys.readouterr()
    assert pipe(Image.open(tmp_path / "in.png")).info["icc_profile"] == srgb
    grey = Image.fromarray(pixels[:, :, 0])
    grey.info["icc_profile"] = bytes(grey_profile)
    assert pipe(grey).info["icc_profile"] == bytes(grey_profile)
    cmyk = Image.fromarray(pixels).convert("CMYK")
    cmyk.info["icc_profile"] = bytes(grey_profile[:16]) + b"CMYK" + bytes(grey_profile[20:])
    assert "icc_profile" not in pipe(cmyk).info
    assert pipe(Image.fromarray(pixels).convert("RGBX")).mode == "RGB"
    native = Image.frombytes("I;16N", (5, 6), (pixels[:, :, 0].astype(np.uint16) * 257).tobytes())
    assert pipe(native).mode == "I;16"


def test_upscale_refuses_before_the_shipped_export_and_names_its_flags(package, tmp_path, capsys, monkeypatch):
    """--out behind a file, bad tiling, an output past --max-megapixels at the shipped scale, an
    unreadable picture: refused before the shipped model's export (up to a minute on first use),
    where they came after it or after the whole upscale; the pipeline's refusals are named by flag."""
    import edgegen.families.sr.commands as commands

    def no_export(scale, cache=None, report=None):
        raise AssertionError("the shipped model was exported before the refusal")

    monkeypatch.setattr(commands, "shipped_package", no_export)
    Image.fromarray(np.zeros((10, 14, 3), np.uint8)).save(tmp_path / "in.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    Image.new("F", (4, 4)).save(tmp_path / "float.tif")
    picture = str(tmp_path / "in.png")
    for args, message in (
            ([picture, "--out", str(tmp_path / "in.png" / "x.png")], "found a file on the way to it"),
            ([picture, "--out", str(tmp_path / "o.png"), "--tile", "0"], "--tile: expected an integer at least 1, found 0"),
            ([picture, "--out", str(tmp_path / "o.png"), "--tile", "8", "--overlap", "8"],
             "--overlap: expected fewer pixels than the tile's 8, found 8"),
            ([picture, "--out", str(tmp_path / "o.png"), "--max-megapixels", "0.001"],
             "expected an output of at most 0.001 megapixels at x4, found 0.00224"),
            ([str(tmp_path / "broken.png"), "--out", str(tmp_path / "o.png")], "expected a picture Pillow can read"),
            ([str(tmp_path / "float.tif"), "--out", str(tmp_path / "o.png")],
             f"image {str(tmp_path / 'float.tif')!r}: expected a picture of 8- or 16-bit pixels")):
        assert main(["upscale", *args]) == 2, args
        assert message in capsys.readouterr().err
    # generate checks the same values before loading, and names them by the same flags
    for flags, message in ((["--tile-batch", "0"], "--tile-batch: expected an integer from 1 to 16, found 0"),
                           (["--tile", "0"], "--tile: expected an integer at least 1, found 0")):
        assert main(["generate", "sr-photos-x4", "--image", picture, "--out", str(tmp_path / "o.png"), *flags]) == 2
        assert f"edgegen: error: {message}\n" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
    assert main(["upscale", picture, "--out", str(tmp_path / "o.png")]) == 3   # the checks do let a good one through
    assert "AssertionError: the shipped model was exported before the refusal" in capsys.readouterr().err
    assert main(["upscale", picture, "--package", str(package), "--out", str(tmp_path / "o.png"), "--tile", "600"]) == 2
    assert "--tile: expected an integer from 1 to 512, found 600" in capsys.readouterr().err   # the package's own limit


def test_an_x2_model_trains_exports_and_upscales(tmp_path):
    ckpt = train("sr", tmp_path / "ckpt", steps=2, batch_size=2, width=8, body_convs=1, scale=2, progress=False)
    pipe = edgegen.load(export_checkpoint(ckpt, tmp_path / "pkg"))
    assert pipe.scale == 2 and pipe(np.zeros((10, 14, 3), np.uint8)).shape == (20, 28, 3)


def test_training_at_x3_picks_a_crop_the_scale_divides():
    from edgegen.families.sr.model import prepare_data

    data, shape = prepare_data("natural", None, None, 0, {"scale": 3})
    assert shape["image_size"] == 48 and data.train.shape[1:] == (3, 48, 48)


def test_degradations_are_deterministic_and_shrink_by_the_scale():
    image = np.random.default_rng(0).random((3, 40, 24), dtype=np.float32)
    low = degrade(image, 4, np.random.default_rng(5))
    assert low.shape == (3, 10, 6) and low.dtype == np.float32 and 0 <= low.min() and low.max() <= 1
    np.testing.assert_array_equal(low, degrade(image, 4, np.random.default_rng(5)))


def test_the_shipped_x4_model_beats_bicubic_on_held_out_photographs_and_its_int8_variant_passes(tmp_path, monkeypatch,
                                                                                                 capsys):
    """`edgegen upscale` without --package exports the shipped model once into the user's cache;
    through the runtime it restores held-out photographs better than bicubic upscaling."""
    from edgegen.families.sr.commands import shipped_package
    from edgegen.families.sr.evaluation import quality
    from edgegen.optimize import optimize_package

    import shutil

    from edgegen import shipped

    # the checkpoint alone, as an editable install has it (a checkout may hold built packages too)
    root = tmp_path / "edgegen_models"
    for name in ("sr-photos-x4", "vae-digits"):
        shutil.copytree(shipped.checkpoints_dir() / name, root / "checkpoints" / name)
    monkeypatch.setattr(shipped, "models_root", lambda: root)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    Image.fromarray((np.random.default_rng(3).random((12, 20, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "--out", str(tmp_path / "out.gif")]) == 2
    assert not (tmp_path / "cache").exists()     # a bad --out is refused before the shipped model is exported
    capsys.readouterr()
    # another family's shipped name: its family said, where it was told to export it (helper 156)
    assert main(["upscale", str(tmp_path / "in.png"), "--package", "vae-digits", "--out", str(tmp_path / "out.png")]) == 2
    assert capsys.readouterr().err == ("edgegen: error: --package 'vae-digits': expected a super-resolution (sr) package "
                                       "or shipped model, found the shipped vae model of that name\n")
    assert not (tmp_path / "cache").exists()
    assert main(["upscale", str(tmp_path / "in.png"), "--package", "sr-photos-x4", "--out", str(tmp_path / "out.png"),
                 ]) == 0   # the sr one's name: exported once, as without --package
    (package,) = (tmp_path / "cache" / "edgegen" / "packages").iterdir()
    assert f"edgegen: exporting the shipped sr-photos-x4 once into {package}" in capsys.readouterr().err   # not silent
    (tmp_path / "out.png").unlink()
    assert main(["upscale", str(tmp_path / "in.png"), "--out", str(tmp_path / "out.png")]) == 0
    assert "exporting" not in capsys.readouterr().err   # the one --package sr-photos-x4 exported
    assert package.name.startswith("sr-photos-x4-") and shipped_package(4) == package   # exported once, reused
    with Image.open(tmp_path / "out.png") as written:
        assert written.size == (80, 48)
    scores = quality(edgegen.load(package), count=8)
    assert scores["edgegen_psnr"] > scores["bicubic_psnr"] and scores["edgegen_ssim"] > scores["bicubic_ssim"]
    copy = shutil.copytree(package, tmp_path / "pkg-sr")   # optimize refuses the shared package itself
    (record,) = optimize_package(copy, "int8", target="tensorrt", progress=lambda line: None).values()
    assert record["gate"]["passed"] and "file" in record
    assert record["gate"]["detail_db"] >= record["gate"]["min_detail_db"] == 15
    assert "learned detail kept at" in record["gate"]["line"]
    # a variant written before the check (PSNR alone) is said at each load, as the KL gate's are
    manifest = json.loads((copy / "edgegen.json").read_text())
    manifest["variants"]["int8"]["upscaler"]["gate"].pop("detail_db")
    (copy / "edgegen.json").write_text(json.dumps(manifest))
    with pytest.warns(edgegen.PrecisionWarning, match=r"int8 variant of upscaler in .*: expected a gate record of the "
                                                      r"learned detail it keeps .*found one of PSNR alone .*: run edgegen "
                                                      r"optimize --precision int8 --target tensorrt again"):
        edgegen.load(copy, precision="int8", backend="ort-cpu")
    # a "variant" that drops the learned correction, the bilinear upscale alone: it passed the PSNR bar (32 dB
    # against 30), as bicubic did (helper 128); the gate now judges what the model adds to its base
    from edgegen.families.sr.data import held_out_crops
    from edgegen.families.sr.degrade import degrade
    from edgegen.families.sr.model import bilinear_base
    from edgegen.optimize import gate_variant

    class BilinearOnly:
        def run(self, feed):
            return {"upscaled": bilinear_base(feed, fp32.run(feed))["upscaled"].astype(np.float32)}

    fp32 = edgegen.load(copy).sessions["upscaler"]
    rng, crops = np.random.default_rng(0), held_out_crops("natural", 64, 0, 16)
    feeds = [{"image": np.stack([degrade(c, 4, rng) for c in crops[i:i + 8]])} for i in range(0, 16, 8)]
    dropped = gate_variant("sr", "int8", fp32, BilinearOnly(), feeds, None)
    assert dropped.value >= 30 and not dropped.passed and dropped.detail["detail_db"] < 1
    assert "learned detail kept at" in dropped.line() and "< 15" in dropped.line()
    with pytest.raises(ConfigError, match=r"--scale 2: expected a scale with a shipped model .*; train one \(edgegen "
                                          r"train sr --scale 2\)"):
        shipped_package(2)
    with pytest.raises(ConfigError, match=r"--scale 5: expected a scale with a shipped model \(.*\), found none "
                                          r"\(edgegen trains x2, x3, x4\)$"):   # it said to train one, which train refuses
        shipped_package(5)


def _rgb16_png(path, pixels: np.ndarray) -> None:
    """A 48-bit PNG (Pillow writes none): uint16 [H, W, 3], each row unfiltered."""
    import struct
    import zlib

    height, width, _ = pixels.shape
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_pictures_the_upscaler_cannot_take_whole_are_said(package, tmp_path, capsys):
    """Helper 128: a 48-bit PNG came back 8-bit without a word (Pillow keeps the high bytes); a
    Pillow image of no pixels was refused by ONNX Runtime naming a Conv node; a float pixel just
    past 1 was said as "values from ... to 1"."""
    from edgegen.errors import EdgegenWarning

    pipe = edgegen.load(package)
    pixels = (np.random.default_rng(0).random((12, 10, 3)) * 65535).astype(np.uint16)
    _rgb16_png(tmp_path / "deep.png", pixels)
    with pytest.warns(EdgegenWarning, match=r"image: a 16-bit picture with colour or alpha, read at 8 bits a channel .*uint16"):
        with Image.open(tmp_path / "deep.png") as image:
            assert pipe.upscale(image).mode == "RGB"
    assert pipe.upscale(pixels).dtype == np.uint16   # the array keeps its 16 bits, and says nothing
    import warnings

    import tifffile

    tifffile.imwrite(tmp_path / "grey16.tif", pixels[:, :, 0])   # 16-bit grey keeps its depth: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Image.open(tmp_path / "grey16.tif") as image:
            assert pipe.upscale(image).mode == "I;16"

    tifffile.imwrite(tmp_path / "deep.tif", pixels)   # a TIFF's tile names its raw mode in a tuple (helper 133)
    with pytest.warns(EdgegenWarning, match="a 16-bit picture with colour or alpha"):
        with Image.open(tmp_path / "deep.tif") as image:
            pipe.upscale(image)
    assert main(["upscale", str(tmp_path / "deep.png"), "--package", str(package), "--out", str(tmp_path / "up.png")]) == 0
    assert f"warning: image {str(tmp_path / 'deep.png')!r}: a 16-bit picture with colour or alpha" in capsys.readouterr().err
    for size in ((0, 0), (0, 5)):
        with pytest.raises(InputError, match=rf"image: expected a picture with pixels, found a Pillow image of "
                                             rf"{size[0]}x{size[1]}"):
            pipe.upscale(Image.new("RGB", size))
    past = np.full((8, 8, 3), 0.5, np.float32)
    past[0, 0, 0] = np.nextafter(np.float32(1), np.float32(2))
    with pytest.raises(InputError, match=r"found values from 0.5 to 1.0000001"):
        pipe.upscale(past)
