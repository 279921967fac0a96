"""Fault injection for proving that the gates catch real failures (tests and the acceptance demo).

``misscale_activations`` multiplies the scales of activation Q/DQ pairs in an INT8 graph, which is
what a calibration on wrongly preprocessed images (or a unit mix-up in a hand-edited cache) does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgead.errors import EdgeadError


def misscale_activations(src: Path, dst: Path, factor: float, node: str | None = None) -> list[str]:
    """Scale activation QuantizeLinear scales by ``factor`` (all, or only the one feeding ``node``).

    Returns the names of the scale initializers changed (shared by each Q and its DQ).
    """
    model = onnx.load(str(src))
    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    targets: list[str] = []
    if node is None:
        targets = [n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    else:
        conv = next((n for n in model.graph.node if n.name == node), None)
        if conv is None:
            raise EdgeadError(f"{src}: no node {node!r}")
        dq = producers.get(conv.input[0])
        q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            raise EdgeadError(f"{src}: node {node!r} has no activation Q/DQ on its input")
        targets = [q.input[1]]
    changed = []
    for name in dict.fromkeys(targets):
        init = inits.get(name)
        if init is None:
            continue
        arr = numpy_helper.to_array(init) * np.float32(factor)
        init.CopyFrom(numpy_helper.from_array(arr.astype(numpy_helper.to_array(init).dtype), name))
        changed.append(name)
    onnx.save(model, str(dst))
    _rerecord(Path(dst))
    return changed


def _rerecord(dst: Path) -> None:
    """A planted fault stands for a graph that was built badly, not a damaged file: when ``dst`` is a
    bundle's graph, its new SHA-256 is recorded so that verify runs it and must catch the fault."""
    from edgead.bundle import META, record_graph

    key = dst.name.removeprefix("model.").removesuffix(".onnx")
    if (dst.parent / META).is_file() and dst.name.startswith("model."):
        record_graph(dst.parent, key)
