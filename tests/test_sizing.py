"""``--image-size auto`` (the default): long parts get a long input of about the default area, near-square parts
train square (real magnetic_tile images)."""

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from edgead.cli import app, normalize_argv
from edgead.data.sizing import auto_size


def _parts(tiny_real, dst, size, n=10, name="parts"):
    """Real training tiles, resized to ``size`` (W, H) as a camera framing a long part would give them."""
    src = sorted((tiny_real / "magnetic_tile" / "train" / "good").iterdir())[:n]
    out = dst / name / "train" / "good"
    out.mkdir(parents=True)
    for p in src:
        Image.open(p).convert("RGB").resize(size).save(out / f"{p.stem}.png")
    return out


@pytest.mark.parametrize("size, expected", [((1250, 500), (160, 416)), ((500, 1250), (416, 160)),
                                            ((640, 640), (256, 256)), ((2000, 100), (128, 512)),
                                            ((330, 292), (256, 256)), ((600, 400), (256, 256)),
                                            ((400, 600), (256, 256)), ((700, 400), (192, 352))])
def test_auto_size_follows_the_parts_within_the_pixel_budget(tiny_real, tmp_path, size, expected):
    folder = _parts(tiny_real, tmp_path, size, n=5)
    got, why = auto_size(sorted(folder.iterdir()))
    assert got == expected and all(s % 32 == 0 for s in got)
    assert abs(got[0] * got[1] - 256 * 256) <= 0.1 * 256 * 256  # about the default area
    assert why["n_images"] == 5 and why["median_aspect_w_over_h"] == pytest.approx(size[0] / size[1], rel=1e-3)


def test_the_default_command_trains_a_long_input_for_long_parts(tiny_real, tmp_path):
    _parts(tiny_real, tmp_path, (1250, 500))
    out = tmp_path / "run"
    args = ["train", "--model", "crad", "--data", tmp_path, "--category", "parts", "--out", out, "--epochs", 1,
            "--batch-size", 4, "--no-validate"]  # no --image-size: the default
    r = CliRunner().invoke(app, normalize_argv([str(a) for a in args]))
    assert r.exit_code == 0, r.output
    info = json.loads((out / "run.json").read_text())
    assert (info["preprocess"]["height"], info["preprocess"]["width"]) == (160, 416)
    assert info["data"]["image_size"]["rule"] == "auto" and info["fingerprint"]["image_size"] == [160, 416]
    again = CliRunner().invoke(app, normalize_argv([str(a) for a in [*args, "--image-size", "auto"]]))  # said
    assert again.exit_code == 0 and "already trained" in " ".join(again.output.split())  # (the console wraps)
    bad = CliRunner().invoke(app, normalize_argv([str(a) for a in [*args, "--image-size", "big"]]))
    assert bad.exit_code == 2 and "auto" in bad.output and "Traceback" not in bad.output


def test_a_run_folder_keeps_its_own_size_under_the_default(tiny_real, tmp_path):
    """A run trained at a size given by hand is the same run when its command is repeated without the size (as
    after an upgrade that made ``auto`` the default): it resumes or reports trained, not 'a different run'."""
    _parts(tiny_real, tmp_path, (1250, 500), n=6)
    out = tmp_path / "run"
    args = ["train", "--model", "crad", "--data", tmp_path, "--category", "parts", "--out", out, "--epochs", 1,
            "--batch-size", 4, "--no-validate"]
    first = CliRunner().invoke(app, normalize_argv([str(a) for a in [*args, "--image-size", 96, 128]]))
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, normalize_argv([str(a) for a in args]))
    assert again.exit_code == 0 and "already trained" in " ".join(again.output.split()), again.output
    other = CliRunner().invoke(app, normalize_argv([str(a) for a in [*args, "--image-size", 128]]))  # said: differs
    assert other.exit_code == 2 and "different run" in " ".join(other.output.split())


def test_categories_whose_parts_differ_in_shape_are_told_one_model_has_one_shape(tiny_real, tmp_path):
    square, long = _parts(tiny_real, tmp_path, (640, 640), n=5, name="plates"), \
        _parts(tiny_real, tmp_path, (1250, 500), n=5, name="rails")
    paths = [*sorted(square.iterdir()), *sorted(long.iterdir())]
    cats = ["plates"] * 5 + ["rails"] * 5
    _, why = auto_size(paths, categories=cats)
    assert why["per_category"] == {"plates": 1.0, "rails": 2.5} and why["shapes_differ"]
    _, alike = auto_size(paths[:5] + paths[:5], categories=cats)  # both categories square
    assert alike["per_category"] == {"plates": 1.0, "rails": 1.0} and not alike["shapes_differ"]
    assert "per_category" not in auto_size(paths[5:], categories=cats[5:])[1]  # one category: nothing to compare
    out = tmp_path / "run"
    args = ["train", "--model", "crad", "--data", tmp_path, "--category", "plates", "--category", "rails", "--out",
            out, "--epochs", 1, "--batch-size", 4, "--no-validate"]
    r = CliRunner().invoke(app, normalize_argv([str(a) for a in args]))
    said = " ".join(r.output.split())  # the console wraps
    assert r.exit_code == 0, r.output
    assert "differ in shape" in said and "plates 1.00, rails 2.50" in said and "separate runs" in said
    assert json.loads((out / "run.json").read_text())["data"]["image_size"]["shapes_differ"] is True
