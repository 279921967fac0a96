"""Inner tensors of a float ONNX graph, read with ONNX Runtime (for calibration-time statistics)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnx


def inner_values(model: onnx.ModelProto, names: list[str], images: np.ndarray, input_name: str,
                 batch: int) -> Iterator[dict[str, np.ndarray]]:
    """``names``' values for ``images``, ``batch`` images at a time (the graph's batch; a short last batch
    is padded with its last image and trimmed)."""
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend([onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                           for t in names if t not in have])
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    for i in range(0, len(images), batch):
        part = images[i:i + batch]
        k = len(part)
        if k < batch:
            part = np.concatenate([part, np.repeat(part[-1:], batch - k, 0)])
        yield {t: v[:k] for t, v in zip(names, sess.run(names, {input_name: part}), strict=True)}
