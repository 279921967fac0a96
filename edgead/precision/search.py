"""How ``edgead build --precision int8`` reaches the gates: PTQ, bias correction, learned rounding (when asked
for), QAD, then a float fallback.

Each candidate is judged on the build split (``precision.split``) with the default gates of its
precision, the code ``edgead verify`` runs on test images. The search stops at the first candidate
that passes; otherwise the candidate closest to the gates is kept (``closest``: lowest badness among the best of
PTQ, bias correction, learned rounding and QAD and the fallback candidates that keep ``KEEP_SHARE`` of its INT8
MACs; a fallback that gives up more of INT8's speed is kept only when it passes) and the build says so. The fallback
first leaves the model's sensitive trunk out of INT8 (the INT8-scope nodes its ``sensitive`` scope entries
name, ``sensitive_nodes``: one float region at the input; when that fails but comes closer, QAD distils the
INT8 rest beside it), then adds the activations that ``verify``'s culprit analysis ranks first
(effect on the anomaly maps of the split images with the largest score errors, one pair at a time in
float), doubling their number each round (beside the trunk when that came closer, else instead of it) until
two rounds in a row come no closer;
the nodes around them run in the recipe's ``fallback_dtype`` (FP16 on TensorRT, FP32 on a CPU), FP16 only
inside the model's FP16 scopes (a trunk region an FP16 build keeps in FP32 stays FP32). Every step's
numbers go to meta.json."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgead.bundle import Bundle
from edgead.errors import EdgeadError
from edgead.precision.int8 import kept_half, read_ranges, write_ranges
from edgead.precision.qad import QADSettings
from edgead.precision.quantizer import Quantizer

QAD_MODES = ("auto", "always", "never")
SCALES = "scales.json"  # QAD's learned activation scales, by QuantizeLinear
MAX_FALLBACK_ROUNDS = 6  # 2, 4, ... 64 activations left out of INT8
FLAT_ROUNDS = 2  # the ranked rounds stop after this many in a row that bring the split no closer (badness above
FLAT_GAIN = 0.9  # this share of the lowest so far): each round doubles the float nodes, so the error is elsewhere
RANK_IMAGES = 8  # the fallback ranks activations on the split images with the largest score errors
# When nothing passes, a fallback candidate replaces the all-INT8 best only if it is closer to the gates and keeps this
# share of the best's INT8 MACs. CRR deeppcb (default run, cpu): the trunk-FP32 candidate (88 % of MACs) verified at
# L2 0.094 with every other gate passed, the all-INT8 QAD graph kept before at L2 0.521 and an image-AUROC drop of
# 0.52; 22.8 vs 22.0 ms (FP32 36.3). CRAD's trunk candidate keeps 64 % (58.9 of 91.4 % of MACs): not kept.
KEEP_SHARE = 0.8


@dataclass(frozen=True)
class SearchPlan:
    qad: str = "auto"  # auto: when PTQ fails the build split, kept if it does better there; always: kept; never
    qad_steps: int = QADSettings.steps
    qad_feature_weight: float = QADSettings.feature_weight
    bias_correction: bool = True  # PTQ's conv biases corrected for the mean error of the INT8 graph
    learned_rounding: bool = False  # conv weights rounded up or down to fit each layer's FP32 output (AdaRound;
    # off by default: on the build split no better than bias correction and ~5 min longer, see precision.rounding)
    fallback: bool = True
    gates_file: Path | None = None

    def record(self) -> dict:
        """As meta.json holds it (and as a rebuild compares it)."""
        return {"qad": self.qad, "qad_steps": self.qad_steps, "qad_feature_weight": self.qad_feature_weight,
                "bias_correction": self.bias_correction, "learned_rounding": self.learned_rounding,
                "fallback": self.fallback,
                "gates_file": str(self.gates_file) if self.gates_file else None}


def search(q: Quantizer, key: str, dst: Path, work: Path, plan: SearchPlan, log=None) -> dict:
    """Write the chosen INT8 graph to ``dst``; return the build report (steps, choice, split verdicts)."""
    from edgead.precision.macs import int8_share
    from edgead.precision.split import build_split, judge

    if plan.qad not in QAD_MODES:
        raise EdgeadError(f"--qad {plan.qad!r}: choose {', '.join(QAD_MODES)}")
    say = log or (lambda *_: None)
    b, scopes, recipe = q.bundle, q.bundle.precision_scopes["int8"], q.recipe
    split = build_split(b)
    steps: list[dict] = []

    def record(name: str, graph: Path, base_work: Path, extra: dict) -> dict:
        verdict = judge(b, split, graph, key, plan.gates_file)
        share = int8_share(onnx.load(str(base_work / "preprocessed.onnx")), onnx.load(str(graph)))
        row = {"step": name, **verdict, **share, "size_mb": round(graph.stat().st_size / 1e6, 2), **extra}
        steps.append(row)
        say(f"int8 {name}: {'PASS' if verdict['passed'] else 'fail'} on the build split (score error "
            f"{verdict['score_abs_max']:.3f}, RMS {verdict['score_rms']:.3f}, Spearman {verdict['spearman_min']:.4f}, "
            f"decisions {verdict['decision_agreement_min']:.3f}, mask IoU {verdict['mask_iou_min']:.3f}); "
            f"{100 * share['int8_share']:.1f} % of MACs in INT8")
        return row

    ptq_work = work / "ptq"
    ptq = work / "ptq.onnx"
    report = q(ptq, ptq_work)
    best = (record(f"ptq-{q.settings.method}", ptq, ptq_work, {}), ptq, ptq_work)
    line = best  # what the fallback starts from: PTQ, or PTQ with bias correction when that ran
    if plan.bias_correction and not best[0]["passed"]:
        bc_work, bc = work / "bc", work / "bc.onnx"
        info = run_bias_correction(q, ptq, ptq_work, bc_work, bc)
        row = record(f"ptq-{q.settings.method}+bc", bc, bc_work, {"bias_correction": info})
        line = (row, bc, bc_work)
        if row["passed"] or row["badness"] < best[0]["badness"]:
            best = line
    if plan.learned_rounding and not best[0]["passed"]:  # from PTQ: it fits each conv's bias beside its rounding
        ar_work, ar = work / "ar", work / "ar.onnx"
        info = run_learned_rounding(q, ptq, ptq_work, ar_work, ar, log)
        row = record(f"ptq-{q.settings.method}+ar", ar, ar_work, {"learned_rounding": info})
        if row["passed"] or row["badness"] < best[0]["badness"]:
            best = (row, ar, ar_work)
    if plan.qad == "always" or (plan.qad == "auto" and not best[0]["passed"]):
        qad_work = work / "qad"
        graph = work / "qad.onnx"
        info = run_qad(q, best[1], best[2], qad_work, graph, plan, log)
        row = record("qad", graph, qad_work, {"qad": info})
        if plan.qad == "always" or row["passed"] or row["badness"] < best[0]["badness"]:
            best = (row, graph, qad_work)
    if plan.fallback and not best[0]["passed"]:
        corrected = line[1] != ptq

        def float_work(candidate: Path) -> Path:
            """Where a candidate's float graph and ranges are: its own bias-corrected ones, else PTQ's."""
            return work / f"{candidate.stem}-bc" if corrected else ptq_work

        def rebuild(kept: list[str], dst: Path) -> None:
            """The candidate with ``kept`` in float. Bias correction walks again with them in float: a bias
            corrected for INT8 error would add error where there is none, and the INT8 layers after a
            float one see less error. (Not from QAD: its weights were tuned beside INT8 neighbours.)"""
            first = dst.with_name(f"{dst.stem}-ptq.onnx") if corrected else dst
            quantize_from(q, ptq_work, first, kept)
            if corrected:
                run_bias_correction(q, first, ptq_work, float_work(dst), dst, keep_float=kept)

        def label(kept: list[str]) -> str:
            half = len(kept_half(kept, recipe, b.precision_scopes["fp16"]))
            return "+".join(f"{d}x{k}" for d, k in (("fp16", half), ("fp32", len(kept) - half)) if k)

        def tune(kept: list[str], graph: Path, dst: Path, name: str) -> tuple:
            """QAD from the candidate ``graph`` (``kept`` in float): its INT8 rest learns to work beside them."""
            qad_work = work / f"{dst.stem}-work"
            info = run_qad(q, graph, float_work(graph), qad_work, dst, plan, log, keep_float=kept)
            return record(name, dst, qad_work, {"kept_float": kept, "qad": info, "left_in_float":
                                                "the model's sensitive trunk, the rest distilled"}), dst, qad_work

        best = fallback(b, split, best, line, work, rebuild, label, record, say,
                        tune=tune if plan.qad != "never" else None)
    row, graph, base_work = best
    shutil.copyfile(graph, dst)
    report.update(to_int8_report(base_work, graph, scopes))
    report.update({"search": steps, "chosen": row["step"], "kept_float": row.get("kept_float", []),
                   "build_split": {"what": "held-out training normals, the same relit (data.lighting), with "
                                           "synthetic anomalies (anomaly_synth.Synthesizer) and with those "
                                           "anomalies faded to FP32 scores around the threshold; no test image",
                                   "n_images": len(split), "passed": row["passed"],
                                   "gates": "default" if plan.gates_file is None else str(plan.gates_file)}})
    return report


def to_int8_report(base_work: Path, graph: Path, scopes: list[str]) -> dict:
    ops = [n.op_type for n in onnx.load(str(graph)).graph.node]
    return {"quantize_linear": ops.count("QuantizeLinear"), "dequantize_linear": ops.count("DequantizeLinear"),
            "calibrated_from": str(base_work.name)}


def run_qad(q: Quantizer, ptq: Path, ptq_work: Path, qad_work: Path, dst: Path, plan: SearchPlan, log=None,
            keep_float: list[str] = ()) -> dict:
    """Distil the PTQ graph (``qad.distill``) and export it through ONNX Runtime's quantizer again.

    ``keep_float``: the nodes ``ptq`` leaves in float (a fallback candidate), left in float again."""
    from edgead.precision import qad
    from edgead.progress import progress

    b, settings = q.bundle, q.settings
    cfg = QADSettings(steps=plan.qad_steps, seed=settings.seed, feature_weight=plan.qad_feature_weight)
    cats = _calibration_categories(b, len(q.calib))
    norms = [b.category_norm(cats[i]) for i in q.source]
    float_graph = onnx.load(str(ptq_work / "preprocessed.onnx"))
    with progress(disable=log is None) as prog:
        task = prog.add_task("QAD (INT8 student vs FP32 maps)", total=cfg.steps, info="")

        def tick(step: int, total: int, loss: float) -> None:
            prog.update(task, completed=step, info=f"loss {loss:.4f}")

        f, r = settings.synthetic_fraction, settings.relit_fraction
        make = qad.fresh_maker(q.calib, b.preprocess, f / (1 + f), r / (1 + f + r))  # the calibration set's mix
        out = qad.distill(onnx.load(str(ptq)), float_graph, b.onnx("fp32"), q.images, b.input_name, norms, cfg, tick,
                          source=q.source, make=make, scopes=b.precision_scopes["int8"])
    ranges = read_ranges(ptq_work / q.ranges_file)
    ranges.update(qad.ranges_from_scales(onnx.load(str(ptq)), out["scales"]))
    export_tuned(q, float_graph, out["weights"], ranges, qad_work, dst, scales=out["scales"], keep_float=keep_float)
    return {"settings": out["settings"], "n_images": len(q.images), "n_validation": out["n_validation"],
            "best_step": out["best_step"], "history": out["history"]}


def load_student(ptq: Path, ptq_work: Path) -> tuple:
    """The Q/DQ graph ``ptq`` as a ``QuantGraph`` at its own activation scales, and the float graph it was made from."""
    from onnx import numpy_helper

    from edgead.precision.onnx_torch import QuantGraph

    float_graph = onnx.load(str(ptq_work / "preprocessed.onnx"))
    student = QuantGraph(onnx.load(str(ptq)), {i.name: numpy_helper.to_array(i) for i in float_graph.graph.initializer})
    for p in student.log_scales.values():
        p.requires_grad_(False)  # the graph's scales exactly
    return student, float_graph


def run_bias_correction(q: Quantizer, ptq: Path, ptq_work: Path, work: Path, dst: Path,
                        keep_float: list[str] = ()) -> dict:
    """Correct the PTQ graph's conv biases (``precision.biascorr``) on the calibration normals; quantize again
    with the same ranges into ``dst`` (``work`` holds the corrected float graph)."""
    from edgead.precision import biascorr

    student, float_graph = load_student(ptq, ptq_work)
    info = biascorr.correct(student, q.calib, q.bundle.input_name)
    export_tuned(q, float_graph, student.float_weights(), read_ranges(ptq_work / q.ranges_file), work, dst,
                 keep_float=keep_float)
    return info


def run_learned_rounding(q: Quantizer, ptq: Path, ptq_work: Path, work: Path, dst: Path, log=None,
                         settings=None, scopes: list[str] | None = None) -> dict:
    """Learn the rounding and biases of the PTQ graph's convs (``precision.rounding``; only those inside ``scopes``
    when given) on the calibration images (normals and their synthetic anomalies); quantize again with the same
    ranges into ``dst``."""
    from edgead.precision import rounding
    from edgead.progress import progress

    student, float_graph = load_student(ptq, ptq_work)
    with progress(disable=log is None) as prog:
        task = prog.add_task("learned rounding (per conv vs FP32)", total=1, info="")

        def tick(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total, info=f"{done}/{total} convs")

        info = rounding.learn(student, q.images, q.bundle.input_name,
                              settings or rounding.RoundingSettings(seed=q.settings.seed), tick, scopes)
    export_tuned(q, float_graph, student.float_weights(), read_ranges(ptq_work / q.ranges_file), work, dst)
    return info


def export_tuned(q: Quantizer, float_graph: onnx.ModelProto, weights: dict[str, np.ndarray], ranges: dict, work: Path,
                 dst: Path, scales: dict[str, float] | None = None, keep_float: list[str] = ()) -> None:
    """Tuned float weights (bias correction, QAD) back to a Q/DQ graph: ``work`` gets the float graph with
    them, its activation ranges and learned ``scales``; ONNX Runtime's quantizer writes ``dst`` from it."""
    from edgead.precision.qad import with_weights

    work.mkdir(parents=True, exist_ok=True)
    onnx.save(with_weights(float_graph, weights), str(work / "preprocessed.onnx"))
    write_ranges(work / q.ranges_file, q.settings, ranges)
    if scales is not None:
        (work / SCALES).write_text(json.dumps(scales))
    quantize_from(q, work, dst, keep_float)


