"""The PyTorch reference backend: the trained model from its run folder, FP32, eager."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.backends.base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model, info: dict, threads: int | None = None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model, self.info, self.threads = model.eval(), info, threads

    @classmethod
    def load(cls, run: str | Path, **kwargs) -> TorchBackend:
        from edgead.runs import load_model

        model, info = load_model(run)
        return cls(model, info, **kwargs)

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            m, s = self.model(torch.from_numpy(np.ascontiguousarray(batch, np.float32)))
        return {"anomaly_map": m.numpy(), "score": s.numpy()}

    def describe(self) -> dict:
        import torch

        return {"backend": self.name, "torch": torch.__version__, "model": self.info["model"],
                "threads": self.threads or torch.get_num_threads()}
