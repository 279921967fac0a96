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


def native_bf16(device) -> str | None:
    """Why ``device`` (a torch.device or its name) runs bfloat16 matmuls and convolutions in hardware, or None
    when it would emulate them (slower than FP32): CUDA from compute capability 8.0 (Ampere, Jetson Orin), x86
    CPUs with AVX512-BF16 or AMX-BF16 (through oneDNN)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"GPU compute capability {major}.{minor}" if major >= 8 else None
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    caps = getattr(torch.cpu, "get_capabilities", dict)()  # private in torch 2.x: absent means "not known"
    found = [name for key, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")) if caps.get(key)]
    return f"CPU with {' and '.join(found)}" if found else None
