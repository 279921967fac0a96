"""A fourth model in one file, registered only in the tests: per-pixel distance of the frozen Lite0
features to a learned mean feature (with a learned per-channel scale). Exercises the whole model
contract: config, training hooks, state a resume needs, precision scopes, export, INT8, inspect."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edgead.backbones import build_backbone
from edgead.models.base import TRUNK, AnomalyModel, register_model
from edgead.models.layers import MapPost, align_to_finest


@dataclass
class TinyMeanConfig:
    backbone: str = "lite0"
    strides: tuple[int, ...] = (8, 16)
    box_kernel: int = 5


@register_model
class TinyMean(AnomalyModel):
    name = "tinymean"
    Config = TinyMeanConfig
    summary = "test-only: distance to a learned mean feature"
    cache_features = True
    precision_scopes = {"fp16": ("backbone", TRUNK), "int8": ("backbone", "proj")}

    def __init__(self, cfg: TinyMeanConfig, image_size: tuple[int, int]):
        super().__init__(cfg, image_size)
        self.backbone = build_backbone(cfg.backbone, image_size, cfg.strides)
        c = sum(self.backbone.channels)
        self.proj = nn.Conv2d(c, 32, 1)
        self.mean = nn.Parameter(torch.zeros(1, 32, 1, 1))
        self.post = MapPost(tuple(image_size), smoothing="box", box_kernel=cfg.box_kernel, score_pool=8)
        self.epochs_seen = 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(align_to_finest(self.backbone(x)), dim=1)

    def raw_map(self, f: torch.Tensor) -> torch.Tensor:
        return ((self.proj(f) - self.mean) ** 2).mean(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.post(self.raw_map(self.encode(x)))

    def on_epoch_start(self, epoch: int) -> None:
        self.epochs_seen += 1

    def training_state(self) -> dict:
        return {"epochs_seen": self.epochs_seen}

    def load_training_state(self, state: dict) -> None:
        self.epochs_seen = int(state.get("epochs_seen", 0))

    def training_step(self, feats: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        # pull the projected normals to the mean, keep the projection from collapsing to zero
        p = self.proj(feats)
        spread = (p.var(dim=(0, 2, 3)) - 1.0).abs().mean()
        return {"loss": ((p - self.mean) ** 2).mean() + spread}

    @classmethod
    def train_defaults(cls) -> dict:
        return {"epochs": 2, "batch_size": 8, "lr": 1e-2, "weight_decay": 0.0, "lr_step": 10, "lr_gamma": 0.5,
                "grad_clip": 1.0}
