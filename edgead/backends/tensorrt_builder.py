"""TensorRT engine builder (the loader; ``edgead.backends.tensorrt`` is the runner), Jetson / NVIDIA GPU only.

Written against NVIDIA's documented Python API for TensorRT 10.3 (JetPack 6) and 11.x: precision comes
from the ONNX graph (Q/DQ for INT8, FP16 casts), so the network is created strongly typed (the flag on
10.x; always on and the flag ignored on 11.x) and no FP16/INT8 builder flag or calibrator is used.
Built layer precisions are read back with the engine inspector and an INT8 build without INT8 layers
fails. Engines are cached by (ONNX hash, TensorRT version, GPU name and compute capability, precision).
Imports are lazy: without TensorRT or a GPU every entry point raises a one-line :class:`EdgeadError`.
"""

from __future__ import annotations

import hashlib
import json

from edgead.bundle import Bundle
from edgead.errors import EdgeadError
from edgead.fileio import atomic_write_bytes, atomic_write_json

WORKSPACE_MB = 1024
HINT = "TensorRT runs on the Jetson/GPU machine: pip install 'edgead[trt]' there (JetPack ships tensorrt)"


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise EdgeadError(f"TensorRT is not importable here ({str(e).splitlines()[0][:120]}); {HINT}") from None
    return trt


def gpu_facts(mem=None) -> dict:
    from edgead.backends.cuda_memory import cuda_memory

    return (mem or cuda_memory()).gpu()


def cache_key(onnx_sha: str, trt_version: str, gpu: dict, precision: str) -> str:
    raw = json.dumps([onnx_sha, trt_version, gpu["gpu"], gpu["compute_capability"], precision])
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def build_engine(bundle: Bundle, precision: str, workspace_mb: int = WORKSPACE_MB, dla_core: int | None = None,
                 force: bool = False) -> dict:
    """Build (or reuse) the engine of ``bundle``'s ``precision`` graph; returns its cache entry."""
    trt = import_tensorrt()
    gpu = gpu_facts()
    onnx_path = bundle.onnx(precision)
    entry = bundle.files[precision]
    key = cache_key(entry["sha256"], trt.__version__, gpu, precision)
    engine_path = bundle.path / "engines" / f"{precision}-{key}.engine"
    info_path = engine_path.with_suffix(".json")
    if engine_path.is_file() and info_path.is_file() and not force:
        return json.loads(info_path.read_text())

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 11:  # 11.x: always strongly typed, flag deprecated
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgeadError(f"{onnx_path}: TensorRT cannot parse it: {errors[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    cache_file = bundle.path / "engines" / f"timing-{gpu['gpu'].replace(' ', '_')}-{trt.__version__}.cache"
    timing = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgeadError(f"{onnx_path}: TensorRT build failed (see the log above)")
    atomic_write_bytes(cache_file, bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    layers = layer_precisions(trt, engine)
    if precision.startswith("int8") and not layers.get("Int8"):
        raise EdgeadError(f"{onnx_path}: the INT8 engine has no INT8 layers ({layers}); the Q/DQ placement "
                          f"was not honoured, so the engine was not saved")
    atomic_write_bytes(engine_path, bytes(serialized))
    info = {"engine": str(engine_path.relative_to(bundle.path)), "tensorrt": trt.__version__, **gpu,
            "precision": precision, "onnx_sha256": entry["sha256"], "layer_datatypes": layers,
            "workspace_mb": workspace_mb, "dla_core": dla_core}
    atomic_write_json(info_path, info)
    return info


def layer_precisions(trt, engine) -> dict[str, int]:
    """Count built layers' output data types from the engine inspector (detailed verbosity)."""
    inspector = engine.create_engine_inspector()
    data = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    counts: dict[str, int] = {}
    for layer in data.get("Layers", []):
        if not isinstance(layer, dict):
            continue
        for out in layer.get("Outputs", []):
            fmt = str(out.get("Format/Datatype", ""))
            for dt in ("Int8", "Half", "Float", "Int32", "BFloat16", "FP8"):
                if dt in fmt:
                    counts[dt] = counts.get(dt, 0) + 1
                    break
    return counts
