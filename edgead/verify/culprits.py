"""When an INT8 check fails: which quantized layers add the most error (per-layer outputs, few images)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgead.bundle import Bundle

LOW_SQNR_DB = 20.0  # a layer output below this is far from its FP32 twin


def find_culprits(bundle: Bundle, key: str, images: np.ndarray, files: list[str], top: int = 5) -> dict:
    """Compare every quantized activation, INT8 graph vs FP32 graph, on ``images``.

    The FP32 side is the bundle's FP32 graph through the same pre-quantization pass the INT8 build
    used, so tensor names match. Ranked by the SQNR a step adds (``sensitivity.layer_sqnr``): the
    activation whose Q/DQ (or whose producer's weights) hurts most ranks first.
    """
    from edgead.precision.int8 import prepare
    from edgead.precision.sensitivity import layer_sqnr

    batch = bundle.input_shape[0]
    n = max(batch, len(images) // batch * batch)
    with tempfile.TemporaryDirectory(prefix="edgead-culprits-") as tmp:
        pre = Path(tmp) / "fp32.prepared.onnx"
        prepare(bundle.onnx("fp32"), pre)
        rows = layer_sqnr(pre, bundle.onnx(key), images[:n], bundle.input_name, batch, Path(tmp))
    ranked = sorted(rows, key=lambda r: -r["added_db"])
    first_low = next((r for r in rows if r["sqnr_out_db"] < LOW_SQNR_DB), None)
    return {"method": ("SQNR of each quantized activation, INT8 vs FP32 graph (ORT CPU); "
                       "added = lowest input SQNR of its producer - its own SQNR"),
            "images": files[:n], "n_layers": len(rows), "top": ranked[:top],
            "first_layer_below_db": {"limit_db": LOW_SQNR_DB, "layer": first_low},
            "final_layer": rows[-1] if rows else None}
