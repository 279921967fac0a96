"""Engines share one small interface behind a registry: open a bundle graph (or the torch reference),
infer on a preprocessed batch, run any number of images in the graph's batch, describe, close."""

from __future__ import annotations

from edgead.backends.base import (
    Backend,
    EngineOptions,
    available_backends,
    backend_class,
    open_engine,
    register_backend,
)

__all__ = ["Backend", "EngineOptions", "available_backends", "backend_class", "open_engine", "register_backend"]
