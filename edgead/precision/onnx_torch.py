"""An ONNX graph run by torch, differentiable, with its Q/DQ pairs as fake quantization.

Quantization-aware distillation (``edgead.precision.qad``) trains the INT8 graph that the build
made, not a re-creation of it in model code: every QuantizeLinear -> DequantizeLinear pair on an
activation becomes a fake quantizer with a learnable scale (straight-through rounding, the Q op's
own saturation), and every weight behind a DequantizeLinear becomes a float parameter quantized on
the fly, per channel and symmetric, as ONNX Runtime's quantizer will quantize it again. So the
simulation is the graph that ships, for any model, built-in or plugin.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn

from edgead.errors import EdgeadError

QRANGE = {onnx.TensorProto.INT8: (-128, 127), onnx.TensorProto.UINT8: (0, 255)}
WEIGHT_QMAX = 127  # symmetric INT8 weights, as ONNX Runtime quantizes them: [-127, 127]
DTYPES = {onnx.TensorProto.FLOAT: torch.float32, onnx.TensorProto.INT64: torch.int64,
          onnx.TensorProto.INT32: torch.int32, onnx.TensorProto.BOOL: torch.bool,
          onnx.TensorProto.FLOAT16: torch.float16, onnx.TensorProto.DOUBLE: torch.float64}


def ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def fake_quant(x: torch.Tensor, scale: torch.Tensor, zp: float, qmin: int, qmax: int) -> torch.Tensor:
    """QuantizeLinear then DequantizeLinear, rounding with a straight-through gradient (LSQ for ``scale``)."""
    q = torch.clamp(ste_round(x / scale) + zp, qmin, qmax)
    return (q - zp) * scale


def weight_scale(w: torch.Tensor, axis: int) -> torch.Tensor:
    """Per-channel symmetric scale max|w| / 127 along ``axis``, shaped to broadcast against ``w``."""
    dims = [d for d in range(w.dim()) if d != axis]
    amax = w.detach().abs().amax(dim=dims, keepdim=True) if dims else w.detach().abs()
    return torch.clamp(amax, min=1e-12) / WEIGHT_QMAX


def quantize_weight(w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """Symmetric INT8 weight at a fixed per-channel ``step`` (straight-through rounding)."""
    return torch.clamp(ste_round(w / step), -WEIGHT_QMAX, WEIGHT_QMAX) * step


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _ints(t) -> list[int]:
    return [int(v) for v in (t.tolist() if isinstance(t, torch.Tensor) else t)]


class QuantGraph(nn.Module):
    """A Q/DQ ONNX graph as a torch module.

    ``float_weights``: the float initializers of the graph the Q/DQ one was quantized from (same
    names, without ONNX Runtime's ``_quantized`` suffix); they become the trainable weights.
    ``forward`` returns the graph outputs by name. ``quantize=False`` runs every pair as identity (not the
    float function where ONNX Runtime folded a Relu or Clip into a Q: ``execute(..., "clamp")`` is).
    """

    def __init__(self, qmodel: onnx.ModelProto, float_weights: dict[str, np.ndarray]):
        super().__init__()
        g = qmodel.graph
        self.nodes = list(g.node)
        self.inputs = [i.name for i in g.input]
        dims = g.input[0].type.tensor_type.shape.dim
        self.graph_batch = int(dims[0].dim_value) if dims and dims[0].dim_value > 0 else None
        self.per_sample = False  # set when a batch turned out not to fit the graph's static shapes
        self.outputs = [o.name for o in g.output]
        inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        producer = {o: n for n in self.nodes for o in n.output}
        self.consts: dict[str, torch.Tensor] = {}
        self.biases = nn.ParameterDict()  # float biases behind bias DQs, keyed by ONNX name (dots escaped)
        self.rounding = nn.ParameterDict()  # per weight: its move from the FP32 value, in quantization steps
        self.base: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # key -> (w0, step, movable)
        self.log_scales = nn.ParameterDict()  # activation scales, keyed by the QuantizeLinear's name
        self.weight_of: dict[str, tuple[str, int]] = {}  # DQ output -> (weight name, channel axis) or bias
        self.act_q: dict[str, tuple[str, float, int, int]] = {}  # Q output -> (key, zero point, qmin, qmax)
        self.quantized: dict[str, str] = {}  # activation scale key -> the float tensor it quantizes
        self.q_output: dict[str, str] = {}  # activation scale key -> its QuantizeLinear's output
        self.graph_scales: dict[str, float] = {}  # activation scale key -> the Q/DQ graph's scale
        # int32 bias (cpu recipe) -> (input's activation key, the graph's bias steps / its input scale): ORT
        # quantizes a bias at s_in * s_w per channel (s_w = 1 for an all-zero channel), which moves
        # feature channels measurably; the simulation rounds it the same way.
        self.bias_q: dict[str, tuple[str, torch.Tensor]] = {}
        for name, arr in inits.items():
            self.consts[name] = torch.from_numpy(np.array(arr))
        for n in self.nodes:
            a = _attrs(n)
            if n.op_type == "DequantizeLinear" and n.input[0] in inits:
                base = n.input[0].removesuffix("_quantized")
                if base not in float_weights:
                    raise EdgeadError(f"QAD: no float weight {base!r} for {n.name}; quantize from the same graph")
                key = _key(base)
                w0 = torch.from_numpy(np.array(float_weights[base], np.float32))
                is_bias = inits[n.input[0]].dtype == np.int32  # cpu recipe: int32 bias at s_in * s_w, kept float
                axis = -1 if is_bias else int(a.get("axis", 1))
                if is_bias and key not in self.biases:
                    self.biases[key] = nn.Parameter(w0)
                elif not is_bias and key not in self.rounding:
                    step = weight_scale(w0, axis)
                    # The largest |w| of each channel stays put, so ONNX Runtime recomputes the same scale.
                    movable = (w0.abs() < step * WEIGHT_QMAX * (1 - 1e-6)).float()
                    self.base[key] = (w0, step, movable)
                    self.rounding[key] = nn.Parameter(torch.zeros_like(w0))
                self.weight_of[n.output[0]] = (key, axis)
            elif n.op_type == "QuantizeLinear" and n.input[0] not in inits:
                scale = float(np.asarray(inits[n.input[1]]).ravel()[0])
                zp_init = inits.get(n.input[2]) if len(n.input) > 2 else None
                dtype = onnx.TensorProto.UINT8 if zp_init is None else onnx.helper.np_dtype_to_tensor_dtype(
                    zp_init.dtype)
                zp = float(np.asarray(zp_init).ravel()[0]) if zp_init is not None else 0.0
                key = _key(n.name)
                self.log_scales[key] = nn.Parameter(torch.tensor(np.log(scale), dtype=torch.float32))
                self.graph_scales[key] = scale
                self.act_q[n.output[0]] = (key, zp, *QRANGE[dtype])
                self.q_output[key] = n.output[0]
                self.quantized[key] = n.input[0]
        consumers = {}
        for n in self.nodes:
            for i in n.input:
                consumers.setdefault(i, []).append(n)
        self.plain_bias: dict[str, str] = {}  # float bias of a quantized Conv (tensorrt recipe) -> parameter key
        for n in self.nodes:
            if n.op_type == "Conv" and len(n.input) > 2 and n.input[1] in self.weight_of and n.input[2] in inits \
                    and inits[n.input[2]].dtype == np.float32 and n.input[2] not in self.plain_bias:
                key = _key(n.input[2])
                b0 = np.array(float_weights.get(n.input[2], inits[n.input[2]]), np.float32)
                self.biases[key] = nn.Parameter(torch.from_numpy(b0))
                self.plain_bias[n.input[2]] = key
        for n in self.nodes:
            if n.op_type != "DequantizeLinear" or n.input[0] not in inits or inits[n.input[0]].dtype != np.int32:
                continue
            convs = consumers.get(n.output[0], [])
            act = producer.get(convs[0].input[0]) if len(convs) == 1 else None
            if act is None or act.op_type != "DequantizeLinear" or act.input[0] not in self.act_q:
                raise EdgeadError(f"QAD: cannot tell which activation scale {n.name}'s int32 bias follows")
            key = self.act_q[act.input[0]][0]
            steps = np.asarray(inits[n.input[1]], np.float64).ravel() / self.graph_scales[key]
            self.bias_q[n.output[0]] = (key, torch.from_numpy(steps.astype(np.float32)))
        for n in self.nodes:
            if n.op_type == "DequantizeLinear" and n.input[0] not in inits:
                p = producer.get(n.input[0])
                if p is None or p.op_type != "QuantizeLinear":
                    raise EdgeadError(f"QAD: {n.name} dequantizes a tensor no QuantizeLinear made")
        for n in self.nodes:
            if n.op_type not in OPS and n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                raise EdgeadError(f"QAD: ONNX op {n.op_type} ({n.name}) is not supported by edgead's torch runner; "
                                  f"build without --qad or add it to edgead.precision.onnx_torch.OPS")

    def scale(self, key: str) -> torch.Tensor:
        """An activation scale: learned, or exactly the graph's when frozen (exp(log(s)) is not s)."""
        p = self.log_scales[key]
        return torch.exp(p) if p.requires_grad else torch.tensor(self.graph_scales[key], dtype=torch.float32)

    def float_range(self, key: str) -> tuple[float, float]:
        """The float values an activation quantizer keeps: ((qmin - zp) s, (qmax - zp) s)."""
        _, zp, lo, hi = self.act_q[self.q_output[key]]
        s = float(self.scale(key).detach())
        return (lo - zp) * s, (hi - zp) * s

    def bias_key(self, tensor: str) -> str | None:
        """The trainable bias a Conv reads as ``tensor`` (a float initializer or an int32 bias's DQ), if any."""
        if tensor in self.plain_bias:
            return self.plain_bias[tensor]
        key, axis = self.weight_of.get(tensor, (None, 0))
        return key if axis < 0 else None

    def bias(self, dq_output: str, key: str, quantize: bool) -> torch.Tensor:
        """A float bias; quantized, it is rounded to int32 at (input scale x weight scale), as ORT stores it."""
        b = self.biases[key]
        if not quantize or dq_output not in self.bias_q:
            return b
        act, ratio = self.bias_q[dq_output]
        step = self.scale(act) * ratio
        return ste_round(b / step) * step

    def activation_scales(self) -> dict[str, float]:
        """Learned scales; a scale that was not trained is the graph's own, exactly (exp(log(s)) is not)."""
        return {k: float(torch.exp(v.detach())) if v.requires_grad else self.graph_scales[k]
                for k, v in self.log_scales.items()}

    def weight(self, key: str) -> torch.Tensor:
        """The float weight: its FP32 value moved by at most one quantization step (learned rounding), never
        past its channel's largest |w|: ONNX Runtime takes the exported graph's scale from that largest value,
        so a weight moved past it would change the scale and every rounding of the channel on export."""
        w0, step, movable = self.base[key]
        w = w0 + step * torch.clamp(self.rounding[key], -1.0, 1.0) * movable
        return torch.where(movable > 0, torch.clamp(w, -step * WEIGHT_QMAX, step * WEIGHT_QMAX), w0)

    def float_weights(self) -> dict[str, np.ndarray]:
        out = {_unkey(k): v.detach().numpy().copy() for k, v in self.biases.items()}
        with torch.no_grad():
            out.update({_unkey(k): self.weight(k).numpy().copy() for k in self.rounding})
        return out

    def forward(self, feeds: dict[str, torch.Tensor], quantize: bool | str = True, trace: dict | None = None,
                extra: tuple[str, ...] = (), weights: frozenset[str] | None = None) -> dict[str, torch.Tensor]:
        """The graph outputs and the ``extra`` tensors by name (``quantize``, ``weights``: as ``execute`` takes
        them); ``trace``, if given, receives every tensor (for debugging the runner). A batch the graph's static
        shapes cannot carry unambiguously is run one sample at a time."""
        n = int(next(iter(feeds.values())).shape[0])
        if not self.per_sample or n == self.graph_batch:
            try:
                return self._run(feeds, quantize, trace, extra, weights)
            except NotBatchable:
                self.per_sample = True
        parts = [self._run({k: v[i:i + 1] for k, v in feeds.items()}, quantize, trace, extra, weights)
                 for i in range(n)]
        return {o: torch.cat([p[o] for p in parts]) for o in [*self.outputs, *extra]}

    def _run(self, feeds: dict[str, torch.Tensor], quantize: bool | str, trace: dict | None,
             extra: tuple[str, ...] = (), weights: frozenset[str] | None = None) -> dict[str, torch.Tensor]:
        env, pending = self.start(feeds)
        for n in self.nodes:
            self.execute(n, env, pending, quantize, weights)
        if trace is not None:
            trace.update(env)
        return {o: env[o] for o in [*self.outputs, *extra]}

    def start(self, feeds: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        """A fresh tensor environment for ``execute`` (constants, trainable biases, inputs) and its pending Qs."""
        env: dict = {**self.consts, **feeds, "": None}
        env.update({name: self.biases[key] for name, key in self.plain_bias.items()})
        env["__batch__"] = (self.graph_batch, int(next(iter(feeds.values())).shape[0]))
        return env, {}

    def execute(self, n: onnx.NodeProto, env: dict, pending: dict, quantize: bool | str,
                weights: frozenset[str] | None = None) -> None:
        """Run one node into ``env``. ``quantize``: True (the INT8 graph), False (every pair identity),
        "clamp" (float weights, activations only clamped to their quantized range: the float function where
        ONNX Runtime removed a Relu or Clip into the Q), "weights" (INT8 weights and biases, activations as in
        "clamp") or "activations" (float weights, INT8 activations): which rounding the error comes from.
        ``weights``: with "weights", only these weight keys are rounded (None: all)."""
        if n.op_type == "QuantizeLinear" and n.output[0] in self.act_q:
            pending[n.output[0]] = env[n.input[0]]
            return
        if n.op_type == "DequantizeLinear":
            if n.output[0] in self.weight_of:
                key, axis = self.weight_of[n.output[0]]
                rounded = quantize is True or quantize == "weights" and (weights is None or key in weights)
                if axis < 0:
                    env[n.output[0]] = self.bias(n.output[0], key, rounded)
                else:
                    w = self.weight(key)
                    env[n.output[0]] = quantize_weight(w, self.base[key][1]) if rounded else w
            else:
                x = pending[n.input[0]]
                key, zp, lo, hi = self.act_q[n.input[0]]
                if quantize in ("clamp", "weights"):
                    env[n.output[0]] = torch.clamp(x, *self.float_range(key))
                else:
                    env[n.output[0]] = fake_quant(x, self.scale(key), zp, lo, hi) if quantize else x
            return
        ins = [env[i] if i else None for i in n.input]
        try:
            attrs = _attrs(n)
            if n.op_type in ("Reshape", "Expand"):
                attrs["__batch__"] = env["__batch__"]
            out = OPS[n.op_type](ins, attrs)
        except (EdgeadError, NotBatchable):
            raise
        except Exception as e:  # a shape or attribute case this runner does not cover
            raise EdgeadError(f"QAD: torch runner failed at {n.op_type} {n.name}: {e}") from None
        outs = out if isinstance(out, tuple) else (out,)
        for name, v in zip(n.output, outs, strict=False):
            env[name] = v


def _key(name: str) -> str:
    return name.replace(".", "\x1f")


def _unkey(key: str) -> str:
    return key.replace("\x1f", ".")


# --- operators -----------------------------------------------------------------------------------

def _conv(i, a):
    x, w, b = i[0], i[1], i[2] if len(i) > 2 else None
    pads = a.get("pads", [0] * 4)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise EdgeadError("Conv auto_pad is not supported")
    if pads[:2] != pads[2:]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    return F.conv2d(x, w, b, stride=a.get("strides", 1), padding=pads[:2], dilation=a.get("dilations", 1),
                    groups=a.get("group", 1))


def _gemm(i, a):
    x, w = i[0], i[1]
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return y + a.get("beta", 1.0) * i[2] if len(i) > 2 and i[2] is not None else y


def _clip(i, a):
    lo = i[1] if len(i) > 1 and i[1] is not None else a.get("min")
    hi = i[2] if len(i) > 2 and i[2] is not None else a.get("max")
    return torch.clamp(i[0], min=None if lo is None else float(lo), max=None if hi is None else float(hi))


def _reduce(fn: Callable) -> Callable:
    def op(i, a):
        axes = a.get("axes") if "axes" in a else (_ints(i[1]) if len(i) > 1 and i[1] is not None else None)
        keep = bool(a.get("keepdims", 1))
        x = i[0]
        if axes is None:
            axes = list(range(x.dim()))
        return fn(x, [d % x.dim() for d in axes], keep)
    return op


def _resize(i, a):
    x = i[0]
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    ctm = a.get("coordinate_transformation_mode", b"half_pixel")
    ctm = ctm.decode() if isinstance(ctm, bytes) else ctm
    sizes = i[3] if len(i) > 3 and i[3] is not None and i[3].numel() else None
    scales = i[2] if len(i) > 2 and i[2] is not None and i[2].numel() else None
    size = _ints(sizes)[2:] if sizes is not None else [int(round(d * float(s))) for d, s in
                                                       zip(x.shape[2:], scales.tolist()[2:], strict=True)]
    if mode == "linear":
        if ctm not in ("half_pixel", "pytorch_half_pixel", "align_corners"):
            raise EdgeadError(f"Resize linear with {ctm} is not supported")
        return F.interpolate(x, size=size, mode="bilinear", align_corners=ctm == "align_corners")
    if mode == "nearest" and ctm == "asymmetric":
        return F.interpolate(x, size=size, mode="nearest")
    raise EdgeadError(f"Resize mode {mode}/{ctm} is not supported")


def _avgpool(i, a):
    pads = a.get("pads", [0, 0, 0, 0])
    x = i[0]
    if pads[:2] != pads[2:]:
        x = F.pad(x, (pads[1], pads[3], pads[0], pads[2]))
        pads = [0, 0, 0, 0]
    return F.avg_pool2d(x, a["kernel_shape"], a.get("strides", a["kernel_shape"]), pads[:2],
                        ceil_mode=bool(a.get("ceil_mode", 0)), count_include_pad=bool(a.get("count_include_pad", 0)))


def _gather(i, a):
    x, idx = i[0], i[1].long()
    axis = a.get("axis", 0) % x.dim()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape(*x.shape[:axis], *idx.shape, *x.shape[axis + 1:])


def _slice(i, a):
    x = i[0]
    starts, ends = _ints(i[1]), _ints(i[2])
    axes = _ints(i[3]) if len(i) > 3 and i[3] is not None else list(range(len(starts)))
    steps = _ints(i[4]) if len(i) > 4 and i[4] is not None else [1] * len(starts)
    sl = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps, strict=True):
        if st <= 0:
            raise EdgeadError("Slice with a negative step is not supported")
        dim = x.shape[ax]
        sl[ax % x.dim()] = slice(max(-dim, min(s, dim)), max(-dim, min(e, dim)), st)
    return x[tuple(sl)]


class NotBatchable(Exception):
    """A static-batch graph whose reshapes do not say where another batch would go: run it one sample at a time."""


def _batched(shape: list[int], x: torch.Tensor, a: dict) -> list[int]:
    """A static-batch graph run on another batch: a target shape led by the graph's batch follows the input's
    when the input leads with the batch too. Any other shape that no longer fits (a batch folded into rows
    for a Gemm, a sequence-first attention layout) could put the batch in more than one place: NotBatchable."""
    graph_batch, batch = a.get("__batch__", (None, None))
    if not (graph_batch and batch != graph_batch and shape and x.dim()):
        return shape
    if shape[0] == graph_batch and x.shape[0] == batch:
        return [batch, *shape[1:]]
    if -1 not in shape and 0 not in shape and int(np.prod(shape)) == x.numel():
        return shape
    raise NotBatchable


def _reshape(i, a):
    shape = _batched(_ints(i[1]), i[0], a)
    shape = [i[0].shape[k] if v == 0 and not a.get("allowzero", 0) else v for k, v in enumerate(shape)]
    return i[0].reshape(shape)


def _unsqueeze(i, a):
    x = i[0]
    axes = sorted(d % (x.dim() + len(_ints(i[1]))) for d in _ints(i[1]))
    for d in axes:
        x = x.unsqueeze(d)
    return x


def _squeeze(i, a):
    x = i[0]
    if len(i) < 2 or i[1] is None:
        return x.squeeze()
    for d in sorted((d % x.dim() for d in _ints(i[1])), reverse=True):
        x = x.squeeze(d)
    return x


def _topk(i, a):
    v, idx = torch.topk(i[0], int(_ints(i[1])[0]), dim=a.get("axis", -1), largest=bool(a.get("largest", 1)),
                        sorted=bool(a.get("sorted", 1)))
    return v, idx


def _layernorm(i, a):
    x = i[0]
    axis = a.get("axis", -1) % x.dim()
    shape = x.shape[axis:]
    b = i[2] if len(i) > 2 else None
    return F.layer_norm(x, shape, i[1], b, a.get("epsilon", 1e-5))


def _cast(i, a):
    to = a["to"]
    if to not in DTYPES:
        raise EdgeadError(f"Cast to ONNX type {to} is not supported")
    return i[0].to(DTYPES[to])


def _flatten(i, a):
    axis = a.get("axis", 1) % max(i[0].dim(), 1)
    return i[0].reshape(int(np.prod(i[0].shape[:axis])), -1)


def _expand(i, a):
    shape = np.broadcast_shapes(tuple(i[0].shape), tuple(_batched(_ints(i[1]), i[0], a)))
    return torch.broadcast_to(i[0], shape)


def _hardsigmoid(i, a):
    return torch.clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1)


