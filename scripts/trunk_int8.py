"""Where the Lite0 trunk's INT8 error comes from: simulated INT8 (torch), one group of quantizers at a time.

The frozen trunk (stem, blocks 0-10, BatchNorm folded) on training normals of one category: 64 calibrate the
activation ranges (min/max per tensor, as the build's minmax), the next 32 are measured. Rows: the relative
error of the stride-8 and stride-16 features (what every head reads) with only the named quantizers active:
per-channel INT8 weights (plain rounding, then with per-channel bias correction), the ReLU6 outputs, the
project conv outputs, the residual Adds; with the depthwise equalisation (``precision.equalize``) and the
stream equalisation (``precision.streams``) applied as the graph passes do. ``--layers`` adds one row per conv
with only its weights rounded. Training normals only; nothing is chosen here.

    .venv/bin/python scripts/trunk_int8.py --data ../shared/datasets --category magnetic_tile [--recipe tensorrt]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from edgead.backbones.lite0 import Lite0Features
from edgead.data import mvtec
from edgead.data.preprocess import Preprocess

STAGES = [[0], [1, 2], [3, 4], [5, 6, 7], [8, 9, 10]]  # blocks writing one residual stream


def conv_bn(m) -> list:
    out = [(m.stem[0], m.stem[1])]
    for b in m.blocks:
        if b._block_args.expand_ratio != 1:
            out.append((b._expand_conv, b._bn0))
        out += [(b._depthwise_conv, b._bn1), (b._project_conv, b._bn2)]
    return out


def fold(m) -> None:
    """BatchNorm into the conv before it (as the exported graph has it)."""
    for conv, bn in conv_bn(m):
        k = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.data *= k.reshape(-1, 1, 1, 1)
        conv.bias = torch.nn.Parameter(-bn.running_mean * k + bn.bias)
        bn.weight.data.fill_(1), bn.bias.data.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps)


def forward(m, x: torch.Tensor, hooks: list = ()) -> list[torch.Tensor]:
    handles = [mod.register_forward_hook(fn) for mod, fn in hooks]
    with torch.no_grad():
        parts = [m(x[i:i + 16]) for i in range(0, len(x), 16)]
    for h in handles:
        h.remove()
    return [torch.cat([p[j] for p in parts]) for j in range(2)]


def points(m) -> list[tuple[str, torch.nn.Module, int]]:
    """(group, module, calls per forward) whose output is quantized: the ReLU6s (one module, called after the
    expand and the depthwise conv), the projections, the residual Adds (the block's output)."""
    out = [("relu", m.stem[2], 1)]
    for b in m.blocks:
        a = b._block_args
        out += [("relu", b._swish, 2 if a.expand_ratio != 1 else 1), ("proj", b._bn2, 1)]
        if b.id_skip and a.stride == 1 and a.input_filters == a.output_filters:
            out.append(("add", b, 1))
    return out


class Acts:
    """Per-call activation ranges, then fake quantization of the chosen groups with them."""

    def __init__(self, m, cal: torch.Tensor, signed: bool):
        self.m, self.signed, self.ranges = m, signed, {}
        forward(m, cal, self._hooks(self._record))

    def _hooks(self, fn) -> list:
        self.calls = {}
        return [(mod, self._wrap(fn, k, g, n)) for k, (g, mod, n) in enumerate(points(self.m))]

    def _wrap(self, fn, k: int, group: str, per_forward: int):
        def hook(mod, inp, out):
            self.calls[k] = self.calls.get(k, -1) + 1
            return fn((k, self.calls[k] % per_forward), group, out)
        return hook

    def _record(self, key, group, out):
        lo, hi = float(out.min()), float(out.max())
        old = self.ranges.get(key, (lo, hi))
        self.ranges[key] = (min(old[0], lo, 0.0), max(old[1], hi, 0.0))

    def hooks(self, groups: tuple[str, ...], ste: bool = False) -> list:
        """Fake quantization of ``groups`` at the recorded ranges; ``ste``: straight-through gradients."""
        def quant(key, group, out):
            if group not in groups:
                return out
            lo, hi = (0.0, 6.0) if group == "relu" else self.ranges[key]
            q = quantize(out.detach() if ste else out, lo, hi, self.signed)
            return out + (q - out).detach() if ste else q
        return self._hooks(quant)


def quantize(out: torch.Tensor, lo: float, hi: float, signed: bool) -> torch.Tensor:
    """Per-tensor INT8 on [lo, hi]: signed symmetric (TensorRT) or unsigned affine (the cpu recipe)."""
    if signed:
        s = max(-lo, hi) / 127
        return torch.clamp(torch.round(out / s), -127, 127) * s
    s = (hi - lo) / 255
    z = round(-lo / s)
    return (torch.clamp(torch.round(out / s) + z, 0, 255) - z) * s


def weight_grid(w: torch.Tensor) -> torch.Tensor:
    """Per output channel, symmetric INT8 (max |w| / 127)."""
    s = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12) / 127
    return torch.clamp(torch.round(w / s), -127, 127) * s


def round_weights(conv) -> None:
    conv.weight.data = weight_grid(conv.weight.data)


