"""Activation ranges chosen by quantization error (the ``mse`` calibration method).

For each tensor, from its value histogram on the calibration images: the clipping range whose INT8
quantization has the lowest expected squared error, rounding noise (step^2 / 12 per value inside
the range) plus clipping error ((x - edge)^2 per value outside). Symmetric recipes search
``[-a, a]``; asymmetric ones shrink the observed ``[min, max]`` towards zero by one factor. The
graph input's range is never calibrated: it is what the bundle's preprocessing can produce, so a
bright defect is not clipped at the very first layer.
"""

from __future__ import annotations

import numpy as np

SHRINK = np.concatenate([np.linspace(0.02, 0.5, 25, endpoint=False), np.linspace(0.5, 1.0, 101)])


def mse_range(hist: np.ndarray, edges: np.ndarray, lo: float, hi: float, symmetric: bool) -> tuple[float, float]:
    """The (low, high) clipping range of least expected quantization error for one histogram."""
    centers = (edges[:-1] + edges[1:]).astype(np.float64) / 2
    counts = hist.astype(np.float64)
    if counts.sum() == 0 or hi <= lo:
        return float(lo), float(hi)
    amax = max(abs(lo), abs(hi))
    best, best_err = (float(lo), float(hi)), np.inf
    for s in SHRINK:
        a, b = ((-s * amax, s * amax) if symmetric else (min(0.0, s * lo), max(0.0, s * hi)))
        step = (b - a) / (254.0 if symmetric else 255.0)
        if step <= 0:
            continue
        clipped = np.clip(centers, a, b)
        inside = centers == clipped
        err = float(counts[inside].sum() * step * step / 12 + (counts * (centers - clipped) ** 2).sum())
        if err < best_err:
            best, best_err = (float(a), float(b)), err
    return best


def mse_ranges(histograms: dict, symmetric: bool) -> dict[str, tuple[float, float]]:
    """Tensor -> range from ORT histogram-collector entries ``(hist, edges, min, max, ...)``."""
    return {t: mse_range(np.asarray(h[0]), np.asarray(h[1]), float(h[2]), float(h[3]), symmetric)
            for t, h in histograms.items()}



INPUT_LEVEL = 128  # the 8-bit pixel value that lands on INT8 level 0 (uint8: zero point 128)
GRID_SUFFIX = "__on_int8_grid"  # the graph input moved onto the INT8 grid


def input_tensors(input_name: str) -> set[str]:
    """The tensors whose INT8 range ``exact_input`` fixes (whichever of them a graph quantizes): never tuned."""
    return {input_name, f"{input_name}{GRID_SUFFIX}"}


def exact_input(model, input_name: str, mean, std, symmetric: bool) -> dict[str, tuple[float, float]]:
    """Make every 8-bit pixel value one INT8 level of the graph input, exactly.

    Normalised pixels ``(p / 255 - mean) / std`` sit on a grid of step ``1 / (255 std)`` offset from
    zero by ``mean / std`` (for Lite0's [-1, 1] by half a step), so a quantizer whose grid holds 0
    rounds every pixel by half a level, a tie, broken differently by each runtime. An ``Add`` of
    ``c = (255 mean - 128) / (255 std)`` in front of the consumers moves the pixels onto the grid
    (level = p - 128); ``c`` times each first convolution's weight sum comes off its bias, so the
    float function is unchanged but for border pixels of zero padding (1/255 of one tap). Needs one
    mean/std for all channels and only Conv consumers. Returns the fixed range that gives scale =
    one pixel step (symmetric: +-127 steps, level -128 = pixel 0; asymmetric: zero point 128) for the
    tensor that is quantized: the shifted one, or, when the shift does not apply (graph unchanged),
    the input itself with the range preprocessing can produce.
    """
    import onnx
    from onnx import helper, numpy_helper

    lows = [(0.0 - a) / b for a, b in zip(mean, std, strict=True)]
    highs = [(1.0 - a) / b for a, b in zip(mean, std, strict=True)]
    plain = {input_name: (float(min(lows)), float(max(highs)))}
    if len(set(mean)) != 1 or len(set(std)) != 1:
        return plain
    m, s = float(mean[0]), float(std[0])
    step = 1.0 / (255.0 * s)
    c = (255.0 * m - INPUT_LEVEL) * step
    g = model.graph
    consumers = [n for n in g.node if input_name in n.input]
    inits = {i.name: i for i in g.initializer}
    if not consumers or any(n.op_type != "Conv" or list(n.input).index(input_name) != 0 or len(n.input) < 3
                            or n.input[1] not in inits or n.input[2] not in inits for n in consumers):
        return plain
    shifted = f"{input_name}{GRID_SUFFIX}"
    const = f"{input_name}__grid_offset"
    g.initializer.append(numpy_helper.from_array(np.array(c, np.float32), const))
    for n in consumers:
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
        bias_name = f"{n.input[2]}__grid"
        g.initializer.append(numpy_helper.from_array((b - c * w.sum(axis=(1, 2, 3))).astype(np.float32), bias_name))
        n.input[0], n.input[2] = shifted, bias_name
    g.node.insert(0, helper.make_node("Add", [input_name, const], [shifted], name="/input_grid/Add"))
    onnx.checker.check_model(model)
    if symmetric:
        return {shifted: (-127.0 * step, 127.0 * step)}
    return {shifted: (-INPUT_LEVEL * step, (255 - INPUT_LEVEL) * step)}
