"""A new backend in one file, registered only in the tests: ONNX Runtime with graph optimisations off
and one thread, reporting its own name (a stand-in for a vendor runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.backends import Backend, EngineOptions, register_backend
from edgead.bundle import Bundle


@register_backend
class PlainOrt(Backend):
    name = "plainort"
    summary = "test-only: ONNX Runtime without graph optimisations"

    def __init__(self, path: Path):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name, self.batch, self.path = inp.name, int(inp.shape[0]), path

    @classmethod
    def open(cls, target: Path, key: str, options: EngineOptions) -> PlainOrt:
        return cls(Bundle.load(target).onnx(key))

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        m, s = self.session.run(["anomaly_map", "score"], {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return {"anomaly_map": m, "score": s}

    def describe(self) -> dict:
        return {"backend": self.name, "model": str(self.path)}
