"""Validation during training: held-out normals + synthetic anomalies, never a test image; --select best
keeps the epoch the validation ranked first."""

from __future__ import annotations

import json

import numpy as np
import torch
from test_cli import edgead

from edgead import post_select
from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.runs import load_model, read_run
from edgead.validation import ValidationSet


def test_every_epoch_is_validated_and_the_last_is_kept_by_default(trained_run):
    info = read_run(trained_run)
    for row in info["curve"]:
        assert 0.0 <= row["val_image_auroc"] <= 1.0 and 0.0 <= row["val_pixel_auroc"] <= 1.0
        assert row["val_score"] == round((row["val_image_auroc"] + row["val_pixel_auroc"]) / 2, 5)
    sel = info["selection"]
    assert sel["select"] == "last" and sel["kept_epoch"] == len(info["curve"])
    assert sel["best_val_score"] == max(r["val_score"] for r in info["curve"])
    assert not (trained_run / "best.safetensors").exists()


def test_validation_set_never_holds_a_test_image(trained_run, tiny_real):
    info = read_run(trained_run)
    pre = Preprocess.from_dict(info["preprocess"])
    val = ValidationSet.from_holdout(info["data"]["holdout_files"], info["data"]["categories"], pre)
    assert val is not None and set(val.labels.tolist()) == {0, 1}
    tests = mvtec.load_images(mvtec.discover(tiny_real, info["data"]["categories"], "test"), pre)
    test_pixels = {np.asarray([pre.denormalize(t)]).tobytes() for t in tests}
    assert not any(np.asarray([im]).tobytes() in test_pixels for im in val.images)
    held = {p.rsplit("/", 1)[-1] for p in info["data"]["holdout_files"]}
    assert all(f.rsplit("/", 1)[-1] in held for f in val.files)
    assert val.masks[val.labels == 1].any() and not val.masks[val.labels == 0].any()


def test_validation_anomalies_are_faded_to_graded_strengths(trained_run):
    """A new run validates on synthetic anomalies faded to strengths spread evenly over (0, 1] (full strength
    saturates image AUROC): the run records it, each anomaly is its full-strength twin faded by its strength
    (same mask, same normal), the strengths per category are 1/n, ..., 1; the full set stays available."""
    from edgead.data.heldout import fade

    info = read_run(trained_run)
    assert info["validation"]["strengths"] == "graded"
    pre = Preprocess.from_dict(info["preprocess"])
    val = ValidationSet.of_run(info, pre)
    full = ValidationSet.from_holdout(info["data"]["holdout_files"], info["data"]["categories"], pre,
                                      strengths="full")
    good, bad = val.labels == 0, val.labels == 1
    assert np.array_equal(val.images[good], full.images[good]) and np.array_equal(val.masks, full.masks)
    assert np.array_equal(val.files, full.files) and (val.strengths[good] == 0).all()
    assert (full.strengths[bad] == 1).all() and not np.array_equal(val.images[bad], full.images[bad])
    for c in np.unique(val.categories):
        t = val.strengths[bad & (val.categories == c)]
        assert np.allclose(np.sort(t), np.arange(1, len(t) + 1) / len(t))
    normals = val.images[good]  # per category the anomalies follow their normals in the same order
    assert np.array_equal(val.images[bad], fade(normals, full.images[bad], val.strengths[bad]))
    model, _ = load_model(trained_run)  # the post-processing was chosen on this set
    assert val.evaluate(model, pre)["val_score"] == info["post_selection"]["val_score_chosen"]


