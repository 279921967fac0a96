"""Device memory, copies and a stream for the TensorRT runner, from cuda-python or from pycuda (many
JetPack images ship pycuda, the product card names it), chosen at run time and named in ``describe``.

Both follow their own documented APIs: cuda-python's runtime bindings return ``(err, *values)``;
pycuda's driver API raises. Imports are lazy; without either, a one-line error says what to install.
"""

from __future__ import annotations

import numpy as np

from edgead.errors import EdgeadError

HINT = "TensorRT runs on the Jetson/GPU machine: pip install cuda-python (or pycuda) there"


def _check(result):
    """cuda-python returns (err, *values); raise on error, return the values."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EdgeadError(f"CUDA error {err}: is an NVIDIA GPU and driver present? ({HINT})")
    return rest[0] if len(rest) == 1 else rest


class CudaPython:
    name = "cuda-python"

    def __init__(self):
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        self.rt = cudart
        self.stream = _check(cudart.cudaStreamCreate())

    def gpu(self) -> dict:
        prop = _check(self.rt.cudaGetDeviceProperties(0))
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        return {"gpu": name.strip("\x00 "), "compute_capability": f"{prop.major}.{prop.minor}"}

    def alloc(self, nbytes: int) -> int:
        return int(_check(self.rt.cudaMalloc(nbytes)))

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self.stream))

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self.stream))

    @property
    def handle(self) -> int:
        return int(self.stream)

    def sync(self) -> None:
        _check(self.rt.cudaStreamSynchronize(self.stream))

    def free(self, ptr: int) -> None:
        self.rt.cudaFree(ptr)


class PyCuda:
    name = "pycuda"

    def __init__(self):
        import pycuda.autoinit  # noqa: F401  (creates the context on device 0)
        import pycuda.driver as cuda

        self.cuda = cuda
        self.stream = cuda.Stream()
        self._mem: dict[int, object] = {}

    def gpu(self) -> dict:
        dev = self.cuda.Device(0)
        major, minor = dev.compute_capability()
        return {"gpu": dev.name(), "compute_capability": f"{major}.{minor}"}

    def alloc(self, nbytes: int) -> int:
        mem = self.cuda.mem_alloc(nbytes)
        self._mem[int(mem)] = mem
        return int(mem)

    def to_device(self, ptr: int, host: np.ndarray) -> None:
        self.cuda.memcpy_htod_async(self._mem[ptr], host, self.stream)

    def to_host(self, host: np.ndarray, ptr: int) -> None:
        self.cuda.memcpy_dtoh_async(host, self._mem[ptr], self.stream)

    @property
    def handle(self) -> int:
        return int(self.stream.handle)

    def sync(self) -> None:
        self.stream.synchronize()

    def free(self, ptr: int) -> None:
        mem = self._mem.pop(ptr, None)
        if mem is not None:
            mem.free()


def cuda_memory() -> CudaPython | PyCuda:
    """cuda-python when importable, else pycuda; a one-line error when neither is."""
    errors = []
    for kind in (CudaPython, PyCuda):
        try:
            return kind()
        except ImportError as e:
            errors.append(f"{kind.name}: {str(e).splitlines()[0][:80]}")
        except EdgeadError:
            raise
        except Exception as e:  # pycuda raises its own driver errors (no device, no driver)
            raise EdgeadError(f"{kind.name}: {str(e).splitlines()[0][:120]}; {HINT}") from None
    raise EdgeadError(f"neither cuda-python nor pycuda is importable ({'; '.join(errors)}); {HINT}")
