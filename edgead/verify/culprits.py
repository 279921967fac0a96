"""When an INT8 check fails: which quantized activations cause it.

Every activation Q/DQ pair of the INT8 graph gets a switch (a boolean graph input choosing the
quantized or the float tensor), so one ONNX Runtime session can run the graph with all pairs on, or
with exactly one pair off. A pair's share of the failure is how much the anomaly maps move towards the
FP32 graph's when that pair alone is left in float (relative L2 error of the maps, a few images).
This measures effect on the output, so a pre-activation tensor whose saturated negatives are clipped
away anyway is not blamed (per-tensor SQNR would blame it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgead.bundle import Bundle
from edgead.precision.rules import toposort

METHOD = ("one activation Q/DQ pair at a time left in float (switches in one ORT session); share = reduction of "
          "the maps' relative L2 error against the FP32 graph")


def activation_pairs(model: onnx.ModelProto) -> list[tuple[str, onnx.NodeProto, onnx.NodeProto]]:
    """(float tensor, QuantizeLinear, DequantizeLinear) for every quantized activation (not weights)."""
    inits = {i.name for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    pairs = []
    for dq in model.graph.node:
        if dq.op_type != "DequantizeLinear":
            continue
        q = producer.get(dq.input[0])
        if q is not None and q.op_type == "QuantizeLinear" and q.input[0] not in inits:
            pairs.append((q.input[0], q, dq))
    return pairs


def switchable(model: onnx.ModelProto, pairs) -> tuple[onnx.ModelProto, list[str]]:
    """The graph with ``Where(switch_i, DQ(Q(t)), t)`` in place of each pair's DQ output."""
    names = []
    for i, (t, _q, dq) in enumerate(pairs):
        sw, out = f"qdq_switch_{i}", f"{dq.output[0]}__switched"
        model.graph.input.append(helper.make_tensor_value_info(sw, TensorProto.BOOL, []))
        for n in model.graph.node:
            if n is not dq:
                for k, name in enumerate(n.input):
                    if name == dq.output[0]:
                        n.input[k] = out
        model.graph.node.append(helper.make_node("Where", [sw, dq.output[0], t], [out], name=f"{sw}_where"))
        names.append(sw)
    return model, names


def rank_pairs(fp32: Path, int8: Path, x: np.ndarray, input_name: str, batch: int) -> tuple[float, list[dict]]:
    """Every activation Q/DQ pair of ``int8``, ranked by how much of the maps' error against ``fp32``
    goes away when that pair alone is left in float (largest share first); plus the all-INT8 error."""
    import onnxruntime as ort

    n = max(batch, len(x) // batch * batch)
    x = x[:n]
    ref_sess = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"])

    def maps(sess, extra: dict) -> np.ndarray:
        return np.concatenate([sess.run(["anomaly_map"], {input_name: x[i:i + batch], **extra})[0]
                               for i in range(0, n, batch)])

    ref = maps(ref_sess, {})
    model = onnx.load(str(int8))
    producer = {o: nd for nd in model.graph.node for o in nd.output}
    pairs = activation_pairs(model)
    model, switches = switchable(model, pairs)
    sess = ort.InferenceSession(toposort(model, "culprits").SerializeToString(), providers=["CPUExecutionProvider"])
    on = {s: np.array(True) for s in switches}

    def error(m: np.ndarray) -> float:
        return float(np.mean([np.linalg.norm(a - r) / max(np.linalg.norm(r), 1e-12) for a, r in zip(m, ref,
                                                                                                      strict=True)]))

    base = error(maps(sess, on))
    rows = []
    for (t, _q, _dq), s in zip(pairs, switches, strict=True):
        e = error(maps(sess, {**on, s: np.array(False)}))
        p = producer.get(t)
        rows.append({"tensor": t, "producer": p.name if p is not None else "(graph input)",
                     "op": p.op_type if p is not None else "", "map_error_all_int8": base,
                     "map_error_this_float": e, "share_of_error": (base - e) / base if base > 0 else 0.0})
    return base, sorted(rows, key=lambda r: -r["share_of_error"])


def find_culprits(bundle: Bundle, key: str, images: np.ndarray, files: list[str], top: int = 5) -> dict:
    batch = bundle.input_shape[0]
    n = max(batch, len(images) // batch * batch)
    base, ranked = rank_pairs(bundle.onnx("fp32"), bundle.onnx(key), images[:n], bundle.input_name, batch)
    return {"method": METHOD, "images": files[:n], "n_pairs": len(ranked), "map_error_all_int8": base,
            "top": ranked[:top]}
