"""FP16 graph with FP32 inputs/outputs; only nodes inside the model's FP16 scopes run in FP16.

A small, explicit pass (not a generic converter): every float tensor produced inside the FP16
region becomes FP16; float initializers and Constant values used there get FP16 copies; a Cast
is inserted wherever a tensor crosses the region's border, in either direction. Tensors between
two FP32 nodes are never rounded through FP16 (ONNX Runtime's converter does that when given a
block list, which wrecked the distance head here: 2.8x relative map error). Inputs that must stay
FP32 by the ONNX spec (Resize roi/scales) are left alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgead.precision.rules import in_scopes, scope, split_nodes, toposort

KEEP_FP32_INPUTS = {"Resize": {1, 2}}
FLOAT = TensorProto.FLOAT
HALF = TensorProto.FLOAT16


def _dtypes(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    out.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t.data_type
    return out


def convert(model: onnx.ModelProto, scopes: list[str] | tuple[str, ...] = (),
            nodes: set[str] | None = None) -> onnx.ModelProto:
    """Run the nodes inside ``scopes`` (or the named ``nodes``) in FP16; Casts at the borders."""
    g = model.graph
    for i, n in enumerate(g.node):
        n.name = n.name or f"__node{i}"
    dtype = _dtypes(model)
    # protobuf wrappers have no stable id(): the region is a set of node names
    region = set(nodes) if nodes is not None else {n.name for n in g.node if in_scopes(n.name, scopes)}
    inits = {i.name: i for i in g.initializer}
    graph_outputs = {o.name for o in g.output}
    produced_inside = {o for n in g.node if n.name in region for o in n.output if dtype.get(o) == FLOAT}
    consumed_outside = {i for n in g.node if n.name not in region for i in n.input} | graph_outputs
    half_name: dict[str, str] = {}
    new_inits, casts_in, casts_out = [], [], []

    def to_half(t: str) -> str:
        if t not in half_name:
            half_name[t] = f"{t}__fp16"
            if t in inits:
                arr = numpy_helper.to_array(inits[t]).astype(np.float16)
                new_inits.append(numpy_helper.from_array(arr, half_name[t]))
            else:
                casts_in.append(helper.make_node("Cast", [t], [half_name[t]], name=f"{t}__cast_fp16", to=HALF))
        return half_name[t]

    for n in g.node:
        if n.name not in region:
            continue
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float16), a.t.name))
            continue
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == FLOAT:
                    a.i = HALF
        keep = KEEP_FP32_INPUTS.get(n.op_type, set())
        for k, t in enumerate(n.input):
            if t and k not in keep and dtype.get(t) == FLOAT and t not in produced_inside:
                n.input[k] = to_half(t)
        for k, t in enumerate(n.output):
            if t in produced_inside and t in consumed_outside:
                inner = f"{t}__fp16out"
                n.output[k] = inner
                casts_out.append(helper.make_node("Cast", [inner], [t], name=f"{t}__cast_fp32", to=FLOAT))
                # consumers inside the region keep reading the FP16 tensor
                for m in g.node:
                    if m.name in region and m is not n:
                        for j, u in enumerate(m.input):
                            if u == t:
                                m.input[j] = inner
    # Constants produced inside but read outside: their outputs are FP16 now.
    for n in g.node:
        if n.name in region and n.op_type == "Constant" and n.output[0] in consumed_outside \
                and dtype.get(n.output[0]) == FLOAT:
            inner = f"{n.output[0]}__fp16out"
            casts_out.append(helper.make_node("Cast", [inner], [n.output[0]], to=FLOAT))
            for m in g.node:
                if m.name in region:
                    m.input[:] = [inner if u == n.output[0] else u for u in m.input]
            n.output[0] = inner
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts_in + nodes + casts_out)
    g.initializer.extend(new_inits)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    return toposort(model, "fp16 pass")


def to_fp16(src: Path, dst: Path, scopes: list[str]) -> dict:
    model = onnx.load(str(src))
    inside, outside = split_nodes(model, scopes)
    out = convert(model, nodes=set(inside))
    onnx.checker.check_model(out)
    onnx.save(out, str(dst))
    return {"fp16_nodes": len(inside), "fp32_nodes": len(outside),
            "fp32_scopes": sorted({scope(n) for n in outside} - {""}) + ["(top level)"],
            "rule": f"FP16 inside scopes {list(scopes)}; all other nodes FP32; inputs/outputs FP32"}
