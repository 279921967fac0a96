"""Learned weight rounding (AdaRound, Nagel et al. 2020): each weight of a quantized convolution rounded
up or down so that the layer's output, not the weight itself, stays closest to FP32.

Rounding to nearest minimises each weight's own error; a depthwise 3x3 filter has nine weights per
channel, so their errors add up in the output instead of averaging out. The walk follows bias correction
(``precision.walk``): at each quantized Conv the INT8 graph's input to it (what the layers before, already
rounded, hand it) goes through the conv with soft-rounded weights and a per-channel bias offset, and the
output, clamped to the range its quantizer keeps (a fused ReLU6), is fitted to the float conv's on the float
input. A regulariser pushes each soft rounding to up or down; the hard rounding (and the offset) is kept for
a layer only where it beats nearest rounding on every calibration image together. Weights stay on their
channel's grid (the largest |w| is not moved, so the scale ONNX Runtime recomputes on export is the same).

Measured on the build split (CRAD magnetic_tile, 10 epochs, score error max / RMS in threshold units):
cpu recipe PTQ 0.367 / 0.127, bias correction 0.185 / 0.059, learned rounding 0.213 / 0.066 (the stem's
output error 1.6 % -> 0.4 %); tensorrt recipe PTQ 0.552 / 0.151, bias correction 0.375 / 0.075, learned
rounding 0.394 / 0.075. Bias correction after learned rounding made it worse (cpu 0.245 / 0.073), hence the
offset fitted beside the rounding. No better than bias correction here and ~5 min per build on 2 cores, so
the build tries it only when asked (``edgead build --learned-rounding``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch: h(V) reaches 0 and 1 exactly


@dataclass(frozen=True)
class RoundingSettings:
    steps: int = 300  # Adam steps per convolution
    batch: int = 8  # images per step
    crop: int = 32  # output positions per side per image per step (a random window)
    lr: float = 1e-2
    lr_bias: float = 1e-3  # the bias offset, in units of its channel's output spread
    reg: float = 0.01  # weight of the round-to-up-or-down regulariser (after the warm-up)
    warmup: float = 0.2  # share of the steps fitted without the regulariser
    beta: tuple[float, float] = (20.0, 2.0)  # the regulariser's exponent, annealed: flat first, then sharp
    seed: int = 0


def learn(student, images: np.ndarray, input_name: str, settings: RoundingSettings = RoundingSettings(),
          progress: Callable | None = None, scopes: list[str] | None = None) -> dict:
    """Learn the rounding of ``student``'s (a ``QuantGraph``) quantized conv weights in place from ``images``
    (only the convs inside ``scopes``, when given); returns a summary (per layer: output error with nearest and
    learned rounding, relative RMS)."""
    import torch

    from edgead.precision.rules import in_scopes
    from edgead.precision.walk import walk

    convs = [n.name for n in student.nodes if n.op_type == "Conv" and len(n.input) > 1
             and n.input[1] in student.weight_of and student.weight_of[n.input[1]][1] >= 0
             and (scopes is None or in_scopes(n.name, scopes))]
    ranges = {t: student.float_range(k) for k, t in student.quantized.items()}
    gen = torch.Generator().manual_seed(settings.seed)
    layers: dict[str, dict] = {}

    def visit(n, pairs) -> None:
        key, _ = student.weight_of[n.input[1]]
        lo, hi = ranges.get(n.output[0], (-np.inf, np.inf))
        with torch.no_grad():
            xq = torch.cat([eq[n.input[0]] for eq, _ in pairs])
            yf = torch.clamp(torch.cat([ef[n.output[0]] for _, ef in pairs]), lo, hi)
            bias = pairs[0][0][n.input[2]].detach() if len(n.input) > 2 and n.input[2] else None
        layers[n.name] = _fit(student, key, n, xq, yf, bias, (lo, hi), settings, gen)
        if progress:
            progress(len(layers), len(convs))

    walk(student, images, input_name, set(convs), visit)
    kept = [v for v in layers.values() if v["kept"]]
    return {"settings": asdict(settings), "convs": len(layers), "learned": len(kept), "n_images": int(len(images)),
            "flipped": int(sum(v["flipped"] for v in kept)),
            "layers": layers}  # per conv: output error with nearest / learned rounding, kept, flips, bias shift


def _geometry(n) -> dict:
    """A Conv's padding (as ``F.pad`` takes it), strides, dilations (per axis) and groups."""
    from edgead.precision.onnx_torch import _attrs

    a = _attrs(n)
    top, left, bottom, right = list(a.get("pads", [0, 0, 0, 0]))
    return {"pad": (left, right, top, bottom), "stride": tuple(int(v) for v in a.get("strides", [1, 1])),
            "dilation": tuple(int(v) for v in a.get("dilations", [1, 1])), "groups": int(a.get("group", 1))}


