"""The ``--variant auto`` choice made again on a run's existing probes (``RUN/probes/<name>``), on their
validation set with the synthetic anomalies at full strength or graded. Validation images only; the run
is not changed.

    .venv/bin/python scripts/variant_choice.py RUN [--strengths full|graded]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from edgead.data.heldout import STRENGTHS
from edgead.models import model_class
from edgead.runs import read_run
from edgead.variant_select import PROBES, decide


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--strengths", choices=STRENGTHS,
                    help="the validation anomalies' strengths (default: the ones the probes were validated with)")
    a = ap.parse_args()
    first = read_run(a.run)
    cls = model_class(first["model"])
    names = list(cls.variants)
    runs = {n: read_run(a.run / PROBES / n) for n in names}
    if a.strengths:
        runs[names[0]] = {**runs[names[0]], "validation": {"strengths": a.strengths}}
    record = decide(SimpleNamespace(out=a.run), names, runs, cls)
    print(json.dumps({k: record[k] for k in ("chosen", "candidate", "val_score", "bootstrap")}))


if __name__ == "__main__":
    main()
