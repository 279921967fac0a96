"""Post-processing chosen on the validation split, never on test images (issue 15, step 1).

A model that declares ``post_choices`` (CRAD, CCAD: the box kernel that smooths the map and the window
whose mean makes the image score) gets them chosen after training: the maps before post-processing are
computed once on the run's validation set (held-out normals + synthetic anomalies), every combination
is applied to them, and the one with the best ``val_score`` is kept; a tie keeps the model's default.
MVTec-sized defaults (box 21, pool 32) dilute defects of a few pixels, which is why this exists.
"""

from __future__ import annotations

import copy
import itertools

import torch

from edgead.validation import CRITERION, ValidationSet


@torch.no_grad()
def raw_maps(model, val: ValidationSet, pre, batch: int = 16) -> torch.Tensor:
    """The map each validation image gives before ``model.post`` (captured at its input)."""
    got: list[torch.Tensor] = []
    hook = model.post.register_forward_pre_hook(lambda _m, args: got.append(args[0].detach().clone()))
    try:
        for x in val.inputs(pre, batch):
            model(torch.from_numpy(x))
    finally:
        hook.remove()
    return torch.cat(got)


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
        post = copy.deepcopy(model.post)
        for k, v in setting.items():
            setattr(post, k, v)
        parts = [post(raw[i:i + 16]) for i in range(0, len(raw), 16)]
        maps = torch.cat([p[0] for p in parts])[:, 0].numpy()
        scores = torch.cat([p[1] for p in parts]).numpy()
        rows.append({**setting, **val.metrics(maps, scores, cache)})
    best = max(rows, key=lambda r: (r["val_score"], all(r[k] == default[k] for k in choices)))
    at_default = next(r for r in rows if all(r[k] == default[k] for k in choices))
    return {"criterion": CRITERION, "default": default, "chosen": {k: best[k] for k in choices},
            "val_score_default": at_default["val_score"], "val_score_chosen": best["val_score"], "grid": rows}


def apply(model, info: dict, chosen: dict) -> None:
    """Use ``chosen`` from now on: in the model, its config and the run's config (export builds from it)."""
    for k, v in chosen.items():
        setattr(model.post, k, v)
        setattr(model.cfg, k, v)
        info["model_config"][k] = v
