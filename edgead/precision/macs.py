"""Multiply-accumulates of a graph's Conv, Gemm and MatMul nodes, and the share of them that runs in INT8."""

from __future__ import annotations

import math

import onnx
from onnx import numpy_helper

MAC_OPS = ("Conv", "Gemm", "MatMul")


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and all(d.dim_value > 0 for d in dims):
            out[v.name] = [d.dim_value for d in dims]
    for i in model.graph.initializer:
        out[i.name] = list(i.dims)
    return out


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Node name -> MACs (static shapes; nodes whose shapes are unknown count 0)."""
    shapes = _shapes(model)
    macs = {}
    for n in model.graph.node:
        if n.op_type not in MAC_OPS:
            continue
        out, a, b = shapes.get(n.output[0]), shapes.get(n.input[0]), shapes.get(n.input[1])
        if out is None or b is None:
            macs[n.name] = 0
        elif n.op_type == "Conv":  # out (N, Co, H, W), weight (Co, Ci/g, kh, kw)
            macs[n.name] = math.prod(out) * math.prod(b[1:])
        else:  # (.., M, K) x (K, N)
            k = a[-1] if a is not None else b[0]
            macs[n.name] = math.prod(out) * k
    return macs


def int8_share(float_graph: onnx.ModelProto, qdq: onnx.ModelProto) -> dict:
    """Share of the float graph's MACs whose node reads a dequantized INT8 weight in ``qdq``."""
    macs = node_macs(float_graph)
    int_inits = {i.name for i in qdq.graph.initializer if numpy_helper.to_array(i).dtype.kind in "iu"}
    dq_weights = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int_inits}
    int8 = {n.name for n in qdq.graph.node if n.op_type in MAC_OPS and any(i in dq_weights for i in n.input[1:2])}
    total = sum(macs.values())
    inside = sum(v for k, v in macs.items() if k in int8)
    return {"total_mmacs": round(total / 1e6, 1), "int8_mmacs": round(inside / 1e6, 1),
            "int8_share": inside / total if total else 0.0}
