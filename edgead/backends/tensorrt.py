"""TensorRT runner (Jetson / NVIDIA GPU only): a built engine (``tensorrt_builder``, the loader), host numpy
in, host numpy out, one CUDA stream; device memory from cuda-python or pycuda (``cuda_memory``).

Imports are lazy: on a machine without TensorRT or a GPU, opening it raises a one-line
:class:`EdgeadError` saying what is missing. No GPU result is ever simulated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgead.backends.base import Backend, EngineOptions, register_backend
from edgead.backends.tensorrt_builder import build_engine, import_tensorrt
from edgead.bundle import Bundle
from edgead.errors import EdgeadError


@register_backend
class TrtBackend(Backend):
    """Runs a built engine: host numpy in, host numpy out, one CUDA stream."""

    name = "tensorrt"
    summary = "TensorRT engine built on this device (Jetson / NVIDIA GPU)"

    def __init__(self, bundle: Bundle, precision: str):
        from edgead.backends.cuda_memory import cuda_memory

        trt = import_tensorrt()
        self.mem = cuda_memory()
        self.info = build_engine(bundle, precision)
        logger = trt.Logger(trt.Logger.WARNING)
        engine_bytes = (bundle.path / self.info["engine"]).read_bytes()
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(engine_bytes)
        self.context = self.engine.create_execution_context()
        self.host: dict[str, np.ndarray] = {}
        self.device: dict[str, int] = {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            self.host[name] = np.empty(shape, dtype)
            self.device[name] = self.mem.alloc(self.host[name].nbytes)
            self.context.set_tensor_address(name, self.device[name])
        self.input_name = bundle.input_name
        self.batch = int(self.host[self.input_name].shape[0])

    @classmethod
    def load(cls, bundle: str | Path, precision: str = "fp16") -> TrtBackend:
        return cls(Bundle.load(bundle), precision)

    @classmethod
    def open(cls, target: Path, key: str, options: EngineOptions) -> TrtBackend:
        return cls(Bundle.load(target), key)  # threads do not apply to a GPU engine

    def infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(batch, self.host[self.input_name].dtype)
        self.mem.to_device(self.device[self.input_name], x)
        if not self.context.execute_async_v3(self.mem.handle):
            raise EdgeadError("TensorRT execution failed")
        outs = {}
        for name, arr in self.host.items():
            if name != self.input_name:
                self.mem.to_host(arr, self.device[name])
                outs[name] = arr
        self.mem.sync()
        return {k: v.copy() for k, v in outs.items()}

    def describe(self) -> dict:
        return {"backend": self.name, "cuda_memory": self.mem.name, **self.info}

    def close(self) -> None:
        for ptr in getattr(self, "device", {}).values():
            self.mem.free(ptr)
        self.device = {}

    def __del__(self):
        self.close()
