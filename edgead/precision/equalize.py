"""Per-channel range equalisation in front of depthwise convolutions (free for INT8).

In EfficientNet-Lite (and any MobileNet-style trunk) a convolution, a ReLU6 and a depthwise
convolution follow each other: the stem and every block's expand conv. The tensor between them is
quantized per tensor, so channels whose values stay small get a handful of INT8 levels (measured on
CRAD magnetic_tile: the stem output alone gave 0.33 threshold units of score error on normals).
Scaling channel ``c`` of the first convolution by ``s_c`` and the depthwise filter ``c`` by ``1/s_c``
leaves the function unchanged while every channel's largest value stays below the ReLU6 bound, and
costs nothing in weight precision: the first conv's output rows and the depthwise filters are each
quantized per channel. ``s_c`` brings each channel's largest value on the INT8 image set (normals and
synthetic anomalies) to the tensor's largest; a channel that later sees more than ``s_c`` allows is
clipped there, as per-tensor quantization clips the largest channel at its calibrated range.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgead.precision.rules import links

MAX_SCALE = 64.0  # a nearly silent channel is not blown up past this


def depthwise_pairs(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, onnx.NodeProto, onnx.NodeProto]]:
    """(Conv, Clip(0, 6), depthwise Conv) chains where the Clip output feeds only the depthwise conv."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer, consumers = links(model)
    pairs = []
    for clip in model.graph.node:
        if clip.op_type != "Clip" or len(clip.input) < 3 or clip.input[1] not in inits or clip.input[2] not in inits:
            continue
        if float(inits[clip.input[1]]) != 0.0 or float(inits[clip.input[2]]) <= 0.0:
            continue
        conv, users = producer.get(clip.input[0]), consumers.get(clip.output[0], [])
        if conv is None or conv.op_type != "Conv" or len(consumers.get(conv.output[0], [])) != 1 or len(users) != 1:
            continue
        dw = users[0]
        if dw.op_type != "Conv" or conv.input[1] not in inits or dw.input[1] not in inits:
            continue
        if any(len(consumers.get(w, [])) != 1 for w in [*conv.input[1:], dw.input[1]] if w):
            continue  # a shared initializer would be scaled for another node too
        w_dw = inits[dw.input[1]]
        group = next((a.i for a in dw.attribute if a.name == "group"), 1)
        if group == 1 or w_dw.shape[1] != 1 or group != w_dw.shape[0] or inits[conv.input[1]].shape[0] != group:
            continue
        pairs.append((conv, clip, dw))
    return pairs


def channel_max(model: onnx.ModelProto, tensors: list[str], images: np.ndarray, input_name: str,
                batch: int, magnitude: bool = False) -> dict[str, np.ndarray]:
    """Largest value (``magnitude``: largest |value|) of every channel of ``tensors`` over ``images`` (ONNX Runtime,
    float graph)."""
    from edgead.precision.probe import inner_values

    out = {t: None for t in tensors}
    for values in inner_values(model, tensors, images[:len(images) // batch * batch], input_name, batch):
        for t, v in values.items():
            top = (np.abs(v) if magnitude else v).max(axis=(0, 2, 3))
            out[t] = top if out[t] is None else np.maximum(out[t], top)
    return out


def equalize(model: onnx.ModelProto, images: np.ndarray, input_name: str, batch: int, headroom: float = 1.0) -> dict:
    """Equalise every depthwise pair of ``model`` in place; returns what was done (for the build report).

    ``headroom``: a channel is scaled only up to the tensor's largest value / ``headroom``, so it can reach
    ``headroom`` times its largest value on ``images`` before the ReLU6 bound clips it."""
    pairs = depthwise_pairs(model)
    if not pairs:
        return {"pairs": 0}
    tops = channel_max(model, [clip.output[0] for _, clip, _ in pairs], images, input_name, batch)
    inits = {i.name: i for i in model.graph.initializer}
    spread = []
    for conv, clip, dw in pairs:
        top = np.maximum(tops[clip.output[0]].astype(np.float64), 0.0)
        s = np.where(top > 0, top.max() / (headroom * np.maximum(top, 1e-12)), 1.0).clip(1.0, MAX_SCALE)
        scale_axis(inits[conv.input[1]], s, axis=0)
        if len(conv.input) > 2 and conv.input[2]:
            scale_axis(inits[conv.input[2]], s, axis=0)
        scale_axis(inits[dw.input[1]], 1.0 / s, axis=0)
        spread.append(float(np.median(s)))
    return {"pairs": len(pairs), "median_scale": round(float(np.median(spread)), 2)}


def scale_axis(init: onnx.TensorProto, s: np.ndarray, axis: int) -> None:
    """Multiply an initializer by ``s`` along ``axis`` (in place; float64 arithmetic, stored float32)."""
    arr = numpy_helper.to_array(init).astype(np.float64)
    shape = [1] * arr.ndim
    shape[axis] = -1
    init.CopyFrom(numpy_helper.from_array((arr * s.reshape(shape)).astype(np.float32), init.name))
