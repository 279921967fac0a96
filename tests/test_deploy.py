"""The Jetson deploy kit cannot rot: the acceptance script runs here on ONNX Runtime end to end, and the
systemd unit only uses options the CLI has."""

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

from typer.testing import CliRunner

from edgead.cli import app
from tests.conftest import built

ROOT = Path(__file__).resolve().parents[1]


def test_acceptance_script_runs_every_gpu_free_step(export_run, tmp_path):
    bundle = export_run(tmp_path / "bundle")
    r = subprocess.run(["bash", str(ROOT / "scripts" / "jetson_acceptance.sh"), str(bundle), str(tmp_path / "acc")],
                       capture_output=True, text=True, env={**os.environ, "EDGEAD_BACKEND": "onnxruntime"})
    assert r.returncode == 2 and "no reference outputs" in r.stderr  # the reference is made where the run is
    assert CliRunner().invoke(app, ["verify", str(bundle)]).exit_code == 0
    r = subprocess.run(["bash", str(ROOT / "scripts" / "jetson_acceptance.sh"), str(bundle), str(tmp_path / "acc")],
                       capture_output=True, text=True, env={**os.environ, "EDGEAD_BACKEND": "onnxruntime"})
    assert r.returncode == 2 and "no INT8 Q/DQ graph" in r.stderr  # INT8 is calibrated on the workstation
    r = CliRunner().invoke(app, ["build", str(bundle), "--precision", "int8", "--recipe", "tensorrt",
                                 "--calib-count", "8", "--qad", "never", "--no-fallback"])
    built(r.exit_code, r.output, bundle, "int8-tensorrt")
    int8 = (bundle / "model.int8-tensorrt.onnx").read_bytes()
    r = subprocess.run(["bash", str(ROOT / "scripts" / "jetson_acceptance.sh"), str(bundle), str(tmp_path / "acc")],
                       capture_output=True, text=True, env={**os.environ, "EDGEAD_BACKEND": "onnxruntime"},
                       timeout=900)
    summary = json.loads((tmp_path / "acc" / "summary.json").read_text())
    assert summary["backend"] == "onnxruntime" and set(summary["verify"]) == {"fp32", "fp16", "int8"}
    assert summary["verify"]["fp32"]["passed"]
    assert summary["camera"]["bundle"]["passed"] and set(summary["camera"]) == {"bundle", "pipeline"}
    assert all(c["size"] == [1920, 1080] for c in summary["camera"]["pipeline"]["cameras"])
    assert set(summary["bench"]) == {"onnxruntime fp32", "onnxruntime fp16", "onnxruntime int8-tensorrt"}
    all_ok = all(v["passed"] for v in summary["verify"].values())
    assert r.returncode == (0 if all_ok else 1) and summary["all_steps_passed"] == all_ok, r.stdout
    assert (bundle / "model.int8-tensorrt.onnx").read_bytes() == int8  # the device compiles what was shipped
    for name in ("doctor.json", "verify-int8.html", "bench.json", "log.txt", "bundle-meta.json"):
        assert (tmp_path / "acc" / name).is_file(), name
    with tarfile.open(tmp_path / "acc.tar.gz") as t:
        assert "acc/summary.json" in t.getnames()


def test_service_template_unit_uses_existing_cli_options():
    unit = (ROOT / "deploy" / "edgead-inspect@.service").read_text()
    exec_start = re.search(r"ExecStart=(.+?)\n(?!\s)", unit.replace("\\\n", " "), re.S).group(1)
    env_text = (ROOT / "deploy" / "inspect.env").read_text()
    used = set(re.findall(r"(--[a-z][a-z-]+)", exec_start + env_text))  # the example extra args count too
    help_text = CliRunner().invoke(app, ["inspect", "--help"], env={"COLUMNS": "200"}).output
    assert {"--notify", "--metrics"} <= used and all(flag in help_text for flag in used), used
    env = dict(line.split("=", 1) for line in env_text.splitlines() if line and not line.startswith("#"))
    assert set(re.findall(r"\$\{?(\w+)\}?", exec_start)) <= set(env)
    assert "EnvironmentFile=/etc/edgead/%i.env" in unit and "/var/lib/edgead/%i/alerts" in unit
    from edgead.live.telemetry import parse_address
    from edgead.notify.targets import parse

    examples = re.findall(r"--notify (\S+)", env_text)
    assert len(examples) == 2 and [parse(u).scheme for u in examples] == ["mqtts", "opcua"]
    assert parse_address(re.search(r"--metrics (\S+)", env_text).group(1)) == ("0.0.0.0", 9108)
