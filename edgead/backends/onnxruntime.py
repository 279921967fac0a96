"""ONNX Runtime backend (CPU here; CUDA/TensorRT execution providers when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.backends.base import OUTPUTS, Backend, EngineOptions, register_backend
from edgead.bundle import Bundle
from edgead.errors import EdgeadError


@register_backend
class OrtBackend(Backend):
    name = "onnxruntime"
    summary = "ONNX Runtime (CPU here; CUDA when its build has it)"
    concurrent = True  # InferenceSession.run is thread-safe; with one intra-op thread each call runs on its caller

    def __init__(self, path: Path, threads: int | None = None, providers: list[str] | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EdgeadError("onnxruntime missing: pip install 'edgead[runtime]'") from None
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: graph-cleanup warnings (an unused initializer) are not the user's
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        avail = ort.get_available_providers()
        # CUDA when this onnxruntime build has it (onnxruntime-gpu on a GPU machine), else CPU. The
        # TensorRT EP is opt-in: it would rebuild engines with its own precision flags.
        self.providers = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in avail]
        if not self.providers:
            raise EdgeadError(f"none of the execution providers {providers} is available here (have: {avail})")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=self.providers)
        except Exception as e:  # ORT raises its own exception types
            raise EdgeadError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0][:160]})") from None
        self.path, self.threads = Path(path), threads
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    @classmethod
    def open(cls, target: Path, key: str, options: EngineOptions) -> OrtBackend:
        return cls(Bundle.load(target).onnx(key), threads=options.threads)

    def close(self) -> None:
        self.session = None

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        out = self.session.run(list(OUTPUTS), {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return dict(zip(OUTPUTS, out, strict=True))

    def describe(self) -> dict:
        import onnxruntime as ort

        return {"backend": self.name, "onnxruntime": ort.__version__, "providers": self.providers,
                "model": str(self.path), "threads": self.threads}
