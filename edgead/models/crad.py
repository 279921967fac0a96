"""CRAD: Continuous Memory Representation for Anomaly Detection (Lee et al., ECCV 2024).

Defining idea: normal features live in *continuous* learnable grids. A local coordinate net maps
each feature vector to a 2-D coordinate into a local grid (C x 8 x 8); a global coordinate net maps
the pooled image feature to a coordinate into a global grid of 4 x 4 cells, each a whole C x h x w
map. Bilinear reads of both grids are concatenated and fused by MobileNetV3 blocks into a
reconstruction ``rec``; the refinement blend ``s = 0.3 m + 0.7 cos`` (m = [MSE <= 10]) gives
``rec' = s f + (1 - s) rec`` and the anomaly map is ``||rec' - f||`` over channels. Departure: when scoring, m
is a sigmoid of the same margin (``gate="smooth"``), not the paper's step; training keeps the step.

Sampling uses the exact tent-weight MatMul form of ``grid_sample(bilinear, zeros,
align_corners=False)`` (see ``layers.tent_weights``); ``sampling="grid_sample"`` is kept as the
reference. Edge size by default (Lite0, 6 blocks, expansion C); ``size="paper"`` gives 11 blocks
with expansion 4C as in the paper's code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edgead.backbones import build_backbone
from edgead.models.base import TRUNK, AnomalyModel, register_model
from edgead.models.layers import MapPost, MBv3Block, align_to_finest, tent_weights, tent_weights_2d


@dataclass
class CRADConfig:
    backbone: str = "lite0"
    strides: tuple[int, ...] = (8, 16)
    local_grid: int = 8
    global_grid: int = 4
    use_local: bool = True
    use_global: bool = True
    blend: bool = True
    # The blend's MSE gate m: "smooth" = sigmoid((0.5 - 0.05 MSE) / gate_width) when scoring, the paper's step while
    # training (it only weights the loss there); "step" = the paper's step always (runs saved before the option).
    gate: str = field(default="smooth", metadata={"choices": ("smooth", "step")})
    gate_width: float = 0.05
    # "edge": 6 blocks, expansion C; "paper": 11 blocks, expansion 4C
    size: str = field(default="edge", metadata={"choices": ("edge", "paper")})
    fusion_blocks: int | None = None
    expansion: int | None = None
    jitter_std: float = 0.05
    jitter_prob: float = 0.5
    sampling: str = field(default="tent", metadata={"choices": ("tent", "grid_sample")})  # grid_sample: reference
    smoothing: str = field(default="box", metadata={"choices": ("box", "gaussian", "none")})
    box_kernel: int = 21
    score_pool: int = 32


def _xavier_std(shape: tuple[int, ...]) -> float:
    receptive = math.prod(shape[2:])
    return math.sqrt(2.0 / (shape[1] * receptive + shape[0] * receptive))


@register_model
class CRAD(AnomalyModel):
    post_choices = {"box_kernel": (1, 5, 9, 13, 21, 31), "score_pool": (4, 8, 16, 32, 64)}  # chosen on validation
    name = "crad"
    Config = CRADConfig
    summary = "continuous memory: coordinates into learnable local and global grids (ECCV 2024)"
    cache_features = True
    # Coordinate nets, grid reads, blend and distance stay FP32 (methods brief, INT8 hazards). With the paper's
    # step gate the trunk up to the stride-8 tap (stem, blocks 0-4) stays FP32 under FP16 too: in FP16 it moved
    # normalised scores by 0.034 (magnetic_tile, edgead verify); with it in FP32, 0.0006.
    precision_scopes = {"fp16": ("backbone", "fusion", "out", TRUNK),
                        "int8": ("backbone", "fusion"), "sensitive": (TRUNK,)}

    def precision_scope_map(self) -> dict[str, list[str]]:
        """The trunk stays FP32 under FP16 only with the paper's step gate: with the smooth gate FP16 moved scores
        by at most 0.012 units with the whole backbone in FP16 (build split, magnetic_tile), 0.046 with the step."""
        scopes = super().precision_scope_map()
        if self.cfg.gate == "smooth":
            scopes["fp16"] = [s for s in self.precision_scopes["fp16"] if s != TRUNK]
        return scopes

    def __init__(self, cfg: CRADConfig, image_size: tuple[int, int]):
        super().__init__(cfg, image_size)
        if not (cfg.use_local or cfg.use_global):
            raise ValueError("CRAD needs the local grid, the global grid or both")
        self.backbone = build_backbone(cfg.backbone, image_size, cfg.strides)
        c = sum(self.backbone.channels)
        stride = min(cfg.strides)
        h, w = image_size[0] // stride, image_size[1] // stride
        self.feat_size = (h, w)
        self.channels = c
        gl, gg = cfg.local_grid, cfg.global_grid
        if cfg.use_local:
            self.local_coord = nn.Sequential(nn.Conv2d(c, c, 1), nn.Tanh(), nn.Conv2d(c, 2, 1), nn.Tanh())
            # Stored as (gl*gl, C): row-major over (y, x), ready for the MatMul read.
            self.local_grid = nn.Parameter(torch.randn(gl * gl, c) * _xavier_std((1, c, gl, gl)))
        if cfg.use_global:
            self.global_coord = nn.Sequential(nn.Linear(c, c), nn.Tanh(), nn.Linear(c, 2), nn.Tanh())
            self.global_grid = nn.Parameter(torch.randn(gg * gg, c * h * w) * _xavier_std((1, c * h * w, gg, gg)))
        n_in = c * (int(cfg.use_local) + int(cfg.use_global))
        blocks = cfg.fusion_blocks or (11 if cfg.size == "paper" else 6)
        expansion = cfg.expansion or (4 * c if cfg.size == "paper" else c)
        self.fusion = nn.Sequential(*[MBv3Block(n_in, expansion) for _ in range(blocks)])
        self.out = nn.Conv2d(n_in, c, 1, bias=False)
        self.post = MapPost(tuple(image_size), smoothing=cfg.smoothing, box_kernel=cfg.box_kernel,
                            score="pool_max", score_pool=cfg.score_pool, align_corners=True)
        for m in [*self.fusion.modules(), self.out, *(self.local_coord if cfg.use_local else []),
                  *(self.global_coord if cfg.use_global else [])]:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- features ----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-scale backbone features aligned to the finest stride and concatenated."""
        return torch.cat(align_to_finest(self.backbone(x)), dim=1)

    # -- grids ---------------------------------------------------------------------------------
    def read_local(self, coord: torch.Tensor) -> torch.Tensor:
        """coord (B, 2, h, w) in (-1, 1), order (x, y) -> (B, C, h, w)."""
        b, _, h, w = coord.shape
        g = self.cfg.local_grid
        if self.cfg.sampling == "grid_sample":
            grid = self.local_grid.t().reshape(1, self.channels, g, g).expand(b, -1, -1, -1)
            return F.grid_sample(grid, coord.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros",
                                 align_corners=False)
        wts = tent_weights_2d(coord[:, 0].reshape(b, h * w), coord[:, 1].reshape(b, h * w), g, g)
        return (wts @ self.local_grid).transpose(1, 2).reshape(b, self.channels, h, w)

    def read_global(self, coord: torch.Tensor) -> torch.Tensor:
        """coord (B, 2) -> one bilinear blend of whole-map prototypes, (B, C, h, w)."""
        b = coord.shape[0]
        g = self.cfg.global_grid
        h, w = self.feat_size
        if self.cfg.sampling == "grid_sample":
            grid = self.global_grid.t().reshape(1, -1, g, g)
            out = F.grid_sample(grid, coord.view(1, b, 1, 2), mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (1, C*h*w, B, 1)
            return out[0, :, :, 0].t().reshape(b, self.channels, h, w)
        wts = tent_weights(coord[:, 0], g).unsqueeze(1) * tent_weights(coord[:, 1], g).unsqueeze(2)
        return (wts.reshape(b, g * g) @ self.global_grid).reshape(b, self.channels, h, w)

    def reconstruct(self, f: torch.Tensor) -> torch.Tensor:
        parts = []
        if self.cfg.use_local:
            c_loc = self.local_coord(f)
            if self.training and self.cfg.jitter_std > 0 and torch.rand(()) < self.cfg.jitter_prob:
                c_loc = c_loc + torch.randn_like(c_loc) * self.cfg.jitter_std
            parts.append(self.read_local(c_loc))
        if self.cfg.use_global:
            parts.append(self.read_global(self.global_coord(f.mean(dim=(2, 3)))))
        z = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return self.out(self.fusion(z))

    def blend_factor(self, rec: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """s = 0.3 m + 0.7 cos, with m = [0.05 * MSE_c <= 0.5] (the paper's round(clamp(.)) form) while training.

        When scoring, ``gate="smooth"`` makes m a sigmoid of the same margin: with the step, a pixel whose MSE sits
        near the edge (the top percent of normal pixels do, and the image score is read there) jumps when any
        feature perturbation (INT8 or FP16 rounding, another resize filter) moves it across."""
        mse = (rec - f).pow(2).mean(dim=1, keepdim=True)
        if self.training or self.cfg.gate == "step":
            m = (0.05 * mse <= 0.5).to(f.dtype)
        else:
            m = torch.sigmoid((0.5 - 0.05 * mse) / self.cfg.gate_width)
        cos = F.cosine_similarity(rec, f, dim=1, eps=1e-6).unsqueeze(1)
        return 0.3 * m + 0.7 * cos

    def raw_map(self, f: torch.Tensor) -> torch.Tensor:
        """Anomaly map at feature resolution (B, 1, h, w): ``||rec' - f||``, computed as ``(1 - s) ||rec - f||``
        (the same value, since ``rec' - f = (1 - s)(rec - f)``; the graph then never forms ``rec'``)."""
        rec = self.reconstruct(f)
        dist = torch.linalg.vector_norm(rec - f, dim=1, keepdim=True)
        return (1.0 - self.blend_factor(rec, f)) * dist if self.cfg.blend else dist

    def refined(self, f: torch.Tensor) -> torch.Tensor:
        """The refined reconstruction ``rec' = s f + (1 - s) rec`` (``rec`` without the blend) that training fits."""
        rec = self.reconstruct(f)
        if not self.cfg.blend:
            return rec
        s = self.blend_factor(rec, f)
        return s * f + (1.0 - s) * rec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.from_features(self.encode(x))

    def from_features(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.post(self.raw_map(f))

    @classmethod
    def upgrade_config(cls, d: dict) -> dict:
        """Runs saved before the smooth gate were trained, chosen and exported with the step."""
        return {"gate": "step", **d}

    # -- training ------------------------------------------------------------------------------
    def training_step(self, feats: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        rec = self.refined(feats)
        return {"loss": F.mse_loss(rec, feats)}

    def param_groups(self, train_cfg: dict) -> list[dict]:
        grids = [p for n, p in self.named_parameters() if n.endswith("_grid")]
        rest = [p for n, p in self.named_parameters() if p.requires_grad and not n.endswith("_grid")]
        return [{"params": grids, "lr": train_cfg["grid_lr"], "name": "grids"},
                {"params": rest, "lr": train_cfg["lr"], "name": "rest"}]

    @classmethod
    def train_defaults(cls) -> dict:
        # Paper: AdamW, grids lr 0.1, rest 1e-3, StepLR(40, 0.1), 50 epochs, batch 64 (4 GPUs), clip 0.1.
        return {"epochs": 50, "batch_size": 16, "lr": 1e-3, "grid_lr": 0.1, "weight_decay": 0.01,
                "lr_step": 40, "lr_gamma": 0.1, "grad_clip": 0.1}
