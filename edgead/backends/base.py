"""The engine interface and its registry (as Polygraphy separates loaders from runners).

An engine runs one graph of a bundle (or, for ``torch``, the PyTorch model of the bundle's source run,
or of a run folder): ``infer`` takes a preprocessed batch of the graph's own batch size, and
:meth:`Backend.run_batched` takes any number of images, padding the last short batch with its last
image and trimming the outputs, so a graph exported with ``--batch 4`` runs everywhere. Engines are
context managers (``close`` frees their resources). A backend is one module that subclasses
:class:`Backend` and decorates it with :func:`register_backend`; every verb then offers it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from edgead.errors import EdgeadError

OUTPUTS = ("anomaly_map", "score")
_REGISTRY: dict[str, type[Backend]] = {}
BUILTIN = ("onnxruntime", "torch", "tensorrt")


@dataclass(frozen=True)
class EngineOptions:
    """What a caller may ask of any engine; an engine ignores what it cannot honour (and says so in
    ``describe``)."""
    threads: int | None = None


class Backend(ABC):
    """Runs one graph: ``infer`` takes a preprocessed (B, 3, H, W) float32 batch and returns
    ``{"anomaly_map": (B, 1, H, W), "score": (B,)}`` as numpy arrays."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    batch: int | None = None  # the graph's fixed batch size; None = any
    concurrent: ClassVar[bool] = False  # ``infer`` may be called from several threads at once (live --workers)

    @classmethod
    @abstractmethod
    def open(cls, target: Path, key: str, options: EngineOptions) -> Backend:
        """An engine for the graph ``key`` of the bundle (or run) folder ``target``."""

    @abstractmethod
    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def describe(self) -> dict: ...

    def close(self) -> None:  # noqa: B027  (optional: engines that hold nothing need not override it)
        """Free what the engine holds (sessions, device buffers)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_batched(self, x: np.ndarray, advance: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
        """Any number of images through the graph's fixed batch: the last short batch is padded with its
        last image and the padding trimmed from the outputs."""
        size = self.batch or min(len(x), 8) or 1
        maps, scores = [], []
        for i in range(0, len(x), size):
            part = x[i:i + size]
            k = len(part)
            if self.batch and k < self.batch:
                part = np.concatenate([part, np.repeat(part[-1:], self.batch - k, 0)])
            out = self.infer(part)
            maps.append(out["anomaly_map"][:k])
            scores.append(out["score"][:k])
            if advance is not None:
                advance(k)
        if not maps:
            return {"anomaly_map": np.zeros((0, 1, *x.shape[2:]), np.float32), "score": np.zeros(0, np.float32)}
        return {"anomaly_map": np.concatenate(maps), "score": np.concatenate(scores)}


def register_backend(cls: type[Backend]) -> type[Backend]:
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtin() -> None:
    from edgead.backends import onnxruntime, tensorrt, torch  # noqa: F401  (register themselves; imports are lazy)
    from edgead.plugins import load_plugins

    load_plugins()


def available_backends() -> dict[str, str]:
    _load_builtin()
    return {name: cls.summary for name, cls in _REGISTRY.items()}


def backend_class(name: str) -> type[Backend]:
    _load_builtin()
    if name not in _REGISTRY:
        raise EdgeadError(f"unknown backend {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def open_engine(target: str | Path, key: str = "fp32", backend: str = "onnxruntime",
                options: EngineOptions | None = None) -> Backend:
    """The one way to open an engine: ``target`` a bundle (any backend) or run folder (``torch``),
    ``key`` a resolved precision key (see ``Bundle.resolve``)."""
    return backend_class(backend).open(Path(target), key, options or EngineOptions())

