"""How a run's INT8 score error depends on its post-processing (box kernel, score window).

For every post setting the run's model declares: the score error of a plain all-INT8 PTQ graph against the
FP32 graph (the map before post-processing taken from both graphs once, each setting applied to both) on the
bundle's build split (held-out normals, relit, synthetic anomalies; no test image), in threshold units
(q0.99 - median of the split normals' FP32 scores under that setting): RMS and max over the images, and the
RMS split into the mean offset (INT8 scores sit above or below FP32's) and the spread around it; beside it the
validation score `--post auto` recorded for the setting. Nothing is chosen here.

    .venv/bin/python scripts/post_int8.py RUN BUNDLE --recipe cpu --json post_int8.json
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from edgead import post_select
from edgead.bundle import Bundle
from edgead.fileio import atomic_write_json
from edgead.precision.probe import inner_values
from edgead.precision.quantizer import Quantizer
from edgead.precision.split import build_split
from edgead.runs import load_model

RAW = "/post/Resize"  # the exported node that upsamples the raw map; its input is the map before post-processing


def raw_maps(graph: Path, x: np.ndarray, input_name: str, batch: int) -> torch.Tensor:
    """The map before post-processing for each input row, from an ONNX graph."""
    g = onnx.load(str(graph))
    name = next(n.input[0] for n in g.graph.node if n.name == RAW)
    return torch.from_numpy(np.concatenate([v[name] for v in inner_values(g, [name], x, input_name, batch)]))


def error_units(split, ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    """``got - ref`` per image in its category's threshold units (q0.99 - median of the split normals' ``ref``)."""
    err = np.empty(len(ref))
    for c in np.unique(split.categories):
        m = split.categories == c
        normal = ref[m & (split.labels == 0)]
        err[m] = (got[m] - ref[m]) / max(float(np.quantile(normal, 0.99) - np.median(normal)), 1e-12)
    return err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--recipe", default="cpu", choices=("cpu", "tensorrt"))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    model, info = load_model(a.run)
    b = Bundle.load(a.bundle)
    quantize = Quantizer.default(b, a.recipe)
    split = build_split(b)
    x, batch = split.inputs(b), b.input_shape[0]
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(tmp) / "int8.onnx"
        quantize(graph, Path(tmp) / "work")
        ref, q = (raw_maps(g, x, b.input_name, batch) for g in (b.onnx("fp32"), graph))
    val = {tuple(r[k] for k in model.post_choices): r["val_score"]
           for r in info.get("post_selection", {}).get("grid", [])}
    rows = []
    for values in itertools.product(*model.post_choices.values()):
        setting = dict(zip(model.post_choices, values, strict=True))
        err = error_units(split, post_select._outputs(model, ref, setting)[1],
                          post_select._outputs(model, q, setting)[1])
        rows.append({**setting, "val_score": val.get(values), "rms": round(float(np.sqrt(np.mean(err ** 2))), 4),
                     "max": round(float(np.abs(err).max()), 4), "offset": round(float(err.mean()), 4),
                     "spread": round(float(err.std()), 4)})
    print(f"{a.run}: all-INT8 PTQ ({a.recipe} recipe, {quantize.settings.method}), build split of {len(split)} images, "
          f"score error in threshold units")
    for r in sorted(rows, key=lambda r: r["rms"]):
        print(", ".join(f"{k} {r[k]}" for k in model.post_choices), f"val {r['val_score']}",
              *(f"{k} {r[k]:.3f}" for k in ("rms", "max", "offset", "spread")))
    if a.json:
        atomic_write_json(a.json, {"run": str(a.run), "bundle": str(a.bundle), "recipe": a.recipe,
                                   "split_images": len(split), "rows": rows})


if __name__ == "__main__":
    main()
