"""Building blocks shared by the models: exact tent sampling, MobileNetV3 blocks, post-processing."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------------
# Bilinear sampling as MatMul ("tent" weights). Equal to F.grid_sample(mode="bilinear",
# padding_mode="zeros", align_corners=False) for a grid of n cells, and exports as
# Sub/Abs/Clip/Mul/MatMul only (TensorRT runs it in INT8/FP16 paths where GridSample cannot).
# ---------------------------------------------------------------------------------------------
def tent_weights(coord: torch.Tensor, n: int) -> torch.Tensor:
    """coord in [-1, 1] (any shape) -> weights (..., n): w_i = max(0, 1 - |p - i|)."""
    p = ((coord + 1.0) * n - 1.0) * 0.5
    idx = torch.arange(n, dtype=coord.dtype, device=coord.device)
    return torch.clamp(1.0 - (p.unsqueeze(-1) - idx).abs(), min=0.0)


def tent_weights_2d(x: torch.Tensor, y: torch.Tensor, nx: int, ny: int) -> torch.Tensor:
    """(…,) x/y coordinates -> (…, ny * nx) bilinear weights, row-major over (y, x)."""
    wx, wy = tent_weights(x, nx), tent_weights(y, ny)
    w = wy.unsqueeze(-1) * wx.unsqueeze(-2)
    return w.reshape(*w.shape[:-2], ny * nx)


class HSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * F.relu6(x + 3.0) / 6.0


class HSigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduction: int = 4):
        super().__init__()
        self.reduce = nn.Conv2d(c, max(8, c // reduction), 1)
        self.expand = nn.Conv2d(max(8, c // reduction), c, 1)
        self.gate = HSigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.expand(F.relu(self.reduce(s))))


class MBv3Block(nn.Module):
    """MobileNetV3 bottleneck: 1x1 expand, BN, h-swish, 3x3 depthwise, BN, SE, h-swish, 1x1, BN, residual."""

    def __init__(self, c: int, expansion: int, se: bool = True):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, expansion, 1, bias=False), nn.BatchNorm2d(expansion), HSwish(),
            nn.Conv2d(expansion, expansion, 3, padding=1, groups=expansion, bias=False), nn.BatchNorm2d(expansion),
            SqueezeExcite(expansion) if se else nn.Identity(), HSwish(),
            nn.Conv2d(expansion, c, 1, bias=False), nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def gaussian_kernel(sigma: float, truncate: float = 4.0, size: int = 0) -> torch.Tensor:
    """1-D normalised Gaussian; ``size`` > 0 fixes the width (the CRR paper: 5 taps at sigma 4)."""
    radius = size // 2 if size > 0 else max(1, int(truncate * sigma + 0.5))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


class MapPost(nn.Module):
    """Anomaly-map post-processing kept inside the exported graph.

    upsample (bilinear) to the input size -> smoothing (box or Gaussian) -> image score
    (max of a k x k mean, or mean of the top ratio of pixels).
    """

    def __init__(self, size: tuple[int, int], smoothing: str = "box", box_kernel: int = 21,
                 sigma: float = 4.0, score: str = "pool_max", score_pool: int = 32,
                 topk_ratio: float = 0.01, align_corners: bool = True, gauss_size: int = 0):
        super().__init__()
        self.size = tuple(size)
        self.smoothing, self.box_kernel, self.score_mode = smoothing, box_kernel, score
        self.score_pool, self.align_corners = score_pool, align_corners
        # Plain attributes, read at every call, so a setting chosen on validation (post_select) is set in place.
        self.sigma, self.gauss_size, self.topk_ratio = sigma, gauss_size, topk_ratio

    @property
    def topk(self) -> int:
        """How many of the map's pixels the top-ratio score averages."""
        return max(1, int(math.ceil(self.topk_ratio * self.size[0] * self.size[1])))

    def forward(self, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if m.shape[-2:] != self.size:
            m = F.interpolate(m, size=self.size, mode="bilinear", align_corners=self.align_corners)
        if self.smoothing == "box" and self.box_kernel > 1:
            k = self.box_kernel
            m = F.avg_pool2d(m, k, stride=1, padding=k // 2, count_include_pad=False)
        elif self.smoothing == "gaussian" and self.gauss_size != 1:
            k = gaussian_kernel(self.sigma, size=self.gauss_size).to(m)
            r = k.numel() // 2
            m = F.conv2d(m, k.view(1, 1, 1, -1), padding=(0, r))
            m = F.conv2d(m, k.view(1, 1, -1, 1), padding=(r, 0))
        if self.score_mode == "topk":
            score = m.flatten(1).topk(self.topk, dim=1).values.mean(dim=1)
        else:
            p = min(self.score_pool, *self.size)
            score = F.avg_pool2d(m, p, stride=1).flatten(1).amax(dim=1)
        return m, score


def align_to_finest(feats: list[torch.Tensor]) -> list[torch.Tensor]:
    """Multi-scale features upsampled (bilinear, align_corners) to the first (finest) map's size."""
    size = feats[0].shape[-2:]
    return [f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear", align_corners=True)
            for f in feats]
