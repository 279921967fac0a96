"""Post-processing chosen on a run's validation split, then its test split scored once for the configured
and the best setting on validation (the choice never sees a test image; this script only reports; the run
itself is not changed: a run trained with --post auto is scored from its configured setting again).

    .venv/bin/python scripts/post_choice.py RUN --data ROOT [--json out.json] [--strengths full|graded]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from edgead import post_select
from edgead.data import mvtec
from edgead.data.heldout import STRENGTHS
from edgead.data.preprocess import Preprocess
from edgead.metrics import category_metrics
from edgead.runs import load_model
from edgead.train import infer
from edgead.validation import ValidationSet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--strengths", choices=STRENGTHS,
                    help="the validation anomalies' strengths (default: the ones the run was validated with)")
    a = ap.parse_args()
    model, info = load_model(a.run)
    if not model.post_choices:
        raise SystemExit(f"{info['model']} declares no post-processing choices")
    for k, v in info.get("post_selection", {}).get("default", {}).items():  # a run trained with --post auto
        setattr(model.post, k, v)  # holds its choice: choose again from the configured setting
    pre = Preprocess.from_dict(info["preprocess"])
    cats = info["data"]["categories"]
    val = ValidationSet.of_run(info, pre, a.strengths)
    t0 = time.time()
    sel = post_select.choose(model, val, pre)
    print(f"validation: configured {sel['default']} {sel['val_score_default']:.4f}, best {sel['candidate']} "
          f"{sel['val_score_candidate']:.4f}, bootstrap {sel['bootstrap']}, kept {sel['chosen']} "
          f"({time.time() - t0:.0f} s)")
    test = {}
    for c in cats:
        cs = [s for s in mvtec.discover(a.data, cats, "test") if s.category == c]
        x, masks = mvtec.load_images(cs, pre), mvtec.load_masks(cs, pre) > 0
        labels = np.array([s.label for s in cs])
        with post_select.capture_raw(model) as got:  # the model runs once; each setting post-processes its maps
            infer(model, x)
        raw = torch.cat(got)
        for name, setting in (("configured", sel["default"]), ("best on validation", sel["candidate"])):
            maps, scores = post_select._outputs(model, raw, setting)
            m = category_metrics(scores, labels, maps, masks)
            test[f"{c}/{name}"] = {**setting, **{k: round(float(m[k]), 4) for k in ("image_auroc", "pixel_auroc",
                                                                                    "aupro")}}
            print(c, name, test[f"{c}/{name}"])
    if a.json:
        a.json.write_text(json.dumps({"run": str(a.run), "selection": sel, "test": test}, indent=1))


if __name__ == "__main__":
    main()
