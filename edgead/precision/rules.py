"""Which nodes may run in reduced precision (see the package docstring for the rule)."""

from __future__ import annotations

import re

import onnx

# Nodes that only move shapes around: never worth a cast or a Q/DQ pair.
SHAPE_OPS = {"Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Slice", "Cast", "ConstantOfShape",
             "Reshape", "Flatten", "Transpose", "Range"}


_CHILD = re.compile(r"(\.\d+)?(_\d+)?$")  # '.3' (list index), '_1' (second call) at the end of a module name


def scope(node_name: str) -> str:
    """The top-level module a node belongs to: '/backbone/blocks.0/Conv' -> 'backbone'; a ModuleList's or
    Sequential's child ('/decoder.0/Conv') -> 'decoder'; a module called again ('/up_1/Conv', '/blocks.0_1/Add',
    the exporter's suffix) -> 'up', 'blocks'; top-level nodes ('/Sub_3') -> ''."""
    parts = node_name.strip("/").split("/")
    return _CHILD.sub("", parts[0]) if len(parts) > 1 else ""


def in_scopes(node_name: str, scopes: list[str] | tuple[str, ...]) -> bool:
    """Whether a node is inside ``scopes``: top-level module names, minus entries '-prefix'
    ('-backbone/blocks.0' keeps every node under /backbone/blocks.0/ in FP32)."""
    if scope(node_name) not in scopes:
        return False
    path = node_name.strip("/") + "/"
    return not any(path.startswith(s[1:].strip("/") + "/") for s in scopes if s.startswith("-"))


def split_nodes(model: onnx.ModelProto, scopes: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(nodes inside the reduced-precision scopes, nodes kept FP32), computational nodes only."""
    inside, outside = [], []
    for n in model.graph.node:
        if n.op_type in SHAPE_OPS:
            continue
        (inside if in_scopes(n.name, scopes) else outside).append(n.name)
    return inside, outside


def links(model: onnx.ModelProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """(tensor -> the node writing it, tensor -> the nodes reading it) of a graph."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return producer, consumers


def toposort(model: onnx.ModelProto, what: str = "graph") -> onnx.ModelProto:
    """Put the nodes in topological order (after passes that append or rewire nodes)."""
    g = model.graph
    ready = {i.name for i in g.input} | {i.name for i in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise RuntimeError(f"{what}: graph is not a DAG at {rest[0].name}")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)
    return model
