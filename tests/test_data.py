import numpy as np
import pytest

from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.data.synth import make_dataset
from edgead.errors import EdgeadError


def test_discover_real_magnetic_tile(data_root):
    train = mvtec.discover(data_root, ["magnetic_tile"], "train")
    test = mvtec.discover(data_root, ["magnetic_tile"], "test")
    assert len(train) == 762
    assert {s.defect for s in test} == {"good", "blowhole", "break", "crack", "fray", "uneven"}
    assert all(s.mask_path and s.mask_path.is_file() for s in test if s.label)
    assert sum(s.label for s in test) == 392


def test_varied_sizes_load_to_model_size(data_root):
    samples = mvtec.discover(data_root, ["magnetic_tile"], "test")[::60]
    pre = Preprocess(128, 160)
    imgs = mvtec.load_images(samples, pre)
    masks = mvtec.load_masks(samples, pre)
    assert imgs.shape == (len(samples), 3, 128, 160) and masks.shape == (len(samples), 128, 160)
    assert np.isfinite(imgs).all() and imgs.min() >= -1 and imgs.max() <= 1


def test_multiclass_root_lists_both_categories(data_root):
    cats = mvtec.category_dirs(data_root)
    assert "magnetic_tile" in cats
    single = mvtec.category_dirs(data_root / "magnetic_tile")
    assert list(single) == ["magnetic_tile"]


def test_corrupt_image_names_the_file(tiny_copy):
    bad = tiny_copy / "magnetic_tile" / "train" / "good" / "zz_broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    samples = mvtec.discover(tiny_copy, ["magnetic_tile"], "train")
    with pytest.raises(EdgeadError, match="zz_broken.png: cannot decode image"):
        mvtec.load_images(samples, Preprocess(64, 64))


def test_missing_mask_names_the_mask(tiny_copy):
    masks = sorted((tiny_copy / "magnetic_tile" / "ground_truth").rglob("*_mask.png"))
    masks[0].unlink()
    with pytest.raises(EdgeadError, match=f"{masks[0].name}: missing ground-truth mask"):
        mvtec.discover(tiny_copy, ["magnetic_tile"], "test")


def test_empty_category_is_an_error(tmp_path):
    (tmp_path / "widget" / "train" / "good").mkdir(parents=True)
    with pytest.raises(EdgeadError, match="has no training images"):
        mvtec.discover(tmp_path, None, "train")


def test_holdout_is_seeded_disjoint_and_per_category(tmp_path):
    root = make_dataset(tmp_path, categories=2, n_train=20, n_good=1, n_defect=1, size=32)
    samples = mvtec.discover(root, None, "train")
    a_fit, a_held = mvtec.split_holdout(samples, 0.2, seed=3)
    b_fit, b_held = mvtec.split_holdout(samples, 0.2, seed=3)
    _, c_held = mvtec.split_holdout(samples, 0.2, seed=4)
    assert a_held == b_held and a_fit == b_fit and a_held != c_held
    assert not set(a_fit) & set(a_held) and len(a_fit) + len(a_held) == 40
    assert sorted({s.category for s in a_held}) == ["texture0", "texture1"]
    assert all(sum(s.category == c for s in a_held) == 4 for c in ("texture0", "texture1"))
