"""INT8 with explicit Q/DQ: per-channel INT8 weights, activations calibrated on real normals.

Two recipes (``edgead/precision/recipes.yaml``): ``tensorrt`` (signed, symmetric, zero point 0, no
quantized bias: what a strongly typed TensorRT build accepts) and ``cpu`` (unsigned activations,
which ONNX Runtime fuses into QLinearConv on x86). Four calibration methods that really differ:
ranges are computed here with explicit histogram settings (``mse``: ``precision.ranges``) and handed
to ``quantize_static`` as a calibration cache (its own Entropy uses 128 bins and silently equals
MinMax). The graph input is never calibrated: it is put on the INT8 grid exactly.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx

from edgead.calibration import CalibSettings
from edgead.errors import EdgeadError
from edgead.precision.rules import in_scopes, scope, split_nodes

CHUNK = 16  # calibration images run before their tensors are folded into the histograms
EQUALIZED = "equalized.json"  # what precision.equalize did to the work graph


class ArrayReader:
    """An ORT ``CalibrationDataReader`` over a preprocessed array, in the graph's batch size."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int):
        self.x, self.name, self.batch, self.i = x, input_name, batch, 0

    def get_next(self) -> dict | None:
        if self.i + self.batch > len(self.x):
            return None
        out = {self.name: self.x[self.i:self.i + self.batch]}
        self.i += self.batch
        return out

    def __len__(self) -> int:
        return len(self.x) // self.batch

    def rewind(self) -> None:
        self.i = 0


def _method(settings: CalibSettings):
    from onnxruntime.quantization import CalibrationMethod

    if settings.method == "minmax":
        return CalibrationMethod.MinMax, {}
    if settings.method in ("entropy", "mse"):  # mse: value histograms as entropy collects them, own choice
        return CalibrationMethod.Entropy, {"num_bins": settings.num_bins,
                                           "num_quantized_bins": settings.num_quantized_bins}
    return CalibrationMethod.Percentile, {"num_bins": settings.num_bins, "percentile": settings.percentile}