def test_a_run_keeps_the_validation_set_it_was_scored_on():
    """Runs that validated before the record existed were scored at full strength and keep it (resume, --select
    best, post choice); a run's record wins; a new run, or one with no scored epoch yet, gets graded."""
    from edgead.validation import DEFAULT_STRENGTHS, strengths_of

    assert DEFAULT_STRENGTHS == "graded" and strengths_of(None) == strengths_of({}) == "graded"
    assert strengths_of({"curve": [{"epoch": 1, "loss": 1.0}]}) == "graded"
    assert strengths_of({"curve": [{"epoch": 1, "loss": 1.0, "val_score": 0.9}]}) == "full"
    assert strengths_of({"curve": [{"val_score": 0.9}], "validation": {"strengths": "graded"}}) == "graded"


def test_select_best_keeps_the_epoch_validation_ranked_first(tiny_real, tmp_path):
    out = tmp_path / "run"
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--category", "magnetic_tile", "--out", out,
               "--epochs", 4, "--image-size", 64, "--batch-size", 8, "--select", "best",
               "--post", "fixed")  # the epochs were scored with the configured post-processing
    assert r.exit_code == 0, r.output
    info = read_run(out)
    scores = [row["val_score"] for row in info["curve"]]
    best = int(np.argmax(scores)) + 1  # the first of equals
    assert info["selection"]["kept_epoch"] == info["selection"]["best_epoch"] == best
    assert "best epoch" in r.output and not (out / "best.safetensors").exists()
    model, run = load_model(out)  # the weights written are that epoch's: validation scores them the same
    pre = Preprocess.from_dict(run["preprocess"])
    val = ValidationSet.from_holdout(run["data"]["holdout_files"], run["data"]["categories"], pre)
    assert val.evaluate(model, pre)["val_score"] == scores[best - 1]
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--out", tmp_path / "few", "--shots", 4,
               "--select", "best")
    assert r.exit_code == 2 and "--select best" in r.output and "Traceback" not in r.output
    assert json.loads((out / "run.json").read_text())["status"] == "trained"


def test_post_processing_chosen_on_validation_is_used_by_the_run(tiny_real, tmp_path):
    """--post auto (CRAD, the default): every box/pool combination scored on the validation set, the best kept in
    the run's config (export and eval build from it) when the bootstrap says it beats the configured one, the
    thresholds set with it; --post fixed keeps the configured one."""
    run = tmp_path / "auto"  # --post auto is the default
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--category", "magnetic_tile", "--out", run,
               "--epochs", 2, "--image-size", 64, "--batch-size", 8, "--holdout", 0.3)
    assert r.exit_code == 0, r.output
    info = read_run(run)
    ps = info["post_selection"]
    assert len(ps["grid"]) == 6 * 5 and ps["default"] == {"box_kernel": 21, "score_pool": 32}
    best = max(r["val_score"] for r in ps["grid"])
    assert ps["val_score_candidate"] == best >= ps["val_score_default"]
    row = next(r for r in ps["grid"] if {k: r[k] for k in ps["chosen"]} == ps["chosen"])
    adopted = ps["bootstrap"] is not None and ps["bootstrap"]["p_better"] >= post_select.CONFIDENCE
    assert ps["chosen"] == (ps["candidate"] if adopted else ps["default"])
    assert row["val_score"] == ps["val_score_chosen"] and "post-processing (validation)" in r.output
    model, cfg = load_model(run)
    assert {k: getattr(model.post, k) for k in ps["chosen"]} == ps["chosen"] == {k: cfg["model_config"][k]
                                                                              for k in ps["chosen"]}
    pre = Preprocess.from_dict(cfg["preprocess"])  # the chosen setting scores the validation set as recorded
    val = ValidationSet.from_holdout(cfg["data"]["holdout_files"], cfg["data"]["categories"], pre)
    assert val.evaluate(model, pre)["val_score"] == ps["val_score_chosen"]
    held = mvtec.load_images([s for s in mvtec.discover(tiny_real, ["magnetic_tile"], "train")
                              if str(s.path.resolve()) in cfg["data"]["holdout_files"]], pre)
    with torch.no_grad():  # the thresholds were set with the chosen post-processing
        scores = model(torch.from_numpy(held))[1].numpy()
    assert abs(float(np.median(scores)) - cfg["normalization"]["magnetic_tile"]["center"]) < 1e-4

    out = tmp_path / "fixed"  # --post fixed keeps the configured post-processing and records no choice
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--category", "magnetic_tile", "--out", out,
               "--epochs", 1, "--image-size", 64, "--batch-size", 8, "--post", "fixed")
    assert r.exit_code == 0, r.output
    fixed = read_run(out)
    assert "post_selection" not in fixed and fixed["model_config"]["box_kernel"] == 21
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--category", "magnetic_tile", "--out", out,
               "--epochs", 1, "--image-size", 64, "--batch-size", 8)  # the same run: the choice is not its identity
    said = " ".join(r.output.split())
    assert r.exit_code == 0 and "already trained" in said and "--force retrains" in said, r.output
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--out", out, "--post", "sometimes")
    assert r.exit_code == 2 and "--post 'sometimes'" in r.output


