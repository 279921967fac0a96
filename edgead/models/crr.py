"""CRR: Collaborative Reconstruction and Repair for multi-class anomaly detection, edge form.

Defining ideas kept (methods brief, section 2):
(i) a frozen encoder and a decoder trained to *reconstruct* normal features and to *repair*
synthesised anomalies back to the clean features, ``L = L_hm(E(x), D(x)) + L_hm(E(x), D(x~))``, so
it cannot learn the identity; (ii) feature-level random masking in the bottleneck (element-wise
keep probability 0.6 while training; the expectation ``0.6 x`` at inference, so exported graphs are
deterministic); (iii) a segmentation head on ``cat_g[-l2n(e_g) * l2n(d_g)]``, trained with focal
loss on the synthetic masks, fused as ``A = 0.7 cos-map + 0.3 P(defect)``, Gaussian smoothing
(5 taps, sigma 4), image score = mean of the top 1 % of pixels (the configured post-processing; a run
chooses its own on validation, ``post_choices``). Two stages as in the paper: reconstruct+repair, then
the segmentation head with the rest frozen; one command.

Edge deviations: Lite0 encoder (the paper's DINOv2 ViT-B cannot be loaded offline), groups = the
stride-8 features and the upsampled stride-16 features (the paper: means of ViT layers 2-5 and 6-9),
a conv decoder of MobileNetV3 blocks (no attention, so no Einsum / FP16 normaliser hazards), a
light segmentation head (methods brief 2.8), L2-normalisation eps 1e-6 (FP16-representable).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edgead.backbones import build_backbone
from edgead.models.base import TRUNK, AnomalyModel, register_model
from edgead.models.layers import MapPost, MBv3Block, align_to_finest

EPS = 1e-6  # FP16-representable (the paper's 1e-12 underflows to 0 in FP16)


@dataclass
class CRRConfig:
    backbone: str = "lite0"
    strides: tuple[int, ...] = (8, 16)
    dim: int = 192  # bottleneck / decoder width
    blocks: int = 4  # decoder blocks; the first half feeds the deep group, the second half the shallow one
    keep_prob: float = 0.6  # feature-level masking (1.0 = off)
    repair: bool = True  # the repair term on synthetic anomalies (False = reconstruction only)
    seg: bool = True  # segmentation head (False = cosine map only)
    alpha: float = 0.7  # A = alpha * cos-map + (1 - alpha) * P(defect)
    seg_width: int = 64
    texture_dir: str | None = None  # None: procedural textures
    foreground: str = field(default="all", metadata={"choices": ("all", "auto")})  # "all" (textures) or "auto"
    smoothing: str = field(default="gaussian", metadata={"choices": ("box", "gaussian", "none")})
    sigma: float = 4.0
    gauss_size: int = 5
    topk_ratio: float = 0.01


def l2n(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x, dim=1, eps=EPS)


class SegHead(nn.Module):
    """1x1 -> 2 x conv3x3 at feature size -> x2 upsample -> conv3x3 -> 1x1 to 2 classes (logits)."""

    def __init__(self, c_in: int, width: int):
        super().__init__()

        def cbr(i: int, o: int, k: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

        self.low = nn.Sequential(*cbr(c_in, width, 1), *cbr(width, width, 3), *cbr(width, width, 3))
        self.high = nn.Sequential(*cbr(width, width // 2, 3), nn.Conv2d(width // 2, 2, 1))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        x = self.low(x)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
        return F.interpolate(self.high(x), size=size, mode="bilinear", align_corners=True)


def focal_loss(logits: torch.Tensor, mask: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss on the 2-class softmax against a binary mask (gamma 2, alpha 1, as the paper)."""
    logp = F.log_softmax(logits, dim=1)
    target = (mask > 0.5).long()
    logp_t = logp.gather(1, target.unsqueeze(1)).squeeze(1)
    return (-(1 - logp_t.exp()).pow(gamma) * logp_t).mean()


def global_cosine_hm(enc: list[torch.Tensor], dec: list[torch.Tensor], p: float) -> torch.Tensor:
    """Per group: 1 - cos of the flattened maps (encoder side fixed); gradients of the easiest points
    (point distance below the p-quantile) are scaled by 0.1 (the paper's hard mining)."""
    loss = enc[0].new_zeros(())
    for e, d in zip(enc, dec, strict=True):
        e = e.detach()
        if p > 0 and d.requires_grad:
            with torch.no_grad():
                point = 1 - F.cosine_similarity(e, d, dim=1, eps=EPS)
                thr = torch.quantile(point.flatten().float(), p)
                scale = torch.where(point < thr, 0.1, 1.0).unsqueeze(1)
            d.register_hook(lambda g, s=scale: g * s.to(g.dtype))  # (bf16 autocast: keep the gradient dtype)
        loss = loss + (1 - F.cosine_similarity(e.flatten(1), d.flatten(1), dim=1, eps=EPS)).mean()
    return loss / len(enc)


