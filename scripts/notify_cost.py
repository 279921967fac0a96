"""What alert notifiers and the metrics endpoint cost the inspection loop: one `edgead inspect` run per setting
on the same stills, with every frame flagged (the worst case: an alert per frame).

    .venv/bin/python scripts/notify_cost.py --bundle B --data ROOT --category C [--images 60] [--json out.json]

Settings: none; --notify mqtt:// (a mosquitto started here on 127.0.0.1); --notify opcua:// (an asyncua
server in its own process); --metrics with a scrape every 0.5 s; all three. Reports frame-time and
alert-stage percentiles and fps as ratios to the first run (one run each, on this machine).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

OPCUA_SERVER = """
import sys, time
from asyncua import sync, ua
srv = sync.Server(); srv.set_endpoint(f"opc.tcp://127.0.0.1:{sys.argv[1]}")
ns = srv.register_namespace("urn:edgead:line1")
line = srv.nodes.objects.add_object(ua.NodeId("Line1", ns), "Line1")
for n, v, t in (("Reject", False, ua.VariantType.Boolean), ("Score", 0.0, ua.VariantType.Double),
                ("Frame", 0, ua.VariantType.Int64)):
    line.add_variable(ua.NodeId(f"Line1.{n}", ns), n, v, t).set_writable()
srv.start(); print("ready", ns, flush=True)
time.sleep(3600)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--category", required=True)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from edgead.fileio import atomic_write_json, read_json
    from edgead.live.inspect import InspectRequest, inspect

    work = Path(tempfile.mkdtemp(prefix="edgead-notify-cost-"))
    bundle = work / "bundle"
    shutil.copytree(a.bundle, bundle)
    meta = read_json(bundle / "meta.json")
    n = meta["normalization"][a.category]
    n["center"], n["scale"] = -1.0, 1e-3  # every frame flagged: an alert per frame
    n["threshold"] = n["center"] + n["scale"]
    atomic_write_json(bundle / "meta.json", meta)
    stills = work / "stills"
    stills.mkdir()
    for i, p in enumerate(sorted((a.data / a.category / "test").rglob("*.png"))[: a.images]):
        shutil.copy(p, stills / f"{i:04d}.png")

    port_mq, port_ua, port_m = free_port(), free_port(), free_port()
    (work / "db").mkdir()
    (work / "mosquitto.conf").write_text(f"listener {port_mq} 127.0.0.1\nallow_anonymous true\n")
    mosq = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(work / "mosquitto.conf")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ua = subprocess.Popen([sys.executable, "-c", OPCUA_SERVER, str(port_ua)], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
    ns = ua.stdout.readline().split()[1]
    wait_port(port_mq)
    wait_port(port_ua)
    mqtt = f"mqtt://127.0.0.1:{port_mq}/line1/alerts"
    opcua = f"opcua://127.0.0.1:{port_ua}/ns={ns};s=Line1.Reject?score=ns={ns};s=Line1.Score&frame=ns={ns};s=Line1.Frame"
    settings = {"none": {}, "mqtt": {"notify": [mqtt]}, "opcua": {"notify": [opcua]},
                "metrics": {"metrics": f"127.0.0.1:{port_m}"},
                "all": {"notify": [mqtt, opcua], "metrics": f"127.0.0.1:{port_m}"}}
    rows = {}
    try:
        for name, extra in settings.items():
            stop = threading.Event()
            scrapes = [0]

            def scrape(stop=stop, scrapes=scrapes) -> None:
                while not stop.wait(0.5):
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port_m}/metrics", timeout=1).read()
                        scrapes[0] += 1
                    except OSError:
                        pass
            t = threading.Thread(target=scrape, daemon=True)
            if "metrics" in extra:
                t.start()
            res = inspect(InspectRequest(bundle=bundle, source=f"images://{stills}", category=a.category,
                                         alerts_dir=work / f"alerts-{name}", quiet=True, **extra))
            stop.set()
            st = res["stages"]
            rows[name] = {"frames": res["frames"], "flagged": res["flagged"], "fps": res["fps"],
                          "frame_p50_ms": st["frame"]["p50_ms"], "frame_p99_ms": st["frame"]["p99_ms"],
                          "alert_p50_ms": st["alert"]["p50_ms"], "alert_p99_ms": st["alert"]["p99_ms"],
                          "notify": [{k: x[k] for k in ("notify", "delivered", "pending", "retried")}
                                     for x in res["notify"]], "scrapes": scrapes[0]}
    finally:
        mosq.terminate()
        ua.terminate()
    base = rows["none"]
    for r in rows.values():
        r["fps_ratio"] = r["fps"] / base["fps"]
        r["frame_p50_ratio"] = r["frame_p50_ms"] / base["frame_p50_ms"]
    out = {"bundle": str(a.bundle), "images": a.images, "every_frame_flagged": True, "runs": rows}
    print(f"{'setting':8} {'fps':>6} {'ratio':>6} {'frame p50':>10} {'p99':>7} {'alert p50':>10} {'p99':>7}  delivered")
    for k, r in rows.items():
        print(f"{k:8} {r['fps']:6.1f} {r['fps_ratio']:6.2f} {r['frame_p50_ms']:10.2f} {r['frame_p99_ms']:7.2f} "
              f"{r['alert_p50_ms']:10.3f} {r['alert_p99_ms']:7.3f}  "
              + ", ".join(f"{x['delivered']}/{r['flagged']}" for x in r["notify"]))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
