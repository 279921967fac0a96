"""The verification report: one self-contained HTML page (PNG images embedded, charts as inline SVG)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from edgead.bundle import Bundle
from edgead.fileio import atomic_write_bytes
from edgead.metrics import roc_curve
from edgead.verify.reference import Reference
from edgead.visual import colorize, overlay, strip

CSS = """body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f0f0f0}.pass{color:#087f23;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.info{color:#777}.verdict{font-size:22px;padding:8px 14px;display:inline-block;border-radius:4px;color:#fff}
.ok{background:#2e7d32}.bad{background:#c62828}figure{display:inline-block;margin:6px}
figcaption{font-size:12px;max-width:780px}"""


def _png(img: Image.Image | np.ndarray) -> str:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _status(ok) -> str:
    return {True: '<span class="pass">pass</span>', False: '<span class="fail">FAIL</span>'}.get(
        ok, '<span class="info">report</span>')


def _svg_roc(curves: list[tuple[str, np.ndarray, np.ndarray, str, str]], title: str, size: int = 260) -> str:
    """curves: (label, fpr, tpr, colour, dash)."""
    pad = 30
    s = size - 2 * pad
    parts = [f'<svg width="{size}" height="{size + 20}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{pad}" y="14" font-size="12">{html.escape(title)}</text>',
             f'<rect x="{pad}" y="{pad}" width="{s}" height="{s}" fill="none" stroke="#999"/>',
             f'<line x1="{pad}" y1="{pad + s}" x2="{pad + s}" y2="{pad}" stroke="#ddd"/>']
    for i, (label, fpr, tpr, col, dash) in enumerate(curves):
        pts = " ".join(f"{pad + f * s:.1f},{pad + s - t * s:.1f}" for f, t in zip(fpr, tpr, strict=True))
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="2" '
                     f'stroke-dasharray="{dash}"/>')
        parts.append(f'<text x="{pad + 6}" y="{pad + s - 8 - 14 * i}" font-size="11" fill="{col}">'
                     f'{html.escape(label)}</text>')
    parts.append(f'<text x="{pad}" y="{size + 2}" font-size="11">FPR</text></svg>')
    return "".join(parts)


def svg_hist(groups: list[tuple[str, np.ndarray, str]], title: str, w: int = 380, h: int = 200) -> str:
    """Overlaid histograms of normalised scores; a line at the threshold (1.0)."""
    allv = np.concatenate([g[1] for g in groups])
    lo, hi = float(min(allv.min(), 0.0)), float(max(allv.max(), 1.5))
    bins = np.linspace(lo, hi, 31)
    counts = [np.histogram(v, bins)[0] for _, v, _ in groups]
    top = max(1, max(int(c.max()) for c in counts))
    pad = 24
    parts = [f'<svg width="{w}" height="{h + 30}" xmlns="http://www.w3.org/2000/svg">',
             f'<text x="{pad}" y="14" font-size="12">{html.escape(title)}</text>']
    bw = (w - 2 * pad) / (len(bins) - 1)
    for (_, _, col), c in zip(groups, counts, strict=True):
        for i, k in enumerate(c):
            bh = (h - 2 * pad) * k / top
            parts.append(f'<rect x="{pad + i * bw:.1f}" y="{h - pad - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
                         f'fill="{col}" fill-opacity="0.45"/>')
    tx = pad + (1.0 - lo) / (hi - lo) * (w - 2 * pad)
    parts.append(f'<line x1="{tx:.1f}" y1="{pad}" x2="{tx:.1f}" y2="{h - pad}" stroke="#000" stroke-dasharray="3"/>')
    for i, (label, _, col) in enumerate(groups):
        parts.append(f'<text x="{w - 150}" y="{30 + 13 * i}" font-size="11" fill="{col}">{html.escape(label)}</text>')
    parts.append(f'<text x="{pad}" y="{h + 10}" font-size="11">normalised score {lo:.2f} .. {hi:.2f} '
                 f'(dashed: threshold 1.0)</text></svg>')
    return "".join(parts)


def _disagreement_tile(rgb: np.ndarray, rn: np.ndarray, en: np.ndarray, title: str) -> Image.Image:
    """image | reference overlay | engine overlay | |difference| (same colour scale)."""
    diff = np.abs(en - rn)
    return strip([rgb, overlay(rgb, rn), overlay(rgb, en), colorize(diff * 2.0)], title)


def build_html(result: dict, ref: Reference, eng: dict, bundle: Bundle, bench: dict | None = None,
               n_tiles: int = 6) -> str:
    key, be = result["precision"], result["backend"]["backend"]
    ok = result["passed"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgead verify {html.escape(key)}</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>edgead verify: {html.escape(str(bundle.path.name))} ({html.escape(result['model'])}), "
           f"{html.escape(key)} on {html.escape(be)}</h1>",
           f'<div class="verdict {"ok" if ok else "bad"}">{"PASS" if ok else "FAIL"}</div> '
           + " ".join(f"{lv}: {_status(v == 'pass')}" for lv, v in result["levels"].items()),
           f"<p>{result['n_images']} real images ({result['n_good']} good, {result['n_defect']} defective) against "
           f"the PyTorch FP32 reference made {html.escape(result['reference']['created'])}; gates "
           f"{'from ' + html.escape(result['gates_file']) if result['gates_file'] else 'at their defaults'}.</p>"]
    out.append("<h2>Gates</h2><table><tr><th>level</th><th>gate</th><th>category</th><th>value</th><th>limit</th>"
               "<th>status</th><th>worst image / detail</th></tr>")
    for r in result["gates"]:
        worst = r.get("worst") or r.get("note") or (r.get("findings") if r["level"] == "L0" and r["value"] else "")
        lim = "" if r["limit"] is None else ("&le; " if r.get("op") == "max" else "&ge; ") + _fmt(r["limit"])
        out.append(f"<tr><td>{r['level']}</td><td>{r['gate']}</td><td>{html.escape(r['category'])}</td>"
                   f"<td>{_fmt(r['value'])}</td><td>{lim}</td><td>{_status(r['passed'])}</td>"
                   f"<td>{html.escape(json.dumps(worst, default=str))[:300] if worst else ''}</td></tr>")
    out.append("</table>")
    errs = [(c, k, v) for c, m in result["per_category"].items() for k, v in m.get("score_error", {}).items()]
    if errs and result["precision"] != "fp32":
        out.append("<h2>Score error by label</h2><p>Engine minus reference, normalised score (threshold units): a mean "
                   "far from 0 is a shift, a spread is noise.</p><table><tr><th>category</th><th>label</th>"
                   "<th>images</th><th>mean</th><th>spread (SD)</th><th>largest |error|</th></tr>")
        for c, k, v in errs:
            out.append(f"<tr><td>{html.escape(c)}</td><td>{k}</td><td>{v['n']}</td><td>{v['mean']:+.4f}</td>"
                       f"<td>{v['std']:.4f}</td><td>{v['max_abs']:.4f}</td></tr>")
        out.append("</table>")
    if "culprits" in result and "top" in result["culprits"]:
        c = result["culprits"]
        out.append(f"<h2>Likely culprit layers</h2><p>{html.escape(c['method'])}; images: "
                   f"{html.escape(', '.join(c['images']))}; map error with every pair quantized: "
                   f"{c['map_error_all_int8']:.4f}</p><table><tr><th>activation</th><th>producer</th><th>op</th>"
                   "<th>map error, this pair in float</th><th>share of the error</th></tr>")
        for r in c["top"]:
            out.append(f"<tr><td>{html.escape(r['tensor'])}</td><td>{html.escape(r['producer'])}</td><td>{r['op']}</td>"
                       f"<td>{r['map_error_this_float']:.4f}</td><td>{100 * r['share_of_error']:.1f} %</td></tr>")
        out.append("</table>")
    out.append("<h2>Per category</h2><table><tr><th>category</th><th>good/defect</th>"
               + "".join(f"<th>{k} ref</th><th>{k} engine</th>" for k in ("image AUROC", "pixel AUROC", "AUPRO"))
               + "<th>decision flips</th></tr>")
    for cat, m in result["per_category"].items():
        cells = "".join(f"<td>{_fmt(m['reference'].get(k))}</td><td>{_fmt(m['engine'].get(k))}</td>"
                        for k in ("image_auroc", "pixel_auroc", "aupro"))
        out.append(f"<tr><td>{html.escape(cat)}</td><td>{m['n_good']}/{m['n_defect']}</td>{cells}"
                   f"<td>{m['decision_flips']}</td></tr>")
    out.append("</table><h2>ROC curves and score histograms</h2>")
    for cat in result["per_category"]:
        idx = np.flatnonzero(ref.categories == cat)
        labels = ref.labels[idx]
        norm = bundle.category_norm(cat)
        rs, es = norm.score(ref.scores[idx]), norm.score(eng["score"][idx])
        if 0 < labels.sum() < len(labels):
            curves = [("reference", *roc_curve(rs, labels), "#1565c0", "0"),
                      (f"{key}", *roc_curve(es, labels), "#e65100", "5,3")]
            out.append(_svg_roc(curves, f"{cat}: image ROC"))
        raw = bundle.meta["normalization"][cat]
        op = raw.get("operating_point") or {}
        if op.get("frr_interval"):
            lo, hi = op["frr_interval"]
            out.append(f"<p>{html.escape(cat)}: operating point {html.escape(str(raw.get('rule', '')).split('; ')[0])}"
                       f"; expected false rejects {op['frr_estimate']:.2%} (95 % CI {lo:.2%}-{hi:.2%}) from "
                       f"{op['n_normals']} held-out normals; the dashed line below.</p>")
        out.append(svg_hist([("reference good", rs[labels == 0], "#1565c0"),
                              ("reference defect", rs[labels == 1], "#c62828"),
                              (f"{key} good", es[labels == 0], "#64b5f6"),
                              (f"{key} defect", es[labels == 1], "#ff8a65")], f"{cat}: normalised scores"))
    # Where engine and reference disagree most (map error in the bundle's pixel units)
    disp = []
    for i in range(len(ref)):
        norm = bundle.category_norm(str(ref.categories[i]))
        rn, en = norm.pixel(ref.maps[i]), norm.pixel(eng["anomaly_map"][i, 0])
        disp.append((float(np.abs(en - rn).mean()), i, rn, en, norm))
    disp.sort(key=lambda t: -t[0])
    out.append(f"<h2>Largest disagreements</h2><p>The {n_tiles} images whose maps differ most: image | reference "
               f"| {html.escape(key)} | difference (same colour scale; 1.0 = pixel threshold).</p>")
    for err, i, rn, en, norm in disp[:n_tiles]:
        s_r, s_e = norm.score(ref.scores[i]), norm.score(eng["score"][i])
        title = f"{ref.files[i]}  score ref {s_r:.2f} / engine {s_e:.2f}  mean |diff| {err:.3f}"
        out.append(f"<figure><img src='{_png(_disagreement_tile(ref.images[i], rn, en, title))}' alt='{i}'>"
                   f"<figcaption>{html.escape(title)}</figcaption></figure>")
    if bench:
        out.append("<h2>Bench</h2>" + bench_table_html(bench))
    out.append(f"<h2>Settings</h2><pre>{html.escape(json.dumps(result['gate_settings'], indent=1))}</pre>")
    out.append(f"<p class='info'>backend: {html.escape(json.dumps(result['backend']))}</p></body></html>")
    return "\n".join(out)


def bench_table_html(bench: dict) -> str:
    rows = ["<table><tr><th>engine</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>img/s</th>"
            "<th>peak RSS MB</th><th>vs torch</th></tr>"]
    ref = bench.get("torch_reference")
    for name, e in [*bench.get("engines", {}).items(), *([("torch eager (reference)", ref)] if ref else [])]:
        ratio = f"{ref['p50_ms'] / e['p50_ms']:.2f}x" if ref else ""
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{e['p50_ms']:.2f}</td><td>{e['p90_ms']:.2f}</td>"
                    f"<td>{e['p99_ms']:.2f}</td><td>{e['throughput_ips']:.1f}</td><td>{e['peak_rss_mb']:.0f}</td>"
                    f"<td>{ratio}</td></tr>")
    m = bench.get("machine", {})
    rows.append(f"</table><p class='info'>{html.escape(json.dumps(m))}</p>")
    return "".join(rows)


def write_html(path: Path, result: dict, ref: Reference, eng: dict, bundle: Bundle) -> None:
    from edgead.fileio import read_json

    bench_file = bundle.path / "reports" / "bench.json"
    bench = read_json(bench_file) if bench_file.is_file() else None
    atomic_write_bytes(Path(path), build_html(result, ref, eng, bundle, bench).encode())
