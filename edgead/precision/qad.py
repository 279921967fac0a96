"""Quantization-aware distillation (QAD): fine-tune the INT8 graph until its maps match FP32's.

The student is the Q/DQ graph the build just made, run by torch (``onnx_torch.QuantGraph``):
per-channel symmetric INT8 weights and per-tensor activations exactly where ONNX Runtime put them,
with straight-through rounding, learned weight rounding and learned activation scales. The teacher
is the bundle's FP32 graph. The loss is the squared difference of anomaly maps (in pixel-threshold
units) and of image scores (in threshold units), each relative to the PTQ graph's own error, on
training normals and on the same normals with synthetic anomalies (``anomaly_synth.Synthesizer``):
no test image and no label. A quarter of those images is held out of the optimiser; the step with
the lowest loss on them is kept, so QAD never exports a student that does worse there than the
PTQ graph it started from. With ``fresh`` (the default) each training batch is made anew from the
other normals: flipped at random, a share with a new synthetic anomaly, so the student never sees
the same anomaly twice (on 72 fixed images it learned their noise more than the graph's). The
result is exported the way the build exports any INT8 graph, by ONNX Runtime's quantizer, from
the tuned float weights and with the learned scales as the activation ranges; the bundle's FP32
graph and reference stay the original.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgead.decision import Normalization
from edgead.precision.ranges import input_tensors

VAL_SHARE = 4  # every 4th training image (seeded) is held out of the optimiser to pick the step kept
EVALS = 8  # validation points over the run; the best one is exported (step 0 = the PTQ graph itself)


@dataclass(frozen=True)
class QADSettings:
    steps: int = 240
    batch: int = 4
    # 1e-2 / 1e-3 before: the held-out loss rose 2-6x in the first 100 steps (magnetic_tile 10-epoch CRAD)
    lr_rounding: float = 3e-3  # weight moves, in quantization steps
    lr_bias: float = 2e-5
    lr_scales: float = 3e-4  # log activation scales
    warmup: float = 0.1  # share of the steps with a linear learning-rate warm-up
    score_weight: float = 1.0
    fresh: bool = True  # each training batch made anew (random flips, new synthetic anomalies)
    feature_weight: float = 0.0  # loss on the tensors the INT8 scopes hand to FP32 (features), relative error
    seed: int = 0


def boundary_tensors(model: onnx.ModelProto, scopes) -> dict[str, str]:
    """Tensors an INT8-scope node makes and an FP32 computational node reads (what the head sees), as
    {name in the Q/DQ graph: name in the float graph} (a quantized tensor is read through its DQ)."""
    from edgead.precision.rules import SHAPE_OPS, in_scopes

    made = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, str] = {}
    for n in model.graph.node:
        if n.op_type in SHAPE_OPS and n.op_type != "Concat" or in_scopes(n.name, scopes):
            continue
        for i in n.input:
            p, orig = made.get(i), i
            if p is not None and p.op_type == "DequantizeLinear" and p.input[0] in made:
                q = made[p.input[0]]
                orig, p = (q.input[0], made.get(q.input[0])) if q.op_type == "QuantizeLinear" else (i, p)
            if p is not None and p.op_type not in SHAPE_OPS and in_scopes(p.name, scopes):
                out.setdefault(i, orig)
    return out


def teacher_tensors(float_graph: onnx.ModelProto, names: list[str], x: np.ndarray, input_name: str
                    ) -> dict[str, np.ndarray]:
    """The float graph's values of ``names`` for images ``x``."""
    from edgead.precision.probe import inner_values

    batch = float_graph.graph.input[0].type.tensor_type.shape.dim[0].dim_value or 1
    parts = list(inner_values(float_graph, names, x, input_name, batch))
    return {t: np.concatenate([p[t] for p in parts]) for t in names}