def _fit(student, key: str, n, xq, yf, bias, rng: tuple[float, float], s: RoundingSettings, gen) -> dict:
    """One conv: soft rounding (and a bias offset) fitted on random windows, then hard; the student's rounding
    and bias set where that beats nearest rounding on every image."""
    import torch
    import torch.nn.functional as F

    from edgead.precision.onnx_torch import WEIGHT_QMAX, quantize_weight

    w0, step, movable = student.base[key]
    bias_key = student.bias_key(n.input[2]) if bias is not None else None
    c = _geometry(n)
    xp = F.pad(xq, c["pad"])

    def span(p: int, axis: int) -> int:  # input rows (axis 0) or columns (1) that p outputs read
        return (p - 1) * c["stride"][axis] + c["dilation"][axis] * (w0.shape[2 + axis] - 1) + 1

    def conv(x, w, b):
        return torch.clamp(F.conv2d(x, w, b, stride=c["stride"], dilation=c["dilation"], groups=c["groups"]), *rng)

    def error(w, b) -> float:  # relative RMS output error over every image
        with torch.no_grad():
            num = sum(float((conv(xp[i:i + 8], w, b) - yf[i:i + 8]).pow(2).sum()) for i in range(0, len(xp), 8))
        return float(np.sqrt(num / max(float(yf.pow(2).sum()), 1e-30)))

    ratio = w0 / step
    floor = torch.floor(ratio)
    nearest = quantize_weight(w0, step)
    frac = (ratio - floor).clamp(1e-4, 1 - 1e-4)
    v = torch.nn.Parameter(-torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1))  # h(v) starts at the float weight
    fixed = movable == 0
    unit = yf.std(dim=(0, 2, 3)).clamp_min(1e-6)  # the bias offset is learned in units of each channel's spread
    u = torch.nn.Parameter(torch.zeros_like(unit))

    def offset() -> torch.Tensor | None:  # the bias with its learned offset (a bias the graph has no key for: as is)
        return bias + u * unit if bias_key is not None else bias

    def soft() -> torch.Tensor:
        return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def weight(h) -> torch.Tensor:
        return torch.where(fixed, nearest, torch.clamp(floor + h, -WEIGHT_QMAX, WEIGHT_QMAX) * step)

    opt = torch.optim.Adam([{"params": [v], "lr": s.lr}, {"params": [u], "lr": s.lr_bias}])
    ho, wo = yf.shape[2], yf.shape[3]
    ph, pw = min(s.crop, ho), min(s.crop, wo)
    warm = int(s.warmup * s.steps)
    for t in range(s.steps):
        idx = torch.randint(len(xp), (min(s.batch, len(xp)),), generator=gen)
        oy = int(torch.randint(ho - ph + 1, (1,), generator=gen))
        ox = int(torch.randint(wo - pw + 1, (1,), generator=gen))
        iy, ix = oy * c["stride"][0], ox * c["stride"][1]
        x = xp[idx, :, iy:iy + span(ph, 0), ix:ix + span(pw, 1)]
        y = yf[idx, :, oy:oy + ph, ox:ox + pw]
        h = soft()
        loss = (conv(x, weight(h), offset()) - y).pow(2).mean() / y.pow(2).mean().clamp_min(1e-30)
        if t >= warm:
            beta = s.beta[1] + (s.beta[0] - s.beta[1]) * (1 - (t - warm) / max(1, s.steps - warm))
            loss = loss + s.reg * (1 - (2 * h[~fixed] - 1).abs().pow(beta)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        hard = (v >= 0).float()  # h(v) >= 0.5
        learned = weight(hard)
        before, after = error(nearest, bias), error(learned, offset())
        keep = after < before
        flipped = int(((learned != nearest) & ~fixed).sum())
        if keep:  # the student's rounding: the move from the FP32 weight, in steps
            student.rounding[key].data.copy_(torch.where(fixed, torch.zeros_like(w0), (learned - w0) / step))
            if bias_key is not None:
                student.biases[bias_key].data += u * unit
        shift = float((u * unit).abs().max()) if keep else 0.0
    return {"nearest": round(before, 5), "learned": round(after, 5), "kept": bool(keep),
            "flipped": flipped if keep else 0, "bias_shift": round(shift, 5)}
