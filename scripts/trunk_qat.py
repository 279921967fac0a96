"""Can the Lite0 trunk's own weights learn to quantize (QAT of the trunk)? A simulation, to decide whether to build it.

The frozen trunk (stem, blocks 0-10, BatchNorm folded) is fine-tuned so that its simulated INT8 features (per-channel
weights, per-tensor activations at min/max ranges as ``trunk_int8.py`` simulates them, straight-through rounding) match
its own float features, while those stay near the pretrained ones: loss = parity (relative squared error, INT8 vs
float, the same weights) + lam * drift (float vs pretrained float), both taps. Training normals only: 64 calibrate the
ranges (again every 25 steps), 32 others measure, up to 400 disjoint ones train. Prints parity and drift (relative
error, stride 8 / stride 16) at step 0 and every 100 steps; nothing is chosen here.

    .venv/bin/python scripts/trunk_qat.py --data ../shared/datasets --category magnetic_tile --steps 200 --lam 1
"""

from __future__ import annotations

import argparse
import copy
import sys
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from trunk_int8 import Acts, conv_bn, fold, forward, weight_grid  # noqa: E402

from edgead.backbones.lite0 import Lite0Features  # noqa: E402
from edgead.data import mvtec  # noqa: E402
from edgead.data.preprocess import Preprocess  # noqa: E402


def fake_weight(w: torch.Tensor, ste: bool) -> torch.Tensor:
    """``trunk_int8.weight_grid``, straight-through when ``ste``."""
    q = weight_grid(w.detach())
    return w + (q - w).detach() if ste else q


class Trunk:
    """The trunk being tuned, run in float or simulated INT8."""

    GROUPS = ("relu", "proj", "add")

    def __init__(self, base: Lite0Features, signed: bool):
        self.m, self.signed = copy.deepcopy(base), signed
        self.convs = [c for c, _ in conv_bn(self.m)]
        for c in self.convs:
            c.weight = torch.nn.Parameter(c.weight.detach().clone())
            c.bias = torch.nn.Parameter(c.bias.detach().clone())
        self.params = [p for c in self.convs for p in (c.weight, c.bias)]
        for p in self.params:
            p.requires_grad_(True)

    def ranges(self, cal: torch.Tensor) -> Acts:
        """The activation ranges on ``cal`` (``trunk_int8.Acts``), whose hooks quantize at them."""
        return Acts(self.m, cal, self.signed)

    @contextmanager
    def quantized(self, acts: Acts, grad: bool):
        """Inside: per-channel INT8 weights and ``acts``' activation quantizers (straight-through when ``grad``)."""
        saved = []
        for c in self.convs:
            saved.append((c, c.weight))
            w = c.weight
            del c.weight
            c.weight = fake_weight(w, grad)
        hooks = [mod.register_forward_hook(fn) for mod, fn in acts.hooks(self.GROUPS, ste=grad)]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            for c, w in saved:
                del c.weight
                c.weight = w

    def __call__(self, x: torch.Tensor, quant: bool, acts: Acts) -> list[torch.Tensor]:
        """Features with gradients (a training batch)."""
        if not quant:
            return self.m(x)
        with self.quantized(acts, True):
            return self.m(x)

    def features(self, x: torch.Tensor, quant: bool, acts: Acts) -> list[torch.Tensor]:
        """Features of a whole set, without gradients (``trunk_int8.forward``)."""
        if not quant:
            return forward(self.m, x)
        with self.quantized(acts, False):
            return forward(self.m, x)


def rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> list[float]:
    return [float((p - q).norm() / q.norm()) for p, q in zip(a, b, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lam", type=float, default=1.0, help="weight of the drift from the pretrained features")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--recipe", default="cpu", choices=["cpu", "tensorrt"], help="unsigned or signed activations")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    samples = mvtec.discover(a.data, [a.category], "train")
    held = samples[::7][:96]
    pre = Preprocess()
    x = torch.from_numpy(mvtec.load_images(held, pre))
    cal, ev = x[:64], x[64:]
    train = torch.from_numpy(mvtec.load_images([s for s in samples if s not in held][:400], pre))
    print(f"{a.category}: calibration {len(cal)}, measured {len(ev)}, training {len(train)} normals", flush=True)
    base = Lite0Features((256, 256), (8, 16))
    fold(base)
    pretrained = forward(base, ev)
    trunk = Trunk(base, a.recipe == "tensorrt")

    def measure(tag: str) -> Acts:
        r = trunk.ranges(cal)
        f, q = trunk.features(ev, False, r), trunk.features(ev, True, r)
        p, d = rel(q, f), rel(f, pretrained)
        print(f"{tag}: parity (INT8 sim vs own float) s8 {p[0]:.4f} s16 {p[1]:.4f} | drift (float vs pretrained) "
              f"s8 {d[0]:.4f} s16 {d[1]:.4f}", flush=True)
        return r

    opt = torch.optim.Adam(trunk.params, lr=a.lr)
    ranges = measure("step 0")
    gen = torch.Generator().manual_seed(0)
    for step in range(1, a.steps + 1):
        xb = train[torch.randint(len(train), (a.batch,), generator=gen)]
        with torch.no_grad():
            target = base(xb)
        f, q = trunk(xb, False, ranges), trunk(xb, True, ranges)
        parity = sum(((qq - ff) ** 2).sum() / (ff.detach() ** 2).sum() for qq, ff in zip(q, f, strict=True))
        drift = sum(((ff - t) ** 2).sum() / (t ** 2).sum() for ff, t in zip(f, target, strict=True))
        opt.zero_grad()
        (parity + a.lam * drift).backward()
        opt.step()
        if step % 25 == 0:
            print(f"step {step}: parity {parity.item():.5f} drift {drift.item():.5f} (training batch)", flush=True)
            ranges = measure(f"step {step}") if step % 100 == 0 else trunk.ranges(cal)


if __name__ == "__main__":
    main()