def bias_corrected(m, cal: torch.Tensor):
    """Every conv's weights rounded in order, each output channel's mean shift on ``cal`` taken off its bias."""
    q = copy.deepcopy(m)

    def mean(model, conv):
        acc = []
        forward(model, cal, [(conv, lambda mod, i, o: acc.append(o.double().mean(dim=(0, 2, 3)) * len(o)))])
        return torch.stack(acc).sum(0) / len(cal)
    for (cf, _), (cq, _) in zip(conv_bn(m), conv_bn(q), strict=True):
        want = mean(m, cf)
        round_weights(cq)
        cq.bias.data += (want - mean(q, cq)).float()
    return q


def channel_tops(m, cal: torch.Tensor, modules: list, reduce) -> dict[int, torch.Tensor]:
    """Per channel, the largest ``reduce(output)`` of each module (index into ``modules``) over ``cal``."""
    tops: dict[int, torch.Tensor] = {}

    def hook(k: int):
        def fn(mod, inp, out):
            top = reduce(out).amax(dim=(0, 2, 3))
            tops[k] = torch.maximum(tops[k], top) if k in tops else top
        return fn
    forward(m, cal, [(mod, hook(k)) for k, mod in modules])
    return tops


def equalize_depthwise(m, cal: torch.Tensor) -> None:
    pairs = [(m.stem[0], m.stem[1], m.blocks[0]._depthwise_conv)] + [
        (b._expand_conv, b._bn0, b._depthwise_conv) for b in m.blocks if b._block_args.expand_ratio != 1]
    tops = channel_tops(m, cal, [(k, bn) for k, (_, bn, _) in enumerate(pairs)], lambda o: o.clamp(0, 6))
    for k, (conv, _, dw) in enumerate(pairs):
        s = (tops[k].max() / tops[k].clamp(min=1e-12)).clamp(1, 64)
        conv.weight.data *= s.reshape(-1, 1, 1, 1)
        conv.bias.data *= s
        dw.weight.data /= s.reshape(-1, 1, 1, 1)


def equalize_streams(m, cal: torch.Tensor) -> dict[int, torch.Tensor]:
    blocks = [(k, m.blocks[i]) for k, stage in enumerate(STAGES) for i in stage]
    tops = channel_tops(m, cal, blocks, torch.abs)
    scales = {}
    for k, stage in enumerate(STAGES):
        s = (tops[k].max() / tops[k].clamp(min=1e-12)).clamp(1, 64)
        for i in stage:
            m.blocks[i]._project_conv.weight.data *= s.reshape(-1, 1, 1, 1)
            m.blocks[i]._project_conv.bias.data *= s
        for i in stage[1:] + ([STAGES[k + 1][0]] if k + 1 < len(STAGES) else []):
            b = m.blocks[i]
            reader = b._expand_conv if b._block_args.expand_ratio != 1 else b._depthwise_conv
            reader.weight.data /= s.reshape(1, -1, 1, 1)
        scales[k] = s
    return scales


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--recipe", default="cpu", choices=["cpu", "tensorrt"], help="unsigned or signed activations")
    ap.add_argument("--layers", action="store_true", help="one row per conv with only its weights rounded")
    args = ap.parse_args()
    torch.set_num_threads(2)
    samples = mvtec.discover(args.data, [args.category], "train")[::7][:96]
    x = torch.from_numpy(mvtec.load_images(samples, Preprocess()))
    cal, ev = x[:64], x[64:]
    base = Lite0Features((256, 256), (8, 16))
    fold(base)
    ref = forward(base, ev)

    def row(name: str, feats: list[torch.Tensor], scales: dict | None = None) -> None:
        if scales:  # the taps unscaled, as the graph's FP32 Mul does
            feats = [feats[0] / scales[2].reshape(1, -1, 1, 1), feats[1] / scales[4].reshape(1, -1, 1, 1)]
        err = [float((g - f).norm() / f.norm()) for f, g in zip(ref, feats, strict=True)]
        print(f"{name:48s} stride 8 {err[0]:.3f}   stride 16 {err[1]:.3f}", flush=True)

    print(f"relative feature error, {len(ev)} training normals of {args.category}, {args.recipe} activations")
    for variant in ("plain", "depthwise eq", "depthwise + stream eq"):
        m = copy.deepcopy(base)
        if variant != "plain":
            equalize_depthwise(m, cal)
        scales = equalize_streams(m, cal) if "stream" in variant else None
        acts = Acts(m, cal, args.recipe == "tensorrt")
        w = copy.deepcopy(m)
        for conv, _ in conv_bn(w):
            round_weights(conv)
        row(f"{variant}: weights", forward(w, ev), scales)
        bc = bias_corrected(m, cal)
        row(f"{variant}: weights, bias-corrected", forward(bc, ev), scales)
        for groups in (("relu",), ("proj",), ("add",), ("relu", "proj", "add")):
            row(f"{variant}: activations {'+'.join(groups)}", forward(m, ev, acts.hooks(groups)), scales)
        row(f"{variant}: bias-corrected weights + activations", forward(bc, ev, Acts(bc, cal, acts.signed).hooks(
            ("relu", "proj", "add"))), scales)
    if args.layers:
        names = ["stem"] + [f"block {i} {k}" for i, b in enumerate(base.blocks)
                            for k in (["expand"] if b._block_args.expand_ratio != 1 else []) + ["depthwise", "project"]]
        for i, name in enumerate(names):
            m = copy.deepcopy(base)
            round_weights(conv_bn(m)[i][0])
            row(f"weights of {name} only", forward(m, ev))


if __name__ == "__main__":
    main()
