"""Requests that would allocate without bound or run for days are refused up front, in one line."""

import numpy as np
import pytest
from PIL import Image

from edgegen.errors import InputError
from edgegen.images import grid, save_grid
from edgegen.runtimes.pipeline import MAX_COUNT, check_count


def test_counts_are_capped_per_call():
    assert check_count(MAX_COUNT) == MAX_COUNT
    with pytest.raises(InputError, match=r"n: expected at most 100000 per call \(call in batches\), found 1000000000"):
        check_count(10**9)
    with pytest.raises(InputError, match="num_samples: expected at most 4800000"):
        check_count(10**9, "num_samples", 600 * 8000)
    # where calls in batches are not the way past the cap, none is offered
    from edgegen.runtimes.pipeline import line_steps

    with pytest.raises(InputError, match=r"^steps: expected at most 100000 images on one line, found 1000000$"):
        line_steps(10**6)


def test_a_grid_scaled_beyond_any_picture_is_refused_before_it_is_drawn(tmp_path):
    with pytest.raises(InputError, match=r"scale 100000: expected a grid of at most 100 megapixels, found 640000 megapixels \("):
        save_grid(np.zeros((1, 1, 8, 8), np.float32), tmp_path / "x.png", scale=100000)
    assert not (tmp_path / "x.png").exists()
    # pictures on another scale were drawn all white (0-255) or half black ([-1, 1]); a flow's decode,
    # a little past [0, 1], is clipped
    for images, hint in ((np.full((2, 1, 8, 8), 200.0), r"found 200..200 \(0-255 pixels: divide by 255\)"),
                         (np.linspace(-1, 1, 128).reshape(2, 1, 8, 8), r"found -1..1 \(\[-1, 1\] pixels: \(x \+ 1\) / 2\)")):
        with pytest.raises(InputError, match=r"images: expected pixels in \[0, 1\] \(up to 0.1 beyond is clipped\), " + hint):
            save_grid(images, tmp_path / "x.png")
    save_grid(np.full((2, 1, 8, 8), 1.05), tmp_path / "x.png")
    assert np.asarray(Image.open(tmp_path / "x.png")).min() == 255
    # more images per row than images: the row holds them all, not 96 empty cells beside them
    four = np.zeros((4, 1, 8, 8), np.float32)
    assert grid(four, nrow=100).shape == grid(four, nrow=4).shape == (2 + 10, 2 + 4 * 10)
