"""Export a trained run to a bundle: the whole inference path as one static-shape ONNX graph.

Backbone, model head and the paper's post-processing (upsampling, smoothing, image score) are all
inside the graph, so every backend returns the same two outputs, ``anomaly_map`` and ``score``.
The TorchScript exporter at opset 17 is used: it stays at the asked opset (the dynamo exporter
may silently leave a graph at 18) and opset 17 parses on TensorRT 8.5 to 10.x.

Before anything is written, the graph is run in ONNX Runtime on real images (the run's held-out
normals and labelled defects) and compared with PyTorch; a relative error above the tolerance
is an error, and nothing is left behind.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgead.bundle import FORMAT_VERSION, META, Bundle, onnx_name, write_meta
from edgead.data import mvtec
from edgead.data.preprocess import Preprocess
from edgead.errors import EdgeadError
from edgead.fileio import scratch_dir, sha256_file
from edgead.precision.readiness import report as readiness
from edgead.runs import WEIGHTS, load_model, versions

OPSET = 17
OUTPUTS = ["anomaly_map", "score"]
INPUT = "image"


@dataclass
class ExportRequest:
    run: Path
    out: Path
    batch: int = 1
    opset: int = OPSET
    data: Path | None = None
    parity_images: int = 8
    tolerance: float = 1e-3
    force: bool = False


def parity_samples(info: dict, data: Path | None, n: int) -> list[mvtec.Sample]:
    """Real images for checks: held-out normals and labelled defects of every category."""
    root = Path(data or info["data"]["root"])
    cats = info["data"]["categories"]
    per_cat = max(1, n // (2 * len(cats)))
    out: list[mvtec.Sample] = []
    try:
        test = mvtec.discover(root, cats, "test")
    except EdgeadError as e:
        raise EdgeadError(f"{e}; pass --data ROOT with the run's categories for the parity check") from None
    for cat in cats:
        held = [s for s in mvtec.holdout_samples(info["data"].get("holdout_files", []), cat) if s.path.is_file()]
        normals = held or [s for s in test if s.category == cat and not s.label]
        defects = [s for s in test if s.category == cat and s.label]
        out += normals[:per_cat] + defects[:: max(1, len(defects) // per_cat)][:per_cat]
    return out


def rel_error(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |a - ref|, that divided by max |ref|)."""
    err = float(np.abs(a.astype(np.float64) - ref).max())
    return err, err / max(float(np.abs(ref).max()), 1e-12)


def export_onnx(model: torch.nn.Module, path: Path, shape: tuple[int, ...], opset: int = OPSET) -> None:
    x = torch.zeros(*shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), opset_version=opset, dynamo=False, input_names=[INPUT],
                          output_names=OUTPUTS, do_constant_folding=True)


def export_bundle(req: ExportRequest) -> dict:
    from edgead.backends.onnxruntime import OrtBackend

    model, info = load_model(req.run)
    pre = Preprocess.from_dict(info["preprocess"])
    run_hash = sha256_file(Path(req.run) / WEIGHTS)
    out = Path(req.out)
    if (out / META).exists() and not req.force:
        old = Bundle.load(out).meta
        if old["source"]["weights_sha256"] == run_hash and old["input"]["shape"][0] == req.batch:
            return old
        raise EdgeadError(f"{out}: holds a bundle of another run or batch; choose another --out or pass --force")

    shape = (req.batch, 3, pre.height, pre.width)
    samples = parity_samples(info, req.data, req.parity_images)
    images = mvtec.load_images(samples, pre)
    out.mkdir(parents=True, exist_ok=True)
    with scratch_dir(out, ".export-") as tmp:
        tmp_onnx = Path(tmp) / onnx_name("fp32")
        export_onnx(model, tmp_onnx, shape, req.opset)
        ort = OrtBackend(tmp_onnx)
        worst = {"anomaly_map": (0.0, 0.0), "score": (0.0, 0.0)}
        n_full = len(images) // req.batch * req.batch
        if n_full == 0:
            raise EdgeadError(f"{req.run}: {len(images)} parity images < batch {req.batch}; raise --parity-images")
        for i in range(0, n_full, req.batch):
            batch = images[i:i + req.batch]
            got = ort.infer(batch)
            with torch.no_grad():
                ref_m, ref_s = model(torch.from_numpy(batch))
            for k, ref in (("anomaly_map", ref_m.numpy()), ("score", ref_s.numpy())):
                e = rel_error(got[k], ref)
                worst[k] = max(worst[k], e, key=lambda t: t[1])
        bad = {k: v for k, v in worst.items() if v[1] > req.tolerance}
        if bad:
            k, (a, r) = next(iter(bad.items()))
            raise EdgeadError(f"{req.run}: ONNX {k} differs from PyTorch by {r:.2e} (relative, max abs {a:.3g}) "
                              f"> {req.tolerance:g} on real images; nothing was written")
        final = out / onnx_name("fp32")
        shutil.move(tmp_onnx, final)
    meta = {
        "format_version": FORMAT_VERSION,
        "model": info["model"], "model_config": info["model_config"],
        "preprocess": pre.to_dict(),
        "input": {"name": INPUT, "shape": list(shape), "layout": "NCHW", "dtype": "float32"},
        "outputs": [{"name": "anomaly_map", "shape": [req.batch, 1, pre.height, pre.width], "dtype": "float32"},
                    {"name": "score", "shape": [req.batch], "dtype": "float32"}],
        "normalization": info["normalization"],
        "categories": info["data"]["categories"],
        "precision_scopes": model.precision_scope_map(),
        "data": {"root": str(Path(req.data or info["data"]["root"]).resolve()),
                 "holdout_files": info["data"].get("holdout_files", [])},
        "source": {"run": str(Path(req.run).resolve()), "weights_sha256": run_hash},
        "export": {"opset": req.opset, "exporter": "torch.onnx (TorchScript)",
                   "parity": {"n_images": n_full,
                              "images": [str(s.path) for s in samples],
                              **{f"{k}_max_abs": v[0] for k, v in worst.items()},
                              **{f"{k}_max_rel": v[1] for k, v in worst.items()},
                              "tolerance_rel": req.tolerance}},
        "files": {"fp32": {"path": onnx_name("fp32"), "sha256": sha256_file(final),
                           "tensorrt_readiness": readiness(final)}},
        "versions": versions(),
    }
    return write_meta(out, meta)