def _safe_collector(cal):
    """ORT's histogram collector, made safe for nearly constant tensors (e.g. the softmax of a barely
    trained head, all ~0.5): numpy cannot cut a range narrower than float32 resolution into 2048
    bins and raises. Such a tensor gets one extra 0 sample, so its range spans [0, max|x|]."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    class SafeCollector(HistogramCollector):
        def collect(self, name_to_arr):
            fixed = {}
            for name, arr in name_to_arr.items():
                parts = arr if isinstance(arr, list) else [arr]
                a = np.concatenate([np.asarray(p).ravel() for p in parts]) if parts else np.zeros(0, np.float32)
                if a.size:
                    top = float(np.nanmax(np.abs(a)))
                    if 0 < top < 1e-30:
                        a = np.zeros_like(a)
                    elif top > 0 and float(np.nanmax(np.abs(a)) - np.nanmin(np.abs(a))) < 1e-4 * top:
                        a = np.append(a, np.zeros(1, a.dtype))
                fixed[name] = a
            return super().collect(fixed)

    return SafeCollector(method=cal.method, symmetric=cal.symmetric, num_bins=cal.num_bins,
                         num_quantized_bins=cal.num_quantized_bins, percentile=cal.percentile,
                         scenario=getattr(cal, "scenario", "same"))


def calibrate(model_path: Path, data: np.ndarray, input_name: str, batch: int, settings: CalibSettings,
              cache: Path, symmetric: bool = True, fixed: dict[str, tuple[float, float]] | None = None) -> None:
    """Compute activation ranges with the chosen method; write ORT's calibration cache (JSON).

    ``fixed``: ranges known without calibration (the graph input's, from preprocessing)."""
    from onnxruntime.quantization.calibrate import create_calibrator

    method, extra = _method(settings)
    with tempfile.TemporaryDirectory(prefix="edgead-calib-") as tmp:
        cal = create_calibrator(model_path, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=method, extra_options=extra)
        if hasattr(cal, "num_bins"):  # histogram methods: guard against nearly constant tensors
            cal.collector = _safe_collector(cal)
        chunk = max(batch, CHUNK // batch * batch)  # histograms grow per chunk: memory stays flat
        for i in range(0, len(data) // batch * batch, chunk):
            cal.collect_data(ArrayReader(data[i:i + chunk], input_name, batch))
        if settings.method == "mse":
            from edgead.precision.ranges import mse_ranges

            ranges = mse_ranges(cal.collector.histogram_dict, symmetric)
        else:
            computed = cal.compute_data()
            ranges = {t: _range(computed[t]) for t in computed}
    ranges.update({k: v for k, v in (fixed or {}).items() if k in ranges})
    write_ranges(cache, settings, ranges)


def write_ranges(cache: Path, settings: CalibSettings, ranges: dict[str, tuple[float, float]]) -> None:
    """ORT's calibration cache (JSON): tensor -> (low, high), tagged with the method ``quantize_static`` expects."""
    from onnxruntime.quantization.calibrate import TensorData, TensorsData, save_tensors_data

    f32 = np.float32
    save_tensors_data(TensorsData(_method(settings)[0], {t: TensorData(lowest=f32(lo), highest=f32(hi))
                                                         for t, (lo, hi) in ranges.items()}), cache)


def read_ranges(cache: Path) -> dict[str, tuple[float, float]]:
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(cache)
    return {t: _range(data[t]) for t in data}


def _range(td) -> tuple[float, float]:
    lo, hi = td.range_value
    return float(np.asarray(lo).reshape(-1)[0]), float(np.asarray(hi).reshape(-1)[0])


def prepare(src: Path, dst: Path) -> None:
    """ORT's pre-quantization pass (shape inference, folding); INT8 node names follow this graph."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def fallback_dtype(recipe: dict) -> str:
    """What a node left out of INT8 runs in: 'fp16' or 'fp32' (recipes.yaml ``fallback_dtype``)."""
    dtype = recipe.get("fallback_dtype", "fp16")
    if dtype not in ("fp16", "fp32"):
        raise EdgeadError(f"recipe fallback_dtype {dtype!r}: choose fp16 or fp32 in the recipes file")
    return dtype


def kept_half(keep_float: list[str], recipe: dict, fp16_scopes: list[str]) -> list[str]:
    """The nodes kept out of INT8 that run in FP16: with an fp16 ``fallback_dtype``, those inside ``fp16_scopes``."""
    if fallback_dtype(recipe) != "fp16":
        return []
    return [n for n in keep_float if in_scopes(n, fp16_scopes)]


def to_int8(src: Path, dst: Path, recipe_name: str, recipe: dict, settings: CalibSettings, data: np.ndarray,
            input_name: str, batch: int, scopes: list[str], work: Path, keep_float: list[str] = (),
            normalization: tuple | None = None, fp16_scopes: list[str] = ()) -> dict:
    """Quantize the nodes inside ``scopes``, except ``keep_float`` (they run in the recipe's ``fallback_dtype``
    instead: FP16 for TensorRT, FP32 for ONNX Runtime on a CPU, which has no fast FP16 kernels). A kept node
    runs in FP16 only inside the model's ``fp16_scopes``: what an FP16 build keeps in FP32 (a sensitive
    trunk) stays FP32 in the fallback too.

    ``normalization``: the preprocessing's (mean, std); the input is then put on the INT8 grid exactly
    (``ranges.exact_input``) instead of being calibrated. With the recipe's ``equalize`` the per-channel
    ranges in front of depthwise convolutions are equalised first (``precision.equalize``), with its
    ``equalize_streams`` the linear residual streams (``precision.streams``)."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    ort.set_default_logger_severity(3)  # its sessions' graph-cleanup warnings (unused initializers) are noise here
    if len(data) < batch:
        raise EdgeadError(f"{len(data)} calibration images < batch {batch}; raise --calib-count")
    work.mkdir(parents=True, exist_ok=True)
    pre = work / "preprocessed.onnx"
    cache = work / f"ranges.{settings.method}.json"
    if not (pre.is_file() and cache.is_file()):  # a fallback rebuild reuses the ranges
        prepare(src, pre)
        symmetric = bool(recipe["activation_symmetric"])
        fixed = None
        model = onnx.load(str(pre))
        if normalization is not None:
            from edgead.precision.ranges import exact_input

            fixed = exact_input(model, input_name, *normalization, symmetric)
        done = {}
        if recipe.get("equalize", False):
            from edgead.precision.equalize import equalize

            done.update(equalize(model, data, input_name, batch, float(recipe.get("equalize_headroom", 1.0))))
        if recipe.get("equalize_streams", False):
            from edgead.precision.streams import equalize_streams

            done.update(equalize_streams(model, data, input_name, batch, scopes))
        if done:
            (work / EQUALIZED).write_text(json.dumps(done))
        onnx.save(model, str(pre))
        calibrate(pre, data, input_name, batch, settings, cache, symmetric, fixed)
    inside, outside = split_nodes(onnx.load(str(pre)), scopes)
    inside = [n for n in inside if n not in set(keep_float)]
    if not inside:  # ONNX Runtime reads an empty nodes_to_quantize as "every node", the FP32 heads included
        raise EdgeadError(f"{src}: every node of the INT8 scopes {list(scopes)} is kept out of INT8; nothing is "
                          f"left to quantize (build --precision fp16 instead)")
    method, _ = _method(settings)
    act = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[recipe["activation_type"]]
    quantize_static(str(pre), str(dst), None, quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=act, weight_type=QuantType.QInt8, nodes_to_quantize=inside,
                    calibrate_method=method, calibration_cache_path=str(cache),
                    extra_options={"ActivationSymmetric": bool(recipe["activation_symmetric"]),
                                   "WeightSymmetric": bool(recipe["weight_symmetric"]),
                                   "QuantizeBias": bool(recipe["quantize_bias"])})
    q = onnx.load(str(dst))
    fused = []
    if recipe.get("fuse_activations", False):
        from edgead.precision.placement import fuse_activations

        fused = fuse_activations(q)
    half = kept_half(keep_float, recipe, fp16_scopes)
    if half:
        from edgead.precision.fp16 import convert

        q = convert(q, nodes=set(half))
    if fused or half:
        onnx.save(q, str(dst))
    ops = [n.op_type for n in q.graph.node]
    return {"recipe": recipe_name, "method": settings.method, "int8_nodes": len(inside), "fp32_nodes": len(outside),
            "quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "fp32_scopes": sorted({scope(n) for n in outside} - {""}) + ["(top level)"],
            "kept_float": list(keep_float), "kept_dtype": fallback_dtype(recipe), "kept_fp16": half,
            "fused_activations": len(fused),
            "equalized": json.loads((work / EQUALIZED).read_text()) if (work / EQUALIZED).is_file() else {"pairs": 0},
            "rule": f"INT8 Q/DQ inside scopes {list(scopes)}; all other nodes FP32"}


def activation_scales(path: Path) -> dict[str, float]:
    """Scale of every QuantizeLinear input in a Q/DQ graph (tensor name -> scale)."""
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[1] in inits:
            out[n.input[0]] = float(np.asarray(inits[n.input[1]]).ravel()[0])
    return out
