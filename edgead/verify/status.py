"""Has this bundle's graph passed ``edgead verify``? Read from the report verify leaves in the bundle.

``edgead inspect`` asks before it runs a line: an INT8 or FP16 graph that failed its gates, or was never
verified, may not flag what the PyTorch model flagged. A report counts only for the exact graph it
verified (its SHA-256 against the bundle's ``files`` entry); a graph rebuilt since makes it stale.
On TensorRT the device's own report is preferred, else the ONNX Runtime report of the same graph.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgead.bundle import Bundle


@dataclass
class Verification:
    state: str  # passed | failed | missing | stale | exported (FP32: the export's own parity check)
    report: str | None = None
    backend: str | None = None  # the backend the report was made on
    failed_levels: list[str] = field(default_factory=list)
    gates_file: str | None = None  # the report passed or failed under these overrides, not the defaults

    @property
    def trusted(self) -> bool:
        return self.state in ("passed", "exported") and self.gates_file is None

    def as_dict(self) -> dict:
        return {**asdict(self), "trusted": self.trusted}

    def describe(self, bundle: Path, key: str) -> str:
        """One line for a user: what is known and the command that settles it."""
        fix = f"edgead verify {bundle} --precision {key} --data ROOT"
        if self.state == "failed":
            return (f"{key} failed edgead verify ({', '.join(self.failed_levels)}; {self.report}): its decisions may "
                    f"differ from the PyTorch model's; rebuild it or use a precision that passes")
        if self.state == "stale":
            return (f"{key}: the edgead verify report {self.report} is of another build of this graph (or older than "
                    f"reports that name their graph); run {fix}")
        if self.state == "exported":
            return f"{key} passed the export's parity check"
        if self.state == "missing":
            return f"{key} has not been through edgead verify; run {fix}"
        if self.gates_file:
            return f"{key} passed edgead verify only under the gate overrides in {self.gates_file}"
        return f"{key} passed edgead verify ({self.report})"


def report_path(bundle: Path, key: str, backend: str) -> Path:
    """Where ``edgead verify`` leaves its report of graph ``key`` on ``backend`` (and where this module reads it)."""
    return Path(bundle) / "reports" / f"verify.{key}.{backend}.json"


def verification(b: Bundle, key: str, backend: str = "onnxruntime") -> Verification:
    """What the bundle's reports say of graph ``key`` (a resolved precision key) for ``backend``: the first report
    of this very graph (this backend's, then ONNX Runtime's), else ``stale`` when a report of another graph exists."""
    sha = (b.files.get(key) or {}).get("sha256")
    stale = None
    for run_on in dict.fromkeys([backend, "onnxruntime"]):
        p = report_path(b.path, key, run_on)
        try:
            rep = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if not sha or not isinstance(rep, dict) or rep.get("graph_sha256") != sha:
            stale = stale or Verification("stale", str(p), run_on)
            continue
        failed = sorted({r["level"] for r in rep.get("failed", []) if isinstance(r, dict) and "level" in r})
        return Verification("passed" if rep.get("passed") is True else "failed", str(p), run_on, failed,
                            rep.get("gates_file"))
    if stale:
        return stale
    if key == "fp32" and b.meta.get("export", {}).get("parity"):
        return Verification("exported")
    return Verification("missing")
