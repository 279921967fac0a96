"""The model interface and registry.

A model is a torch module mapping a normalised image batch (B, 3, H, W) to
``(anomaly_map (B, 1, H, W), score (B,))`` with post-processing included, plus its own training
logic (``configure_training``, ``on_epoch_start``, ``training_step``, ``training_state``,
``param_groups``, ``train_defaults``). The generic loop in ``edgead.train`` knows nothing else about it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, ClassVar

import torch
from torch import nn

from edgead.errors import EdgeadError

_REGISTRY: dict[str, type[AnomalyModel]] = {}
TRUNK = "-backbone/@sensitive"  # in precision_scopes: keep the backbone's sensitive region FP32


class AnomalyModel(nn.Module):
    """Base class. Subclasses set ``name``, ``Config`` (a dataclass) and ``TrainDefaults``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = object
    summary: ClassVar[str] = ""
    # True when training needs only frozen-backbone features of clean images, so the loop may
    # compute them once and cache them (``encode`` output is then passed to ``training_step``).
    cache_features: ClassVar[bool] = False
    # True when some training steps leave trainable parameters unused (DistributedDataParallel must then
    # look for them every step; see edgead.distributed).
    steps_leave_parameters_unused: ClassVar[bool] = False
    # Post-processing attributes (of ``self.post`` and the config) chosen after training on the validation
    # split, with their candidates (edgead.post_select); empty: the configured post-processing is kept.
    post_choices: ClassVar[dict[str, tuple]] = {}
    # Named config overrides trained briefly and chosen between on the validation split before the full training
    # (edgead.variant_select); the first is the configured form. Empty: no choice.
    variants: ClassVar[dict[str, dict]] = {}
    # Top-level submodules whose nodes may run in reduced precision; everything else stays FP32
    # (distance heads, normalisations, smoothing, score). Read by edgead.precision via the bundle. Optional
    # "sensitive": '-prefix' entries (``TRUNK``) naming the region the INT8 fallback leaves in float first.
    precision_scopes: ClassVar[dict[str, tuple[str, ...]]] = {"fp16": ("backbone",), "int8": ("backbone",)}

    def precision_scope_map(self) -> dict[str, list[str]]:
        """``precision_scopes`` with the ``TRUNK`` marker replaced by this backbone's sensitive region."""
        region = [f"-backbone/{m}" for m in getattr(self.backbone, "sensitive_region", ())]
        return {k: [x for s in v for x in (region if s == TRUNK else [s])] for k, v in self.precision_scopes.items()}

    def __init__(self, cfg: Any, image_size: tuple[int, int]):
        super().__init__()
        self.cfg = cfg
        self.image_size = tuple(image_size)

    # -- inference -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> Any:
        """Frozen backbone features of a normalised batch."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def from_features(self, f: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` after ``encode``: (map, score) of frozen-backbone features. A model with ``cache_features``
        that defines it has its validation set scored on features computed once; without it, every epoch
        runs the whole model on the images (plugins written before it existed)."""
        raise NotImplementedError

    @classmethod
    def upgrade_config(cls, d: dict) -> dict:
        """A saved run's model config brought up to this version (keys added since keep the old behaviour)."""
        return d

    # -- training --------------------------------------------------------------------------
    @classmethod
    def data_config(cls, categories: list[str], n_train: int) -> dict:
        """Config entries that follow from the training data (sizes of data-derived buffers)."""
        return {}

    def prepare(self, data: Any, categories: list[str]) -> dict | None:
        """Once before training, with the training data (features if cached) and each sample's category."""
        return None

    def configure_training(self, train_cfg: dict) -> None:
        """Once before training, with the final training settings (e.g. where a second stage starts)."""

    def on_epoch_start(self, epoch: int) -> None:
        """At the start of every epoch (0-based, also the first epoch after a resume)."""

    def training_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """One batch (``step``: its index within the epoch); a dict with at least ``loss`` to minimise."""
        raise NotImplementedError

    def training_state(self) -> dict:
        """Training-only state a resume needs besides weights and optimiser (saved in the checkpoint)."""
        return {}

    def load_training_state(self, state: dict) -> None:
        """Restore what ``training_state`` returned."""

    def param_groups(self, train_cfg: dict) -> list[dict]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": train_cfg["lr"]}]

    @classmethod
    def train_defaults(cls) -> dict:
        """Default training settings (epochs, batch size, learning rates, schedule, clip)."""
        return {"epochs": 50, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01,
                "lr_step": 40, "lr_gamma": 0.1, "grad_clip": 0.1}

    # -- description -------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything but the frozen backbone (which is rebuilt from its registry)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}


def register_model(cls: type[AnomalyModel]) -> type[AnomalyModel]:
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    from edgead.models import ccad, crad, crr  # noqa: F401  (register themselves)
    from edgead.plugins import load_plugins

    load_plugins()


def available_models() -> dict[str, str]:
    _load_builtin()
    return {name: cls.summary for name, cls in sorted(_REGISTRY.items())}


def model_class(name: str) -> type[AnomalyModel]:
    _load_builtin()
    if name not in _REGISTRY:
        raise EdgeadError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value (from JSON or --set) has the field's declared type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def config_from_dict(cls: type[AnomalyModel], d: dict) -> Any:
    """The model's Config from a mapping: unknown keys, wrong types and values outside a field's
    ``choices`` (dataclass field metadata) are one-line errors naming the key."""
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise EdgeadError(f"model {cls.name!r}: unknown config key {unknown[0]!r}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls.Config)
    conv: dict[str, Any] = {}
    for k, v in d.items():
        if not _fits(v, hints[k]):
            raise EdgeadError(f"model {cls.name!r}: {k}={v!r} is not {_type_name(hints[k])} (default "
                              f"{fields[k].default!r})")
        choices = fields[k].metadata.get("choices")
        if choices and v not in choices:
            raise EdgeadError(f"model {cls.name!r}: {k}={v!r}; choose {', '.join(map(str, choices))}")
        conv[k] = float(v) if hints[k] is float else tuple(v) if isinstance(v, list) else v
    return cls.Config(**conv)


def build_model(name: str, image_size: tuple[int, int], config: dict | None = None) -> AnomalyModel:
    """The model from its name and config; a config the model's own checks refuse is a one-line error."""
    cls = model_class(name)
    cfg = config_from_dict(cls, config or {})
    try:
        return cls(cfg, image_size)
    except ValueError as e:  # constructors raise ValueError only for settings out of range
        raise EdgeadError(f"model {name!r}: {e} (change the --set value)") from e

