"""Facts about the machine: small file reads, optional commands, Jetson detection (bench, doctor, live)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def read_text(path: str | Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace").strip("\x00 \n")
    except OSError:
        return None


def run_cmd(args: list[str]) -> str | None:
    """A command's output, or None when it is not installed, fails to start or hangs."""
    if not shutil.which(args[0]):
        return None
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (r.stdout or r.stderr).strip() or None


def jetson_model() -> str | None:
    return read_text("/proc/device-tree/model")


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").is_file() or "jetson" in (jetson_model() or "").lower()


def jetson_facts() -> dict | None:
    """Jetson model, L4T release, power mode, clocks and temperatures; None when not on a Jetson."""
    if not is_jetson():
        return None
    release = read_text("/etc/nv_tegra_release")
    temps = {}
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*")):
        t = read_text(zone / "temp")
        if t and t.lstrip("-").isdigit():
            temps[read_text(zone / "type") or zone.name] = int(t) / 1000
    gpu_freq = next((read_text(p) for p in Path("/sys/devices").glob("**/devfreq/*gpu*/cur_freq")), None)
    return {"model": jetson_model(), "l4t": release.splitlines()[0] if release else None,
            "power_mode": run_cmd(["nvpmodel", "-q"]), "jetson_clocks": run_cmd(["jetson_clocks", "--show"]),
            "gpu_cur_freq_hz": gpu_freq, "temperatures_c": temps}
