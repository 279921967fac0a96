"""Parameter and MAC counts of a model's inference path (torch's FLOP counter; MACs = FLOPs / 2)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from edgead.models import AnomalyModel


def count_params(model: AnomalyModel) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    backbone = sum(p.numel() for n, p in model.named_parameters() if n.startswith("backbone."))
    return {"params_total": total, "params_backbone": backbone, "params_head": total - backbone}


def count_gmacs(model: AnomalyModel) -> dict[str, float]:
    x = torch.zeros(1, 3, *model.image_size)
    model = model.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as total:
            model(x)
        with FlopCounterMode(display=False) as bb:
            model.encode(x)
    t, b = total.get_total_flops() / 2e9, bb.get_total_flops() / 2e9
    return {"gmacs_total": round(t, 4), "gmacs_backbone": round(b, 4), "gmacs_head": round(t - b, 4)}
