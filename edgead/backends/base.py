"""The backend interface and a name -> backend factory (imports are lazy: no torch for ORT users)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from edgead.errors import EdgeadError


class Backend(ABC):
    """Runs one graph: ``infer`` takes a preprocessed (B, 3, H, W) float32 batch and returns
    ``{"anomaly_map": (B, 1, H, W), "score": (B,)}`` as numpy arrays."""

    name: str = ""

    @abstractmethod
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def describe(self) -> dict: ...


def open_backend(name: str, bundle_or_run: str | Path, precision: str = "fp32", **kwargs) -> Backend:
    if name == "onnxruntime":
        from edgead.backends.onnxruntime import OrtBackend

        return OrtBackend.load(bundle_or_run, precision, **kwargs)
    if name == "torch":
        from edgead.backends.torch import TorchBackend

        return TorchBackend.load(bundle_or_run, **kwargs)
    if name == "tensorrt":
        from edgead.backends.tensorrt import TrtBackend

        return TrtBackend.load(bundle_or_run, precision)
    raise EdgeadError(f"unknown backend {name!r}; available: onnxruntime, torch, tensorrt")
