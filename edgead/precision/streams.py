"""Residual-stream equalisation: each channel of a linear stream put on one INT8 range (float function unchanged).

In EfficientNet-Lite (and any MobileNetV2-style trunk) a block's projection conv writes a linear tensor (no
activation) that residual ``Add``s carry through the stage and the next expand convs read. It is quantized
per tensor, so its quiet channels get a few INT8 levels next to its loud ones. Scaling channel ``c`` of every
tensor in the stream by ``s_c`` (the writing convs' output rows and biases times ``s_c``, the reading 1x1
convs' input columns times ``1/s_c``) leaves the function unchanged; where the stream leaves the INT8 scopes (a
feature tap read by an FP32 head) an FP32 ``Mul`` by ``1/s_c`` gives the head the original tensor. ``s_c``
brings each channel's largest magnitude on the INT8 image set to the stream's largest (capped at
``MAX_SCALE``). No clipping is involved (the stream is linear), so unlike the depthwise pairs nothing new is cut.
Measured on Lite0's trunk (magnetic_tile normals, activations per tensor, bias-corrected weights): relative
feature error at stride 8 / 16 0.091 / 0.113 -> 0.078 / 0.093, the projection outputs' share halved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgead.precision.equalize import channel_max, scale_axis
from edgead.precision.rules import in_scopes, toposort

MAX_SCALE = 64.0


@dataclass
class Stream:
    """One linear stream: its tensors, the convs writing and reading it, and where it leaves the INT8 scopes."""

    tensors: list[str]
    writers: list[onnx.NodeProto] = field(default_factory=list)
    readers: list[onnx.NodeProto] = field(default_factory=list)
    exits: list[tuple[onnx.NodeProto, str]] = field(default_factory=list)  # (consumer, the stream tensor it reads)


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def streams(model: onnx.ModelProto, scopes: list[str] | tuple[str, ...]) -> list[Stream]:
    """The linear streams inside ``scopes`` that can be equalised exactly."""
    g = model.graph
    dims = {i.name: i.dims for i in g.initializer}
    uses: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for t in n.input:
            uses.setdefault(t, []).append(n)
    outputs = {o.name for o in g.output}

    def own(t: str) -> bool:  # an initializer only this node reads (scaling it touches nothing else)
        return t in dims and len(uses.get(t, [])) == 1

    def writer(n: onnx.NodeProto) -> bool:
        return (n.op_type == "Conv" and in_scopes(n.name, scopes) and own(n.input[1])
                and len(dims[n.input[1]]) == 4  # 2D convs only: the (1, C, 1, 1) unscale broadcasts
                and (len(n.input) < 3 or not n.input[2] or own(n.input[2])))

    parent: dict[str, str] = {}

    def root(t: str) -> str:
        while parent[t] != t:
            parent[t] = parent[parent[t]]
            t = parent[t]
        return t

    made: dict[str, onnx.NodeProto] = {}
    for n in g.node:  # topological order: an Add joins the streams its two inputs belong to
        if writer(n):
            parent[n.output[0]] = n.output[0]
            made[n.output[0]] = n
        elif (n.op_type == "Add" and in_scopes(n.name, scopes) and len(n.input) == 2
              and all(t in parent for t in n.input)):
            a, b = root(n.input[0]), root(n.input[1])
            parent[b] = a
            parent[n.output[0]] = a
    members: dict[str, list[str]] = {}
    for t in parent:
        members.setdefault(root(t), []).append(t)
    found = []
    for tensors in members.values():
        s = Stream(tensors=tensors, writers=[made[t] for t in tensors if t in made])
        inside = set(tensors)
        ok = not (inside & outputs)
        for t in tensors:
            for c in uses.get(t, []):
                if c.op_type == "Add" and c.output[0] in inside:
                    continue
                if c.op_type == "Conv" and c.input[0] == t and _group(c) == 1 and own(c.input[1]):
                    s.readers.append(c)
                elif in_scopes(c.name, scopes):  # a non-linear or channel-mixing op inside INT8: not exact here
                    ok = False
                else:
                    s.exits.append((c, t))
        if ok:
            found.append(s)
    return found


def equalize_streams(model: onnx.ModelProto, images: np.ndarray, input_name: str, batch: int,
                     scopes: list[str] | tuple[str, ...]) -> dict:
    """Equalise every stream of ``model`` inside ``scopes`` in place; returns what was done (for the build report)."""
    found = streams(model, scopes)
    if not found:
        return {"streams": 0}
    tops = channel_max(model, [t for s in found for t in s.tensors], images, input_name, batch, magnitude=True)
    inits = {i.name: i for i in model.graph.initializer}
    spread, unscaled = [], 0
    for k, s in enumerate(found):
        top = np.max([tops[t] for t in s.tensors], axis=0).astype(np.float64)
        scale = np.where(top > 0, top.max() / np.maximum(top, 1e-30), 1.0).clip(1.0, MAX_SCALE)
        for w in s.writers:
            scale_axis(inits[w.input[1]], scale, axis=0)
            if len(w.input) > 2 and w.input[2]:
                scale_axis(inits[w.input[2]], scale, axis=0)
        for r in s.readers:
            scale_axis(inits[r.input[1]], 1.0 / scale, axis=1)
        back: dict[str, str] = {}
        for consumer, t in s.exits:  # the original tensor again, in FP32, for whatever reads it outside INT8
            if t not in back:
                back[t] = f"{t}__stream_unscaled"
                const = f"stream_eq_{k}_{len(back)}_inverse"
                model.graph.initializer.append(numpy_helper.from_array(
                    (1.0 / scale).astype(np.float32).reshape(1, -1, 1, 1), const))
                model.graph.node.append(helper.make_node("Mul", [t, const], [back[t]],
                                                         name=f"/stream_eq_{k}_{len(back)}/Mul"))
                unscaled += 1
            consumer.input[list(consumer.input).index(t)] = back[t]
        spread.append(float(np.median(scale)))
    toposort(model, "stream equalisation")
    return {"streams": len(found), "stream_tensors": sum(len(s.tensors) for s in found), "unscaled_taps": unscaled,
            "stream_median_scale": round(float(np.median(spread)), 2)}