@register_model
class CRR(AnomalyModel):
    name = "crr"
    Config = CRRConfig
    summary = "collaborative reconstruction and repair + synthetic-mask segmentation head (2025)"
    cache_features = False  # synthetic anomalies are drawn on the images every step
    steps_leave_parameters_unused = True  # stage 1 does not use the segmentation head, stage 2 only uses it
    # Chosen on validation (edgead.post_select): the Gaussian's width at sigma 4 (1 = none, 5 = the paper's) and
    # the top share of pixels whose mean is the image score (defects of a few pixels may want less than the 1 %).
    post_choices = {"gauss_size": (1, 5, 9, 17, 25), "topk_ratio": (0.001, 0.003, 0.01, 0.03, 0.1)}
    # Cosine map, L2 normalisations, the seg input product and the fusion stay FP32 (methods brief 2.7).
    # The trunk up to the stride-8 tap stays FP32 under FP16 for the same reason as CRAD's.
    # INT8 takes the projections and the segmentation head's convolutions too (split, 10-epoch magnetic_tile run,
    # trunk FP32, PTQ + bias correction: score error 0.037 -> 0.030, INT8 MACs 73 % -> 88 %).
    precision_scopes = {"fp16": ("backbone", "bottleneck", "decoder", "proj", "seg_head", TRUNK),
                        "int8": ("backbone", "bottleneck", "decoder", "proj", "seg_head"), "sensitive": (TRUNK,)}

    def __init__(self, cfg: CRRConfig, image_size: tuple[int, int]):
        super().__init__(cfg, image_size)
        self.backbone = build_backbone(cfg.backbone, image_size, cfg.strides)
        chans = list(self.backbone.channels)
        c, d = sum(chans), cfg.dim
        self.bottleneck = nn.Sequential(nn.Conv2d(c, 2 * d, 1), nn.GELU(), nn.Conv2d(2 * d, d, 1))
        self.decoder = nn.ModuleList([MBv3Block(d, 2 * d) for _ in range(cfg.blocks)])
        # decoder groups, reversed as in the paper: early blocks -> deep encoder group, late -> shallow
        self.proj = nn.ModuleList([nn.Conv2d(d, ch, 1) for ch in reversed(chans)])
        self.seg_head = SegHead(c, cfg.seg_width) if cfg.seg else None
        self.post = MapPost(tuple(image_size), smoothing=cfg.smoothing, sigma=cfg.sigma, gauss_size=cfg.gauss_size,
                            score="topk", topk_ratio=cfg.topk_ratio, align_corners=True)
        for m in [*self.bottleneck.modules(), *self.decoder.modules(), *self.proj.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.01, a=-0.03, b=0.03)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self._iter, self._epoch, self._seg_from_epoch = 0, 0, 1 << 30
        self._seg_from_epoch = 10**9

    # -- features --------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder groups at stride 8: [shallow (stride 8), deep (stride 16, upsampled)]."""
        return align_to_finest(self.backbone(x))

    def decode(self, enc: list[torch.Tensor]) -> list[torch.Tensor]:
        z = torch.cat(enc, dim=1)
        if self.training and self.cfg.keep_prob < 1.0:
            z = z * (torch.rand_like(z) < self.cfg.keep_prob).to(z.dtype)
        else:
            z = z * self.cfg.keep_prob  # the mask's expectation: deterministic, no random op exported
        z = self.bottleneck(z)
        outs = []
        for blk in self.decoder:
            z = blk(z)
            outs.append(z)
        half = len(outs) // 2
        groups = [torch.stack(outs[:half]).mean(0), torch.stack(outs[half:]).mean(0)]  # early, late
        deep, shallow = self.proj[0](groups[0]), self.proj[1](groups[1])
        return [shallow, deep]  # aligned with encode()

    def cos_map(self, enc: list[torch.Tensor], dec: list[torch.Tensor]) -> torch.Tensor:
        maps = [1 - (l2n(e) * l2n(d)).sum(1, keepdim=True) for e, d in zip(enc, dec, strict=True)]
        return torch.stack(maps).mean(0)

    def seg_logits(self, enc: list[torch.Tensor], dec: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat([-l2n(e) * l2n(d) for e, d in zip(enc, dec, strict=True)], dim=1)
        return self.seg_head(x, self.image_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encode(x)
        dec = self.decode(enc)
        m = F.interpolate(self.cos_map(enc, dec), size=self.image_size, mode="bilinear", align_corners=True)
        if self.seg_head is not None:
            prob = torch.softmax(self.seg_logits(enc, dec), dim=1)[:, 1:2]
            m = self.cfg.alpha * m + (1 - self.cfg.alpha) * prob
        return self.post(m)

    # -- training ------------------------------------------------------------------------------
    def _synthesize(self, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        from edgead.data.anomaly_synth import Synthesizer

        if not hasattr(self, "_synth"):
            self._synth = Synthesizer(self.cfg.texture_dir, self.cfg.foreground)
        mean = torch.tensor(self.backbone.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.backbone.std).view(1, 3, 1, 1)
        host = x.detach().cpu()  # the synthesizer works on host images (numpy)
        rgb = ((host * std + mean).clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        syn, masks = self._synth.batch(rgb, seed)
        xs = (torch.from_numpy(syn).permute(0, 3, 1, 2).float() / 255 - mean) / std
        return xs.to(x.device), torch.from_numpy(masks).to(x.device)

    def configure_training(self, train_cfg: dict) -> None:
        # stage 2 = the last seg_epochs epochs, at most half of them (short runs get both stages)
        seg_epochs = min(train_cfg.get("seg_epochs", 0), train_cfg["epochs"] // 2) if self.seg_head is not None else 0
        self._seg_from_epoch = train_cfg["epochs"] - seg_epochs

    def on_epoch_start(self, epoch: int) -> None:
        self._epoch = epoch

    def training_state(self) -> dict:
        return {"iter": self._iter}  # the hard-mining warm-up goes on where it stopped after a resume

    def load_training_state(self, state: dict) -> None:
        self._iter = int(state.get("iter", 0))

    def training_step(self, x: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        epoch = self._epoch
        step = epoch * 100000 + step  # the synthesis seed of this batch (as runs before this interface had it)
        self._iter += 1
        with torch.no_grad():
            enc = self.encode(x)
        if epoch < self._seg_from_epoch:  # stage 1: reconstruct + repair
            p = 0.9 * min(1.0, self._iter / 1000)
            rec = global_cosine_hm(enc, self.decode(enc), p)
            out = {"reconstruct": rec.detach()}
            loss = rec
            if self.cfg.repair:
                xs, _ = self._synthesize(x, seed=step)
                with torch.no_grad():
                    enc_s = self.encode(xs)
                rep = global_cosine_hm(enc, self.decode(enc_s), p)  # repaired towards the CLEAN features
                loss = loss + rep
                out["repair"] = rep.detach()
            return {"loss": loss, **out}
        # stage 2: segmentation head only, the rest frozen and deterministic
        for m in (self.bottleneck, self.decoder, self.proj):
            m.eval()
        xs, masks = self._synthesize(x, seed=step)
        with torch.no_grad():
            enc_s = self.encode(xs)
            dec_s = self.decode(enc_s)
        seg = focal_loss(self.seg_logits(enc_s, dec_s), masks)
        return {"loss": seg, "segment": seg.detach()}

    def param_groups(self, train_cfg: dict) -> list[dict]:
        rest = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith(("seg_head.",
                                                                                               "backbone."))]
        groups = [{"params": rest, "lr": train_cfg["lr"], "name": "reconstruct"}]
        if self.seg_head is not None:
            groups.append({"params": list(self.seg_head.parameters()), "lr": train_cfg["seg_lr"], "name": "seg"})
        return groups

    @classmethod
    def train_defaults(cls) -> dict:
        # Paper: stage 1 StableAdamW lr 2e-3 (warm cosine to 2e-4), wd 1e-4, clip 0.1; stage 2 Adam lr 1e-4.
        # Here: the last ``seg_epochs`` epochs are stage 2.
        return {"epochs": 30, "seg_epochs": 8, "batch_size": 16, "lr": 1e-3, "seg_lr": 1e-3, "weight_decay": 1e-4,
                "lr_step": 18, "lr_gamma": 0.2, "grad_clip": 0.1}

