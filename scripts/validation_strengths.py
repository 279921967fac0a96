"""Validation image and pixel AUROC of trained runs on their validation set with the synthetic anomalies at full
strength and graded (``edgead.validation``), at the post-processing each run uses. Validation images only.

    .venv/bin/python scripts/validation_strengths.py RUN [RUN ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgead.data.heldout import STRENGTHS
from edgead.data.preprocess import Preprocess
from edgead.runs import load_model
from edgead.validation import ValidationSet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    for run in ap.parse_args().runs:
        model, info = load_model(run)
        pre = Preprocess.from_dict(info["preprocess"])
        row = {"run": str(run), "model": info["model"], "categories": info["data"]["categories"]}
        for strengths in STRENGTHS:
            r = ValidationSet.of_run(info, pre, strengths).evaluate(model, pre)
            row[strengths] = {"image_auroc": r["val_image_auroc"], "pixel_auroc": r["val_pixel_auroc"]}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
