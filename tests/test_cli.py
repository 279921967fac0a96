"""The real commands on a tiny real subset (train, eval, resume, bad input)."""

import json

from PIL import Image
from typer.testing import CliRunner

from edgead.cli import app, normalize_argv
from edgead.models.crad import CRAD

runner = CliRunner()


def edgead(*args: str):
    return runner.invoke(app, normalize_argv([str(a) for a in args]))


def test_train_without_model_lists_models():
    r = edgead("train")
    assert r.exit_code == 0 and "crad" in r.output


def test_image_size_two_values_become_one_token():
    assert normalize_argv(["train", "--image-size", "128", "160", "--epochs", "2"]) == \
        ["train", "--image-size", "128x160", "--epochs", "2"]


def test_train_writes_a_complete_run(trained_run, tiny_real):
    info = json.loads((trained_run / "run.json").read_text())
    assert info["status"] == "trained" and info["model"] == "crad"
    assert (info["preprocess"]["height"], info["preprocess"]["width"]) == (128, 160)
    assert info["preprocess"]["mean"] == [0.5, 0.5, 0.5]
    cats = sorted(p.name for p in tiny_real.iterdir())
    assert sorted(info["normalization"]) == cats == info["data"]["categories"]
    for n in info["normalization"].values():
        assert n["threshold"] >= n["center"] and n["n_images"] >= 1
    assert len(info["curve"]) == 2 and (trained_run / "weights.safetensors").is_file()
    assert not (trained_run / "checkpoint.pt").exists()
    assert info["profile"]["gmacs_total"] > info["profile"]["gmacs_backbone"] > 0
    assert json.loads((trained_run.parent / "train.json").read_text())["status"] == "trained"


def test_rerun_is_idempotent_and_other_settings_are_refused(trained_run, tiny_real):
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--out", trained_run, "--epochs", 2,
               "--image-size", 128, 160, "--batch-size", 8)
    assert r.exit_code == 0 and "already trained" in r.output
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--out", trained_run, "--epochs", 3)
    assert r.exit_code == 2 and "holds a different run" in r.output and "Traceback" not in r.output


def test_eval_writes_metrics_and_overlays(trained_run, tiny_real, tmp_path):
    js = tmp_path / "eval.json"
    r = edgead("eval", trained_run, "--data", tiny_real, "--json", js, "--overlays", 2)
    assert r.exit_code == 0, r.output
    res = json.loads(js.read_text())
    for cat, m in res["per_category"].items():
        assert {"image_auroc", "pixel_auroc", "aupro", "f1_max", "threshold"} <= set(m), cat
        assert 0.0 <= m["image_auroc"] <= 1.0 and 0.0 <= m["aupro"] <= 1.0
        assert set(m["per_defect_image_auroc"]) == {p.name for p in (tiny_real / cat / "test").iterdir()} - {"good"}
    assert {"image_auroc", "pixel_auroc", "aupro"} <= set(res["mean"])
    assert res["overlays"] and all(Image.open(p).size[1] == 128 + 18 for p in res["overlays"])


def test_training_resumes_after_interrupt(tiny_real, tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = ["train", "--model", "crad", "--data", tiny_real, "--category", "magnetic_tile", "--out", out,
            "--epochs", 3, "--image-size", 64, "--batch-size", 8]
    real_start = CRAD.on_epoch_start

    def flaky(self, epoch):
        if epoch >= 2:  # third epoch
            raise KeyboardInterrupt
        return real_start(self, epoch)

    monkeypatch.setattr(CRAD, "on_epoch_start", flaky)
    r = edgead(*args)
    assert r.exit_code == 130 and "resume" in r.output
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "training" and [c["epoch"] for c in info["curve"]] == [1, 2]
    first_two = info["curve"]
    assert info["validation"]["strengths"] == "graded"
    del info["validation"]  # as a run interrupted before the record existed (scored at full strength) leaves it
    (out / "run.json").write_text(json.dumps(info))
    monkeypatch.setattr(CRAD, "on_epoch_start", real_start)
    r = edgead(*args)
    assert r.exit_code == 0, r.output
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "trained" and info["curve"][:2] == first_two and len(info["curve"]) == 3
    assert info["validation"]["strengths"] == "full"  # it kept the set its curve was scored on, to the end
    from edgead.data.preprocess import Preprocess
    from edgead.runs import load_model
    from edgead.validation import ValidationSet

    model, run = load_model(out)
    pre = Preprocess.from_dict(run["preprocess"])
    full = ValidationSet.of_run(run, pre, "full")
    assert full.evaluate(model, pre)["val_score"] == info["post_selection"]["val_score_chosen"]


def test_corrupt_image_is_one_line_error(tiny_copy, tmp_path):
    (tiny_copy / "magnetic_tile" / "train" / "good" / "broken.png").write_bytes(b"garbage")
    r = edgead("train", "--model", "crad", "--data", tiny_copy, "--out", tmp_path / "r", "--epochs", 1,
               "--image-size", 64)
    assert r.exit_code == 2
    assert "broken.png: cannot decode image" in r.output and "Traceback" not in r.output
    assert len([ln for ln in r.output.splitlines() if "error" in ln]) == 1


def test_bad_image_size_is_one_line_error(tiny_real, tmp_path):
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--out", tmp_path / "r", "--image-size", "100")
    assert r.exit_code == 2 and "multiples of 32" in r.output
