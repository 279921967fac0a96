"""Static TensorRT-readiness check of an ONNX graph (no GPU needed).

Checks opset, operators and attributes against the ONNX-TensorRT support table for TensorRT
10.3 (JetPack 6.1/6.2): operators up to opset 20; the 8.5 table's supported set plus the 10.x
additions (LayerNormalization, GroupNormalization, Gelu, ...); AffineGrid and other "N" rows are
unsupported; Resize only nearest/linear; GridSample 4-D and FP32/FP16 only; Q/DQ zero points must
be 0 and INT8 (an ORT "cpu" recipe with uint8 activations is therefore not for TensorRT).
The real proof is a build on the device; this catches what is knowable here, with node names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

MIN_OPSET, MAX_OPSET = 9, 20
SUPPORTED = set("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip Concat
Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal
Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not
OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike
Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND
Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
RESIZE_MODES = {"nearest", "linear"}
RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


@dataclass
class Finding:
    node: str
    op: str
    problem: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.problem}"


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def check(model: onnx.ModelProto) -> list[Finding]:
    """Every problem TensorRT 10.3's ONNX parser would have with ``model`` that is visible statically."""
    found: list[Finding] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        found.append(Finding("(model)", "opset", f"opset {opset} outside {MIN_OPSET}-{MAX_OPSET}"))
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    for n in model.graph.node:
        name = n.name or n.output[0]
        if n.domain not in ("", "ai.onnx"):
            found.append(Finding(name, n.op_type, f"custom domain {n.domain!r} needs a TensorRT plugin"))
            continue
        if n.op_type not in SUPPORTED:
            found.append(Finding(name, n.op_type, "not in the ONNX-TensorRT 10.3 support table"))
        elif n.op_type == "Resize":
            mode = _attr(n, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            coord = _attr(n, "coordinate_transformation_mode", b"half_pixel")
            coord = coord.decode() if isinstance(coord, bytes) else coord
            if mode not in RESIZE_MODES:
                found.append(Finding(name, n.op_type, f"mode {mode!r}: only nearest and linear"))
            if coord not in RESIZE_COORDS:
                found.append(Finding(name, n.op_type, f"coordinate_transformation_mode {coord!r} unsupported"))
            if _attr(n, "antialias", 0):
                found.append(Finding(name, n.op_type, "antialias unsupported"))
        elif n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if zp is not None and (zp.dtype != np.int8 or np.any(zp != 0)):
                nz = " non-zero" if np.any(zp) else ""
                found.append(Finding(name, n.op_type, f"zero point {zp.dtype}{nz}; TensorRT needs INT8 zero point 0 "
                                                      "(use the tensorrt recipe)"))
            if n.op_type == "DequantizeLinear" and n.input[0] in consts and consts[n.input[0]].dtype == np.int32:
                found.append(Finding(name, n.op_type, "INT32 (quantized bias) dequantization unsupported"))
        elif n.op_type == "TopK" and n.input[1] not in consts:
            found.append(Finding(name, n.op_type, "K must be a constant"))
        elif n.op_type == "Einsum" and "..." in (_attr(n, "equation", b"") or b"").decode():
            found.append(Finding(name, n.op_type, "ellipsis in the equation (rewrite as MatMul)"))
    return found


def report(path) -> dict:
    found = check(onnx.load(str(path)))
    return {"target": "TensorRT 10.3 ONNX parser (static check)", "ok": not found,
            "findings": [str(f) for f in found[:50]], "n_findings": len(found)}