def test_post_choice_needs_a_gain_beyond_validation_noise():
    """The bootstrap's weighted AUROC is the AUROC of the resampled images; a setting that differs from the default
    only by noise is not adopted, a clearly better one is."""
    from edgead.metrics import auroc

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(32), np.ones(32)].astype(int)
    masks = np.zeros((64, 16, 16), np.uint8)
    masks[32:, 4:10, 4:10] = 255
    val = ValidationSet(np.zeros((64, 16, 16, 3), np.uint8), masks, labels, np.array(["c"] * 64),
                        np.array([f"{i}.png" for i in range(64)]))
    noise_s, noise_m = rng.normal(size=64), rng.normal(size=(64, 16, 16))
    default = (masks / 255 + noise_m, labels + noise_s)
    w = rng.integers(0, 3, 64).astype(float)
    reps = np.repeat(np.arange(64), w.astype(int))
    curve = post_select._WeightedAUROC(default[1], labels, np.arange(64))
    assert abs(curve(np.ones(64)) - auroc(default[1], labels)) < 1e-12
    assert abs(curve(w) - auroc(default[1][reps], labels[reps])) < 1e-12

    jitter = (default[0] + 0.05 * rng.normal(size=(64, 16, 16)), default[1] + 0.05 * rng.normal(size=64))
    same = post_select.paired_bootstrap(val, jitter, default)
    better = post_select.paired_bootstrap(val, (2 * masks / 255 + noise_m, 2 * labels + noise_s), default)
    assert same["p_better"] < post_select.CONFIDENCE <= better["p_better"]
    assert better["gain_q05"] > 0 and same["gain_q05"] < 0 < same["gain_q95"]


def test_cached_validation_features_give_the_numbers_images_give(trained_run):
    """Training scores validation on backbone features computed once (the backbone is frozen); the maps and
    scores, and so every number, must be the ones the full model gives on the images."""
    model, run = load_model(trained_run)
    pre = Preprocess.from_dict(run["preprocess"])
    val = ValidationSet.from_holdout(run["data"]["holdout_files"], run["data"]["categories"], pre)
    cached = val.with_features(model, pre)
    assert cached.features is not None and len(cached.features) == len(val) and val.features is None
    assert not model.training  # with_features leaves the model's mode as it found it
    a, b = list(val.outputs(model, pre)), list(cached.outputs(model, pre))
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert cached.evaluate(model, pre) == val.evaluate(model, pre)
    assert torch.equal(post_select.raw_maps(model, cached, pre), post_select.raw_maps(model, val, pre))
    assert "val_seconds" in read_run(trained_run)["curve"][0]


def test_stalled_counts_epochs_since_the_best_validation_score():
    from edgead.train import stalled

    scores = (0.5, 0.7, 0.6, 0.7, 0.65)  # best at epoch 2 (the first of equals)
    rows = [{"epoch": i + 1, "val_score": v} for i, v in enumerate(scores)]
    assert not stalled(rows[:2], 2) and not stalled(rows[:3], 2) and stalled(rows[:4], 2)  # an equal is not better
    assert stalled(rows, 3) and not stalled(rows, 4)
    assert not stalled([{"loss": 1.0}] * 9, 1)  # no validation, no early stop


