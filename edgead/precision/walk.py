"""The INT8 graph and its float function run node by node side by side, for layer-wise tuning.

Bias correction and learned rounding both tune one layer at a time against what the layers before it,
already tuned, hand it: ``walk`` runs a ``QuantGraph``'s INT8 function and its float one ("clamp": float
weights, activations only clamped to their quantized range) over the calibration images in chunks, stops
after each target node so the caller can tune it, then runs that node again in the INT8 environments with
what changed (its weight's and bias's DequantizeLinear first) before going on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CHUNK = 8  # images per pass through the graph (tensors of the stem are large at full resolution)


def walk(student, images: np.ndarray, input_name: str, targets: set[str], visit: Callable) -> None:
    """``visit(node, pairs)`` after each node named in ``targets``; ``pairs``: per chunk, (INT8 env, float env).

    A graph whose static shapes carry one image is walked again one image at a time, from the state it had."""
    from edgead.precision.onnx_torch import NotBatchable

    before = {k: v.detach().clone() for k, v in student.state_dict().items()}
    try:
        _walk(student, images, input_name, targets, visit, 1 if student.per_sample else CHUNK)
    except NotBatchable:
        student.load_state_dict(before)
        student.per_sample = True
        _walk(student, images, input_name, targets, visit, 1)


def _walk(student, images: np.ndarray, input_name: str, targets: set[str], visit: Callable, size: int) -> None:
    import torch

    made = {o: n for n in student.nodes for o in n.output}
    last_use = {}
    for i, n in enumerate(student.nodes):
        for t in n.input:
            last_use[t] = i
    keep = set(student.outputs)
    with torch.no_grad():
        chunks = [torch.from_numpy(images[i:i + size]) for i in range(0, len(images), size)]
        envs = [(student.start({input_name: c}), student.start({input_name: c})) for c in chunks]
        for i, n in enumerate(student.nodes):
            for (eq, pq), (ef, pf) in envs:
                student.execute(n, eq, pq, True)
                student.execute(n, ef, pf, "clamp")
            if n.name in targets:
                with torch.enable_grad():
                    visit(n, [(eq, ef) for (eq, _), (ef, _) in envs])
                for (eq, pq), _ in envs:  # the weight and bias again as the graph reads them (an int32 bias:
                    for t in n.input[1:]:  # its DQ rounds it again), then the node with them
                        if t in made and t in student.weight_of:
                            student.execute(made[t], eq, pq, True)
                    student.execute(n, eq, pq, True)
            for env_pair in envs:  # free what no later node reads (a Q's input waits in ``pending``)
                for env, pending in env_pair:
                    for t in n.input:
                        if last_use.get(t) == i and t not in keep and t not in student.consts:
                            env.pop(t, None)
                            pending.pop(t, None)