OPS: dict[str, Callable] = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": lambda i, a: torch.matmul(i[0], i[1]),
    "Add": lambda i, a: i[0] + i[1], "Sub": lambda i, a: i[0] - i[1], "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1], "Pow": lambda i, a: torch.pow(i[0], i[1]),
    "Max": lambda i, a: torch.stack(torch.broadcast_tensors(*i)).amax(0),
    "Min": lambda i, a: torch.stack(torch.broadcast_tensors(*i)).amin(0),
    "Neg": lambda i, a: -i[0], "Abs": lambda i, a: torch.abs(i[0]), "Sqrt": lambda i, a: torch.sqrt(i[0]),
    "Exp": lambda i, a: torch.exp(i[0]), "Log": lambda i, a: torch.log(i[0]), "Erf": lambda i, a: torch.erf(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]), "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "Relu": lambda i, a: torch.relu(i[0]), "Clip": _clip, "HardSigmoid": _hardsigmoid,
    "HardSwish": lambda i, a: i[0] * torch.clamp(i[0] / 6 + 0.5, 0, 1),
    "Softmax": lambda i, a: torch.softmax(i[0], dim=a.get("axis", -1)),
    "LessOrEqual": lambda i, a: i[0] <= i[1], "Less": lambda i, a: i[0] < i[1],
    "Greater": lambda i, a: i[0] > i[1], "GreaterOrEqual": lambda i, a: i[0] >= i[1],
    "Equal": lambda i, a: i[0] == i[1], "Where": lambda i, a: torch.where(i[0], i[1], i[2]),
    "Cast": _cast, "Identity": lambda i, a: i[0],
    "ReduceMean": _reduce(lambda x, d, k: x.mean(d, keepdim=k)),
    "ReduceSum": _reduce(lambda x, d, k: x.sum(d, keepdim=k)),
    "ReduceMax": _reduce(lambda x, d, k: x.amax(d, keepdim=k)),
    "ReduceMin": _reduce(lambda x, d, k: x.amin(d, keepdim=k)),
    "ReduceL2": _reduce(lambda x, d, k: torch.sqrt((x * x).sum(d, keepdim=k))),
    "GlobalAveragePool": lambda i, a: i[0].mean((2, 3), keepdim=True),
    "AveragePool": _avgpool, "Resize": _resize, "Concat": lambda i, a: torch.cat(i, a["axis"]),
    "Gather": _gather, "Slice": _slice, "Reshape": _reshape, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze,
    "Transpose": lambda i, a: i[0].permute(a["perm"]) if "perm" in a else i[0].permute(*range(i[0].dim())[::-1]),
    "Flatten": _flatten, "Expand": _expand, "TopK": _topk, "LayerNormalization": _layernorm,
    "Shape": lambda i, a: torch.tensor(i[0].shape, dtype=torch.int64),
    "Constant": lambda i, a: torch.from_numpy(np.array(numpy_helper.to_array(a["value"]))),
}
