"""Backends share one small interface: load a bundle (or model), infer on a preprocessed batch, describe."""

from __future__ import annotations

from edgead.backends.base import Backend, open_backend

__all__ = ["Backend", "open_backend"]