def quantize_from(q: Quantizer, work: Path, dst: Path, keep_float: list[str] = ()) -> None:
    """Quantize ``work``'s (tuned) float graph with its ranges; learned scales (QAD) are written back exactly."""
    from edgead.precision.qad import set_scales

    q(dst, work, keep_float)
    if (work / SCALES).is_file():
        model = onnx.load(str(dst))
        if set_scales(model, json.loads((work / SCALES).read_text())):
            onnx.save(model, str(dst))


def sensitive_nodes(b: Bundle, inside: list[str]) -> list[str]:
    """The nodes of the INT8 scopes in the model's sensitive region, which the fallback leaves in float first:
    what the bundle's ``sensitive`` scope entries exclude (bundles exported before that key: what its FP16
    scopes exclude)."""
    from edgead.precision.rules import in_scopes

    scopes = b.precision_scopes
    ref = [*scopes["int8"], *scopes["sensitive"]] if "sensitive" in scopes else scopes["fp16"]
    return [n for n in inside if not in_scopes(n, ref)]


def fallback(b: Bundle, split, best: tuple, start: tuple, work: Path, rebuild, label, record, say,
             tune=None) -> tuple:
    """Leave the model's sensitive trunk out of INT8 (``sensitive_nodes``)
    and, when that fails but came closer than ``start``, distil the rest beside it (``tune``); then the
    activations with the largest effect on the maps (2, 4, 8, ...), until the split passes: beside the trunk,
    ranked on that candidate, when it came closer than ``start``; else instead of it.

    ``start``: the (row, graph, work) the candidates are ranked on and named after; ``rebuild(kept, dst)``
    writes a candidate with the ``kept`` nodes in float; ``label(kept)`` names their dtypes ('fp16x3+fp32x5');
    ``tune(kept, graph, dst, name)`` writes QAD from ``graph`` to ``dst`` and returns it as (row, graph, work).
    The ranked rounds stop early after ``FLAT_ROUNDS`` in a row that come no closer (the last row says so).
    Returns the first candidate that passes, else ``closest(best, candidates)``."""
    from edgead.precision.rules import in_scopes, split_nodes
    from edgead.precision.split import score_errors
    from edgead.verify.culprits import rank_pairs

    row, graph, base_work = start
    tried: list[tuple] = []  # every fallback candidate, for ``closest`` when none passes
    scopes = b.precision_scopes["int8"]
    model = onnx.load(str(base_work / "preprocessed.onnx"))
    inside, _ = split_nodes(model, scopes)
    trunk = sensitive_nodes(b, inside)
    base: list[str] = []  # what every ranked round keeps in float besides its activations
    prefix = row["step"]
    if trunk and len(trunk) < len(inside):  # first the model's sensitive trunk
        cand = work / "fallback-trunk.onnx"
        rebuild(trunk, cand)
        r = record(f"{prefix}+trunk:{label(trunk)}", cand, base_work,
                   {"kept_float": trunk, "left_in_float": "the model's sensitive trunk (its sensitive scope entries)"})
        if r["passed"]:
            return r, cand, base_work
        tried.append((r, cand, base_work))
        closer = r["badness"] < row["badness"]
        if tune is not None and closer:  # distil the rest beside the float trunk: the same speed, closer maps
            tuned = tune(trunk, cand, work / "fallback-trunk-qad.onnx", f"{prefix}+trunk:{label(trunk)}+qad")
            if tuned[0]["passed"]:
                return tuned
            tried.append(tuned)
        if closer:  # the ranked rounds add to the trunk, ranked on what is left in INT8
            base, graph, prefix, row = trunk, cand, f"{prefix}+trunk", r
    x = split.inputs(b)
    pick = np.sort(np.argsort(-score_errors(b, split, graph), kind="stable")[:RANK_IMAGES])  # where it fails
    _, ranked = rank_pairs(b.onnx("fp32"), graph, x[pick], b.input_name, b.input_shape[0])
    consumers: dict[str, list[str]] = {}
    producer = {o: n.name for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    k, lowest, flat = 2, row["badness"], 0
    for _ in range(MAX_FALLBACK_ROUNDS):
        tensors = [r["tensor"] for r in ranked[:k]]
        kept = sorted(set(base) | {name for t in tensors for name in [producer.get(t, ""), *consumers.get(t, [])]
                                   if name and in_scopes(name, scopes)})
        if len(kept) >= len(inside):  # nothing left in INT8: that is a float build, not an INT8 one
            break
        cand = work / f"fallback-{k}.onnx"
        rebuild(kept, cand)
        r = record(f"{prefix}+{label(kept)}", cand, base_work, {"kept_float": kept, "left_in_float": tensors})
        if r["passed"]:
            return r, cand, base_work
        tried.append((r, cand, base_work))
        flat = flat + 1 if r["badness"] > FLAT_GAIN * lowest else 0
        lowest = min(lowest, r["badness"])
        if flat >= FLAT_ROUNDS:
            r["stopped"] = (f"{flat} rounds in a row came no closer than {FLAT_GAIN:g}x the lowest badness so far "
                            f"({lowest:.3g}): the error is not in the activations the ranking puts first")
            say(f"int8: fallback stopped: {r['stopped']}")
            break
        if k >= len(ranked):
            break
        k *= 2
    kept = closest(best, tried)
    why = "all INT8 scopes quantized"
    if kept is not best:
        why = kept[0]["kept_because"] = (f"no candidate passes; the closest to the gates on the build split (badness "
                                         f"{kept[0]['badness']:.3g} vs {best[0]['badness']:.3g} all-INT8) with at "
                                         f"least {KEEP_SHARE:.0%} of its INT8 MACs")
    say(f"int8: no candidate passes the default gates on the build split; {kept[0]['step']} ({why}) is kept, "
        f"see meta.json for every step's numbers")
    return kept


def closest(best: tuple, tried: list[tuple], floor: float = KEEP_SHARE) -> tuple:
    """Among ``best`` (all INT8 scopes quantized) and the failing fallback candidates ``tried``, each (row, graph,
    work): the lowest badness of those keeping at least ``floor`` of ``best``'s INT8 MAC share; ``best`` on a tie."""
    pick = best
    for c in tried:
        if c[0]["int8_share"] >= floor * best[0]["int8_share"] and c[0]["badness"] < pick[0]["badness"]:
            pick = c
    return pick


def _calibration_categories(b: Bundle, n: int) -> list[str]:
    man = b.path / "calibration" / "manifest.json"
    if man.is_file():
        files = json.loads(man.read_text())["files"]
        if len(files) == n:
            return [f["category"] for f in files]
    return [b.categories[0]] * n
