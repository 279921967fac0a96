"""Backbone registry: a name maps to a factory returning a frozen multi-scale feature extractor.

A backbone is an ``nn.Module`` whose ``forward(x)`` returns a list of feature maps (one per
requested stride) and which exposes ``channels`` (list[int]), ``strides`` (list[int]), ``mean``
and ``std`` (the input scaling its weights expect) and ``sensitive_region`` (its submodules whose
reduced precision moves anomaly maps most; models keep them FP32 under FP16 with the ``TRUNK``
scope marker). Register your own with::

    @register_backbone("my_net")
    def build(image_size, strides): ...
"""

from __future__ import annotations

from collections.abc import Callable

from edgead.errors import EdgeadError

_REGISTRY: dict[str, Callable] = {}


def register_backbone(name: str) -> Callable:
    def deco(factory: Callable) -> Callable:
        _REGISTRY[name] = factory
        return factory
    return deco


def available_backbones() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def build_backbone(name: str, image_size: tuple[int, int], strides: tuple[int, ...] = (8, 16)):
    _load_builtin()
    if name not in _REGISTRY:
        raise EdgeadError(f"unknown backbone {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](image_size=image_size, strides=tuple(strides))


def _load_builtin() -> None:
    from edgead.backbones import lite0  # noqa: F401  (registers itself)
    from edgead.plugins import load_plugins

    load_plugins()
