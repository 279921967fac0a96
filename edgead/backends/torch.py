"""The PyTorch reference backend: the trained model from its run folder, FP32, eager."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.backends.base import Backend, EngineOptions, register_backend
from edgead.errors import EdgeadError


@register_backend
class TorchBackend(Backend):
    """The reference: a run folder's model, or a bundle's source run (FP32 only)."""

    name = "torch"
    summary = "PyTorch FP32 eager (the reference; needs the run folder)"

    def __init__(self, model, info: dict, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model, self.info, self.threads = model.eval(), info, threads

    @classmethod
    def load(cls, run: str | Path, threads: int | None = None) -> TorchBackend:
        from edgead.runs import load_model

        model, info = load_model(run)
        return cls(model, info, threads)

    @classmethod
    def open(cls, target: Path, key: str, options: EngineOptions) -> TorchBackend:
        from edgead.bundle import META, Bundle
        from edgead.fileio import sha256_file
        from edgead.runs import WEIGHTS

        if key != "fp32":
            raise EdgeadError(f"--backend torch runs the FP32 reference only; use --precision fp32 (or "
                              f"--backend onnxruntime for {key})")
        if not (target / META).is_file():
            return cls.load(target, options.threads)
        b = Bundle.load(target)
        run = b.source_run
        if not (run / WEIGHTS).is_file():
            raise EdgeadError(f"{target}: its PyTorch run {run} is not on this machine; --backend torch needs it")
        if sha256_file(run / WEIGHTS) != b.weights_sha256:
            raise EdgeadError(f"{run / WEIGHTS}: weights changed since {target} was exported; re-export the bundle")
        return cls.load(run, options.threads)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            m, s = self.model(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        return {"anomaly_map": m.numpy(), "score": s.numpy()}

    def describe(self) -> dict:
        import torch

        return {"backend": self.name, "torch": torch.__version__, "model": self.info["model"],
                "threads": self.threads or torch.get_num_threads()}
