import numpy as np
import pytest
from PIL import Image

from edgead.data.preprocess import Preprocess


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "LA"])
def test_any_mode_becomes_rgb_at_model_size(mode):
    img = Image.new(mode, (103, 222))
    x = Preprocess(256, 320)(img)
    assert x.shape == (3, 256, 320) and x.dtype == np.float32


def test_backbone_scaling_maps_to_minus_one_one():
    pre = Preprocess(32, 32)  # Lite0: mean = std = 0.5
    black = pre(Image.new("L", (40, 40), 0))
    white = pre(Image.new("L", (40, 40), 255))
    assert np.allclose(black, -1.0) and np.allclose(white, 1.0)


def test_grayscale_channels_equal_and_roundtrip():
    arr = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    pre = Preprocess(64, 64)
    x = pre(Image.fromarray(arr))
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[1], x[2])
    assert np.array_equal(pre.denormalize(x)[..., 0], arr)


def test_serialises_exactly():
    pre = Preprocess(256, 320, mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6))
    assert Preprocess.from_dict(pre.to_dict()) == pre


def test_mask_binarised_after_resize():
    m = np.zeros((10, 10), np.uint8)
    m[:, 5:] = 255
    m[0, 0] = 120  # below 128 stays normal
    out = Preprocess(20, 20).mask(Image.fromarray(m))
    assert set(np.unique(out)) <= {0, 1}
    assert out[:, :9].sum() == 0 and out[:, 11:].all()