def test_early_stop_ends_training_when_validation_stops_improving(tiny_real, tmp_path):
    """--select best --patience N: the run stops after N epochs without a better validation score (rank 0's curve
    decides), keeps the best epoch, and says so; never earlier than that."""
    from edgead.train import stalled

    out = tmp_path / "run"
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--category", "magnetic_tile", "--out", out,
               "--epochs", 8, "--image-size", 64, "--batch-size", 8, "--select", "best", "--patience", 1,
               "--post", "fixed")
    assert r.exit_code == 0, r.output
    info = read_run(out)
    curve = info["curve"]
    assert not any(stalled(curve[:k], 1) for k in range(1, len(curve)))  # it ran while validation improved
    if len(curve) < 8:
        assert stalled(curve, 1) and info["early_stop"] == {"after_epoch": len(curve), "patience": 1,
                                                          "best_epoch": info["selection"]["best_epoch"]}
        assert "early stop" in r.output
    else:
        assert "early_stop" not in info
    assert info["selection"]["kept_epoch"] == info["selection"]["best_epoch"]
    assert info["fingerprint"]["patience"] == 1 and info["fingerprint"]["select"] == "best"
    r = edgead("train", "--model", "crad", "--data", tiny_real, "--out", tmp_path / "p", "--patience", 2)
    assert r.exit_code == 2 and "add --select best" in r.output and "Traceback" not in r.output


def test_a_larger_validation_set_keeps_the_standard_one_as_its_first_part(trained_run):
    """--val-twins K: K graded synthetic anomalies per held-out normal; each category's standard set (one twin) is
    the first part of its larger set, so runs validated before score on what they were scored on."""
    info = read_run(trained_run)
    assert info["validation"]["twins"] == 1
    pre = Preprocess.from_dict(info["preprocess"])
    std = ValidationSet.of_run(info, pre)
    big = ValidationSet.of_run({**info, "validation": {**info["validation"], "twins": 3}}, pre)
    for c in np.unique(std.categories):
        s, b = std.categories == c, big.categories == c
        n = int((std.labels[s] == 0).sum())
        assert b.sum() == 4 * n and (big.labels[b] == 1).sum() == 3 * n
        for field_ in ("images", "masks", "labels", "strengths", "files"):
            assert np.array_equal(getattr(std, field_)[s], getattr(big, field_)[b][:2 * n]), field_
        twins = big.images[b][n:].reshape(3, n, *big.images.shape[1:])
        assert not np.array_equal(twins[0], twins[1]) and not np.array_equal(twins[1], twins[2])
        assert big.masks[b][n:].reshape(3, n, -1).any(axis=2).all()  # every twin has its defect
        for k in range(3):  # each twin group's strengths are 1/n, ..., 1
            t = np.sort(big.strengths[b][n + k * n:n + (k + 1) * n])
            assert np.allclose(t, np.arange(1, n + 1) / n)


def test_validation_size_is_recorded_and_part_of_the_run(tiny_real, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--model", "crad", "--data", tiny_real, "--category", "magnetic_tile", "--out", out,
            "--epochs", 1, "--image-size", 64, "--batch-size", 8, "--val-normals", 2]
    r = edgead(*base, "--val-twins", 2)
    assert r.exit_code == 0, r.output
    info = read_run(out)
    assert info["validation"]["per_category"] == 2 and info["validation"]["twins"] == 2
    assert len(ValidationSet.of_run(info)) == 3 * min(2, info["data"]["n_holdout"])
    r = edgead(*base, "--val-twins", 3)  # another validation set is another run: not resumed into this one
    assert r.exit_code == 2 and "holds a different run" in r.output, r.output