def fresh_maker(normals: np.ndarray, pre, share: float, relit_share: float = 0.0) -> Callable:
    """``make(indices, rng)``: those normals, each flipped at random, a ``share`` with a new synthetic anomaly and
    a ``relit_share`` under another light (the calibration set's mix)."""
    from edgead.calibration import painted, relit
    from edgead.data.anomaly_synth import Synthesizer

    synth = Synthesizer()

    def make(idx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = []
        for i in idx:
            x = normals[i]
            x = x[:, :, ::-1] if rng.random() < 0.5 else x
            x = x[:, ::-1, :] if rng.random() < 0.5 else x
            if relit_share and rng.random() < relit_share:
                x = relit(x, pre, rng)
            elif rng.random() < share:
                x = painted(x, pre, synth, rng)
            out.append(np.ascontiguousarray(x, dtype=np.float32))
        return np.stack(out)

    return make


def distill(qdq: onnx.ModelProto, float_graph: onnx.ModelProto, fp32: Path, images: np.ndarray, input_name: str,
            norms: list[Normalization], settings: QADSettings, progress=None, source: np.ndarray | None = None,
            make: Callable | None = None, scopes=()) -> dict:
    """Tune the student; returns tuned float weights, activation ranges by tensor and the loss history.

    ``norms``: each image's category normalization (units of the loss). ``source``: the normal each
    image was made from (images[j] is normal j for j < number of normals); ``make``: ``fresh_maker``'s
    function, used when ``settings.fresh``. Normals behind a held-out image are never trained on."""
    import torch

    from edgead.backends.onnxruntime import OrtBackend
    from edgead.precision.onnx_torch import QuantGraph

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    teacher = OrtBackend(fp32)
    target = teacher.run_batched(images)
    weights = {i.name: numpy_helper.to_array(i) for i in float_graph.graph.initializer}
    student = QuantGraph(qdq, weights)
    feats = boundary_tensors(qdq, scopes) if settings.feature_weight > 0 else {}
    pix = torch.tensor([n.pixel_scale for n in norms], dtype=torch.float32)
    sc = torch.tensor([n.scale for n in norms], dtype=torch.float32)
    fixed = input_tensors(input_name)  # the exact input grid is a construction, not a fit: never tuned
    scales = []
    for key, p in student.log_scales.items():
        p.requires_grad_(student.quantized[key] not in fixed)
        if p.requires_grad:
            scales.append(p)
    opt = torch.optim.Adam([{"params": list(student.rounding.parameters()), "lr": settings.lr_rounding},
                            {"params": list(student.biases.parameters()), "lr": settings.lr_bias},
                            {"params": scales, "lr": settings.lr_scales}])
    warm = max(1, round(settings.warmup * settings.steps))

    def rate(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, settings.steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, rate)
    x_all, m_all, s_all = (torch.from_numpy(images), torch.from_numpy(target["anomaly_map"]),
                           torch.from_numpy(target["score"]))
    names = list(feats)

    def teach(x: np.ndarray) -> dict:  # student's name -> the float graph's value
        t = teacher_tensors(float_graph, [feats[k] for k in names], x, input_name)
        return {k: torch.from_numpy(t[feats[k]]) for k in names}

    f_all = teach(images) if feats else {}

    weight = {"map": 1.0, "score": settings.score_weight, "feature": settings.feature_weight}

    def loss_on(x, m, s, idx, f) -> tuple:
        out = student({input_name: x}, extra=tuple(feats))
        p = pix[idx].view(-1, 1, 1, 1)
        map_loss = (((out["anomaly_map"] - m) / p) ** 2).mean()
        score_loss = (((out["score"] - s) / sc[idx]) ** 2).mean()
        feat_loss = sum(((out[k] - f[k]) ** 2).mean() / (f[k] ** 2).mean().clamp_min(1e-12) for k in feats) / max(
            1, len(feats)) if feats else torch.zeros(())
        total = weight["map"] * map_loss + weight["score"] * score_loss + weight["feature"] * feat_loss
        return total, map_loss, score_loss, feat_loss

    def loss_of(idx) -> tuple:
        return loss_on(x_all[idx], m_all[idx], s_all[idx], idx, {k: v[idx] for k, v in f_all.items()})

    def fresh_loss(idx) -> tuple:  # idx: normals (images[j] is normal j), their norms at the same index
        x = make(idx, rng)
        t = teacher.run_batched(x)
        f = teach(x) if feats else {}
        return loss_on(torch.from_numpy(x), torch.from_numpy(t["anomaly_map"]), torch.from_numpy(t["score"]), idx, f)

    perm = rng.permutation(len(images))
    n_val = max(1, len(images) // VAL_SHARE) if len(images) > 1 else 0
    val, train = perm[:n_val], perm[n_val:] if n_val else perm
    fit = train
    fresh = settings.fresh and make is not None and source is not None
    if fresh:  # train on the normals no held-out image was made from
        train = np.setdiff1d(np.arange(int(source.max()) + 1), source[val])

    def evaluate(idx: np.ndarray) -> dict:
        with torch.no_grad():
            parts = [loss_of(idx[i:i + 8]) for i in range(0, len(idx), 8)]
        w = np.array([len(idx[i:i + 8]) for i in range(0, len(idx), 8)], float)
        return {"loss": float(np.average([float(p[0]) for p in parts], weights=w)),
                "map": float(np.average([float(p[1]) for p in parts], weights=w)),
                "score": float(np.average([float(p[2]) for p in parts], weights=w)),
                "feature": float(np.average([float(p[3]) for p in parts], weights=w))}

    held = val if n_val else train
    start = evaluate(fit)  # each term counts relative to the PTQ graph's own error on the training images
    weight["map"] = 1.0 / max(start["map"], 1e-12)
    weight["score"] = settings.score_weight / max(start["score"], 1e-12)
    weight["feature"] = settings.feature_weight / max(start["feature"], 1e-12)
    first = evaluate(held)
    history = [{"step": 0, **first}]
    best_loss, best_step = first["loss"], 0
    best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    every = max(1, settings.steps // EVALS)
    order = np.zeros(0, int)
    for step in range(1, settings.steps + 1):
        if len(order) < settings.batch:
            order = rng.permutation(train)
        idx, order = order[: settings.batch], order[settings.batch:]
        opt.zero_grad()
        loss = (fresh_loss(idx) if fresh else loss_of(idx))[0]
        loss.backward()
        opt.step()
        sched.step()
        if step % every == 0 or step == settings.steps:
            row = {"step": step, **evaluate(held)}
            history.append(row)
            if row["loss"] < best_loss:
                best_loss, best_step = row["loss"], step
                best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        if progress:
            progress(step, settings.steps, float(loss.detach()))
    student.load_state_dict(best_state)
    return {"weights": student.float_weights(), "scales": student.activation_scales(),
            "history": history, "best_step": best_step, "n_validation": int(n_val), "settings": asdict(settings)}


def ranges_from_scales(qdq: onnx.ModelProto, scales: dict[str, float]) -> dict[str, tuple[float, float]]:
    """Activation tensor -> (low, high) that makes ONNX Runtime's quantizer choose the learned scale and the
    graph's zero point again (symmetric INT8: +-127 s; UINT8: (-zp s, (255 - zp) s))."""
    from edgead.precision.onnx_torch import _key

    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    out = {}
    for n in qdq.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits or _key(n.name) not in scales:
            continue
        s = scales[_key(n.name)]
        zp_arr = inits.get(n.input[2]) if len(n.input) > 2 else None
        zp = float(np.asarray(zp_arr).ravel()[0]) if zp_arr is not None else 0.0
        if zp_arr is not None and zp_arr.dtype == np.int8:
            out[n.input[0]] = (-127.0 * s, 127.0 * s)
        else:
            out[n.input[0]] = (-zp * s, (255.0 - zp) * s)
    return out


def with_weights(model: onnx.ModelProto, weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` with the named initializers replaced (same shapes and dtypes)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for init in out.graph.initializer:
        if init.name in weights:
            new = numpy_helper.from_array(np.asarray(weights[init.name], numpy_helper.to_array(init).dtype), init.name)
            init.CopyFrom(new)
    return out


def set_scales(model: onnx.ModelProto, scales: dict[str, float]) -> int:
    """Write learned activation scales into the Q/DQ graph's scale initializers (by QuantizeLinear name), for
    pairs whose scale no quantized bias depends on; returns how many changed by more than 0.1 %."""
    from edgead.precision.onnx_torch import _key

    inits = {i.name: i for i in model.graph.initializer}
    bias_scales = {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                   and numpy_helper.to_array(inits[n.input[0]]).dtype == np.int32}
    changed = 0
    for n in model.graph.node:
        key = _key(n.name)
        if n.op_type != "QuantizeLinear" or key not in scales or n.input[1] not in inits:
            continue
        old = float(numpy_helper.to_array(inits[n.input[1]]).ravel()[0])
        if abs(old - scales[key]) <= 1e-3 * abs(old) or n.input[1] in bias_scales:
            continue
        inits[n.input[1]].CopyFrom(numpy_helper.from_array(np.asarray(scales[key], np.float32), n.input[1]))
        changed += 1
    return changed
