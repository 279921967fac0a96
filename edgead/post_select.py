"""Post-processing chosen on the validation split, never on test images (issue 15, step 1).

A model that declares ``post_choices`` (CRAD, CCAD: the box kernel that smooths the map and the window
whose mean makes the image score; CRR: its Gaussian's width and the top share of pixels the score averages)
gets them chosen after training: the maps before post-processing are computed once on the run's validation
set (held-out normals + synthetic anomalies), every combination is applied to them, and the one with the
best ``val_score`` is the candidate. 64 validation images rank 25-30 settings with noise, so the candidate
replaces the model's default only when a paired bootstrap over the validation images (normals and anomalies
resampled apart, per category) finds it better in at least ``CONFIDENCE`` of the resamples; a tie keeps the
default too. MVTec-sized defaults (box 21, pool 32) dilute defects of a few pixels, which is why this exists.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator

import numpy as np
import torch

from edgead.metrics import Ranked
from edgead.validation import CRITERION, ValidationSet

BOOTSTRAP = 200  # resamples of the validation images
CONFIDENCE = 0.95  # share of resamples in which the candidate must beat the default
BOOTSTRAP_SEED = 0
PIXEL_STRIDE = 2  # pixel AUROC in the bootstrap on every 2nd row and column (a quarter of the pixels)


@contextlib.contextmanager
def capture_raw(model) -> Iterator[list[torch.Tensor]]:
    """While open, every batch's map before ``model.post`` (captured at its input) is appended to the list."""
    got: list[torch.Tensor] = []
    hook = model.post.register_forward_pre_hook(lambda _m, args: got.append(args[0].detach().clone()))
    try:
        yield got
    finally:
        hook.remove()


@torch.no_grad()
def raw_maps(model, val: ValidationSet, pre, batch: int = 16) -> torch.Tensor:
    """The map each validation image gives before ``model.post``."""
    with capture_raw(model) as got:
        for _ in val.outputs(model, pre, batch):
            pass
    return torch.cat(got).cpu()


@torch.no_grad()
def choose(model, val: ValidationSet, pre, choices: dict[str, tuple] | None = None) -> dict:
    """Every combination of ``choices`` (attribute -> candidates) scored on ``val``; returns the choice and the
    grid. Does not change ``model``."""
    choices = choices or model.post_choices
    raw = raw_maps(model, val, pre)
    default = {k: getattr(model.post, k) for k in choices}
    cache: dict = {}
    rows = []
    for values in itertools.product(*choices.values()):
        setting = dict(zip(choices, values, strict=True))
        rows.append({**setting, **val.metrics(*_outputs(model, raw, setting), cache)})
    best = max(rows, key=lambda r: (r["val_score"], all(r[k] == default[k] for k in choices)))
    at_default = next(r for r in rows if all(r[k] == default[k] for k in choices))
    candidate = {k: best[k] for k in choices}
    test = None
    if candidate != default:
        test = paired_bootstrap(val, _outputs(model, raw, candidate), _outputs(model, raw, default))
    kept = candidate if test is not None and test["p_better"] >= CONFIDENCE else default
    row = best if kept == candidate else at_default
    return {"criterion": CRITERION, "default": default, "candidate": candidate, "chosen": kept,
            "val_score_default": at_default["val_score"], "val_score_candidate": best["val_score"],
            "val_score_chosen": row["val_score"],
            "rule": f"the best setting replaces the default only when it beats it in >= {CONFIDENCE:.0%} of "
                    f"{BOOTSTRAP} paired bootstrap resamples of the validation images",
            "bootstrap": test, "grid": rows}


def _outputs(model, raw: torch.Tensor, setting: dict) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, H, W), scores (N,)) of the raw maps under the post-processing ``setting``."""
    post = copy.deepcopy(model.post)
    for k, v in setting.items():
        setattr(post, k, v)
    parts = [post(raw[i:i + 16]) for i in range(0, len(raw), 16)]
    return torch.cat([p[0] for p in parts])[:, 0].numpy(), torch.cat([p[1] for p in parts]).numpy()


class _WeightedAUROC:
    """AUROC of fixed values and labels under per-owner weights (an owner's weight: how often the bootstrap drew
    it); the sort is done once (``metrics.Ranked``)."""

    def __init__(self, values: np.ndarray, labels: np.ndarray, owner: np.ndarray):
        self.ranked = Ranked(values.ravel())
        self.pos = labels.ravel().astype(bool)
        self.owner = owner.ravel()

    def __call__(self, weights: np.ndarray) -> float:
        w = weights[self.owner]
        fp, tp = self.ranked.cum_curve(np.where(self.pos, w, 0.0), np.where(self.pos, 0.0, w))
        return float(np.trapezoid(tp / tp[-1], fp / fp[-1]))


def paired_bootstrap(val: ValidationSet, a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                     n: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict:
    """``val_score`` of outputs ``a`` minus that of ``b`` over ``n`` resamples of the validation images (the same
    images for both; normals and anomalies drawn apart within each category, so each resample has both)."""
    rng = np.random.default_rng(seed)
    cats = np.unique(val.categories)
    curves = []
    for maps, scores in (a, b):
        per_cat = []
        for c in cats:
            idx = np.flatnonzero(val.categories == c)
            m = maps[idx][:, ::PIXEL_STRIDE, ::PIXEL_STRIDE]
            gt = val.masks[idx][:, ::PIXEL_STRIDE, ::PIXEL_STRIDE] > 0
            owner = np.broadcast_to(np.arange(len(idx))[:, None, None], m.shape)
            per_cat.append((_WeightedAUROC(scores[idx], val.labels[idx], np.arange(len(idx))),
                            _WeightedAUROC(m, gt, owner)))
        curves.append(per_cat)
    gains = np.empty(n)
    for i in range(n):
        total = 0.0
        for j, c in enumerate(cats):
            labels = val.labels[val.categories == c]
            w = np.zeros(len(labels))
            for group in (np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)):
                np.add.at(w, rng.choice(group, len(group)), 1.0)
            (ia, pa), (ib, pb) = curves[0][j], curves[1][j]
            total += (ia(w) + pa(w) - ib(w) - pb(w)) / 2
        gains[i] = total / len(cats)
    return {"resamples": n, "seed": seed, "p_better": round(float(np.mean(gains > 0)), 4),
            "gain_mean": round(float(gains.mean()), 5), "gain_q05": round(float(np.quantile(gains, 0.05)), 5),
            "gain_q95": round(float(np.quantile(gains, 0.95)), 5)}


def apply(model, info: dict, chosen: dict) -> None:
    """Use ``chosen`` from now on: in the model, its config and the run's config (export builds from it)."""
    for k, v in chosen.items():
        setattr(model.post, k, v)
        setattr(model.cfg, k, v)
        info["model_config"][k] = v
