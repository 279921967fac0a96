"""Alerts beyond the box, against real servers started here on 127.0.0.1: a mosquitto broker (killed and
restarted mid-run), an asyncua OPC UA server standing in for a PLC, and the Prometheus endpoint scraped
over HTTP while `edgead inspect` runs on real images."""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgead.backends import open_engine
from edgead.bundle import Bundle
from edgead.cli import app
from edgead.data.image import read_image
from edgead.errors import EdgeadError
from edgead.live.alerts import EventLog, read_events
from edgead.notify import configure, open_relays
from edgead.notify.relay import Cursor
from edgead.notify.targets import credentials, exposed, parse
from tests.conftest import threshold_at_median

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto not installed (make test installs it: "
                                  "apt-get install mosquitto)")
paho = pytest.importorskip("paho.mqtt.client", reason="paho-mqtt not installed (make test installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """mosquitto on 127.0.0.1 with persistence (a subscriber's session and queued QoS 1 messages survive a
    restart), started and stopped by the test."""

    def __init__(self, folder: Path, extra: str = "allow_anonymous true\n"):
        self.port, self.folder = _free_port(), folder
        (folder / "db").mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        # started as root, mosquitto would switch to its own user and could not read the test's folder
        self.conf.write_text(f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\npersistence true\n"
                             f"persistence_location {folder / 'db'}/\n{extra}")
        self.proc = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


class Subscriber:
    """A line system's consumer: persistent session, QoS 1, resubscribes on every connect."""

    def __init__(self, port: int, topic: str):
        self.got: list[dict] = []
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="line-dashboard", clean_session=False)
        self.c.on_connect = lambda c, _u, _f, _r, _p: c.subscribe(topic, qos=1)
        self.c.on_message = lambda _c, _u, m: self.got.append(json.loads(m.payload))
        self.c.reconnect_delay_set(0.2, 1)
        self.c.connect("127.0.0.1", port, keepalive=5)
        self.c.loop_start()
        deadline = time.monotonic() + 5
        while not self.c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the SUBACK

    def wait(self, n: int, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # anything extra (a duplicate) arrives too
        return self.got

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


@pytest.fixture(scope="module")
def bundle(export_run, tmp_path_factory):
    """The tiny CRAD bundle with its threshold at the median score of six real test images (both decisions)."""
    return export_run(tmp_path_factory.mktemp("notify") / "crad")


@pytest.fixture(scope="module")
def stills(bundle, tiny_real, tmp_path_factory):
    folder = tmp_path_factory.mktemp("stills")
    files = sorted((tiny_real / "magnetic_tile" / "test").rglob("*.png"))
    chosen = [p for p in files if p.parent.name == "good"][:3] + [p for p in files if p.parent.name != "good"][:3]
    for i, p in enumerate(chosen):
        shutil.copy(p, folder / f"{i:03d}.png")
    b = Bundle.load(bundle)
    x = np.stack([b.preprocess(read_image(p)) for p in sorted(folder.iterdir())])
    raw = open_engine(bundle, "fp32").run_batched(x)["score"].astype(float)
    threshold_at_median(bundle, "magnetic_tile", raw)
    return folder


@pytest.fixture(scope="module")
def flagged(bundle, stills) -> list[bool]:
    """Which of the stills the bundle flags (offline, the same graph and rule)."""
    b = Bundle.load(bundle)
    files = sorted(stills.iterdir())
    raw = open_engine(bundle, "fp32").run_batched(np.stack([b.preprocess(read_image(p)) for p in files]))["score"]
    return [bool(v) for v in b.category_norm("magnetic_tile").decide(raw.astype(float))]


def _inspect(bundle, source, alerts, *extra) -> tuple[int, str, dict]:
    summary = alerts.parent / f"{alerts.name}.json"
    r = CliRunner().invoke(app, ["inspect", str(bundle), "--source", source, "--category", "magnetic_tile",
                                 "--alerts", str(alerts), "--json", str(summary), *map(str, extra)])
    return r.exit_code, r.output, (json.loads(summary.read_text()) if summary.exists() else {})


@needs_broker
def test_mqtt_one_message_per_flagged_frame_with_the_event_lines_fields(bundle, stills, broker, tmp_path):
    sub = Subscriber(broker.port, "line1/alerts")
    try:
        code, out, res = _inspect(bundle, f"images://{stills}", tmp_path / "alerts", "--notify",
                                  f"mqtt://127.0.0.1:{broker.port}/line1/alerts")
        assert code == 0, out
        events = read_events(tmp_path / "alerts" / "events.jsonl")
        assert 0 < len(events) < 6  # both decisions occur
        got = sub.wait(len(events))
    finally:
        sub.close()
    assert [{k: v for k, v in m.items() if k != "retry"} for m in got] == events  # same fields, same values
    assert all(m["retry"] is False for m in got)
    n = res["notify"][0]
    assert n["delivered"] == len(events) and n["pending"] == 0 and n["retried"] == 0
    assert f"delivered {len(events)}" in out


@needs_broker
def test_live_run_keeps_inspecting_while_the_broker_is_down_and_delivers_everything_after(bundle, stills, flagged,
                                                                                          broker, tmp_path):
    """`edgead inspect` on a watched folder (a triggered camera): parts arrive before, during and after a
    broker outage; the run never stalls and the dashboard gets every alert once."""
    folder, summary = tmp_path / "drop", tmp_path / "s.json"
    folder.mkdir()
    files = sorted(stills.iterdir())
    bad = [p for p, f in zip(files, flagged, strict=True) if f]
    good = [p for p, f in zip(files, flagged, strict=True) if not f]
    assert len(bad) >= 3 and good
    sub = Subscriber(broker.port, "line1/alerts")
    proc = subprocess.Popen([sys.executable, "-m", "edgead.cli", "inspect", str(bundle), "--source",
                             f"images://{folder}?watch=1&settle=200", "--category", "magnetic_tile", "--alerts",
                             str(tmp_path / "alerts"), "--notify", f"mqtt://127.0.0.1:{broker.port}/line1/alerts",
                             "--json", str(summary)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    events = tmp_path / "alerts" / "events.jsonl"

    try:
        time.sleep(3)
        for p in (good[0], bad[0]):
            shutil.copy(p, folder / f"a-{p.name}")
        time.sleep(4)
        broker.stop()  # the broker dies mid-run; defective parts keep arriving
        for p in bad[1:-1]:
            shutil.copy(p, folder / f"b-{p.name}")
        time.sleep(4)
        assert proc.poll() is None
        broker.start()
        for p in (bad[-1], *good[1:]):
            shutil.copy(p, folder / f"c-{p.name}")
        time.sleep(6)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    want = read_events(events)
    got = sub.wait(len(want), timeout=30)
    sub.close()
    assert proc.returncode == 0, err
    res = json.loads(summary.read_text())
    assert res["frames"] == len(files) and 0 < len(want) < len(files)
    assert any(e["name"].startswith("b-") for e in want)  # alerts were raised while the broker was down
    assert sorted({m["name"] for m in got}) == sorted(e["name"] for e in want)  # every alert arrived
    plain = [m["name"] for m in got if not m["retry"]]
    assert len(plain) == len(set(plain))  # none twice without the retry flag
    n = res["notify"][0]
    assert n["delivered"] == len(want) and n["pending"] == 0, n


def _next_run(broker: Broker, uri: str, events_path: Path, n: int) -> tuple[list[dict], dict]:
    """A relay started again on the same events file (as the next run would): what a subscriber gets."""
    sub = Subscriber(broker.port, "line1/alerts")
    relay = open_relays(configure([uri]), events_path)[0]
    try:
        got = sub.wait(n)
    finally:
        stats = relay.close(5)
        sub.close()
    return got, stats


@needs_broker
def test_broker_killed_mid_run_every_alert_arrives_after_restart_a_resend_is_flagged(broker, tmp_path):
    events_path = tmp_path / "alerts" / "events.jsonl"
    log = EventLog(events_path)
    uri = f"mqtt://127.0.0.1:{broker.port}/line1/alerts"
    sub = Subscriber(broker.port, "line1/alerts")
    relay = open_relays(configure([uri]), events_path)[0]

    def alert(i: int) -> None:
        log.append({"frame": i, "unix": time.time(), "score": 1.0 + i / 10, "name": f"{i:03d}.png"})
        relay.wake()
    try:
        for i in range(5):
            alert(i)
        assert len(sub.wait(5)) == 5
        broker.stop()  # the broker dies; the line keeps inspecting, alerts wait in the file
        t0 = time.monotonic()
        for i in range(5, 10):
            alert(i)
        assert time.monotonic() - t0 < 0.5  # appending never waits for the broker
        time.sleep(1.5)
        assert relay.summary()["pending"] == 5 and relay.summary()["connected"] is False
        broker.start()
        got = sub.wait(10, timeout=60)
    finally:
        stats = relay.close(10)
        sub.close()
    frames = [m["frame"] for m in got]
    assert sorted(set(frames)) == list(range(10))  # every alert arrived
    plain = [m["frame"] for m in got if not m["retry"]]
    assert len(plain) == len(set(plain))  # none twice without the retry flag
    assert stats["delivered"] == 10 and stats["pending"] == 0 and stats["connects"] >= 2
    log.close()

    # a process that ended between sending a line and its PUBACK: the next run sends it again, flagged
    state = events_path.parent / ".notify" / f"{parse(uri).name}.json"
    cur = Cursor.load(state, events_path)
    lines = events_path.read_bytes().splitlines(keepends=True)
    cur.offset -= len(lines[-1])
    cur.attempted = cur.offset
    cur.save(state)
    again, stats = _next_run(broker, uri, events_path, 1)
    assert [(m["frame"], m["retry"]) for m in again] == [(9, True)]
    assert stats["retried"] == 1 and stats["pending"] == 0

    # the events file replaced by another one (rotated away, restored, ...): every line of the new file is new
    fresh = events_path.with_name("new.jsonl")
    log2 = EventLog(fresh)
    for i in range(12):  # a longer file than the old one: its size alone would not tell
        log2.append({"frame": 100 + i, "unix": time.time(), "score": 1.0, "name": f"r{i}.png"})
    log2.close()
    assert fresh.stat().st_size > Cursor.load(state, events_path).offset
    os.replace(fresh, events_path)
    rotated, stats = _next_run(broker, uri, events_path, 12)
    assert [m["frame"] for m in rotated] == list(range(100, 112)) and stats["pending"] == 0


@needs_broker
def test_relay_follows_the_log_through_rotations_and_counts_a_file_deleted_before_delivery(broker, tmp_path):
    from edgead.live.alerts import KEEP, chain

    events_path = tmp_path / "alerts" / "events.jsonl"
    log = EventLog(events_path, 8000)  # rotates every ~2 kB: about 11 lines a file
    uri = f"mqtt://127.0.0.1:{broker.port}/line1/alerts"
    sub = Subscriber(broker.port, "line1/alerts")
    relay = open_relays(configure([uri]), events_path)[0]

    def alert(i: int) -> None:
        log.append({"frame": i, "unix": time.time(), "score": 1.0, "name": f"{i:03d}-" + "x" * 120})
        relay.wake()
    try:
        for i in range(5):
            alert(i)
        assert len(sub.wait(5)) == 5
        broker.stop()  # alerts wait in the log while it rotates under the relay
        for i in range(5, 30):
            alert(i)
        assert 1 <= log.rotations <= KEEP  # nothing deleted yet
        time.sleep(1.0)
        assert relay.summary()["pending"] == 25
        broker.start()
        got = sub.wait(30, timeout=60)
    finally:
        stats = relay.close(10)
        sub.close()
    assert sorted({m["frame"] for m in got}) == list(range(30))  # every alert, across the rotated files
    plain = [m["frame"] for m in got if not m["retry"]]
    assert len(plain) == len(set(plain)) and stats["pending"] == 0 and stats["files_gone"] == 0

    # the relay away for longer than the log's budget: the file it was in is deleted before delivery
    for i in range(30, 120):
        log.append({"frame": i, "unix": time.time(), "score": 1.0, "name": f"{i:03d}-" + "x" * 120})
    log.close()
    kept = [e["frame"] for e in read_events(events_path, rotated_too=True)]
    assert len(chain(events_path)) == KEEP + 1 and kept[0] > 30
    again, stats = _next_run(broker, uri, events_path, len(kept))
    assert [m["frame"] for m in again] == kept  # from the oldest file left, in order
    assert stats["files_gone"] == 1 and stats["pending"] == 0


@needs_broker
def test_alerts_left_pending_at_exit_go_out_with_the_next_run(bundle, stills, broker, tmp_path):
    uri = f"mqtt://127.0.0.1:{broker.port}/line1/alerts"
    alerts = tmp_path / "alerts"
    code, out, _ = _inspect(bundle, f"images://{stills}", alerts, "--notify", uri)  # the relay's start point
    assert code == 0, out
    first = len(read_events(alerts / "events.jsonl"))
    broker.stop()
    code, out, res = _inspect(bundle, f"images://{stills}", alerts, "--notify", uri)
    assert code == 0, out  # a broker that is down never fails the inspection
    assert res["notify"][0]["pending"] == first and "pending" in out and "Traceback" not in out
    broker.start()
    sub = Subscriber(broker.port, "line1/alerts")
    try:
        code, out, res = _inspect(bundle, f"images://{stills}", alerts, "--notify", uri)
        got = sub.wait(2 * first)
    finally:
        sub.close()
    assert code == 0, out
    assert len(got) == 2 * first and res["notify"][0]["pending"] == 0
    assert [m["frame"] for m in got] == [e["frame"] for e in read_events(alerts / "events.jsonl")[first:]]


@needs_broker
@pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None,
                    reason="openssl or mosquitto_passwd missing (make test installs them)")
def test_mqtts_with_a_ca_and_credentials_from_the_env_file_and_a_wrong_password_refused(tmp_path):
    """TLS to a broker whose certificate a test CA signed (hostname checked), user and password from the
    --notify-env file; the same with a wrong password is refused, reported, and the alert stays pending."""
    pki = tmp_path / "pki"
    pki.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=edgead test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=broker")
    (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", "1", "-extfile", "san.ext")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pki / "passwd"), "line1", "s3cret"], check=True,
                   capture_output=True)
    broker = Broker(tmp_path / "tls", f"allow_anonymous false\npassword_file {pki / 'passwd'}\n"
                    f"cafile {pki / 'ca.pem'}\ncertfile {pki / 'server.pem'}\nkeyfile {pki / 'server.key'}\n").start()
    try:
        uri = f"mqtts://127.0.0.1:{broker.port}/line1/alerts"
        for password, want in (("s3cret", 1), ("wrong", 0)):
            env = tmp_path / f"{password}.env"
            env.write_text(f"EDGEAD_MQTT_USERNAME=line1\nEDGEAD_MQTT_PASSWORD={password}\n"
                           f"EDGEAD_MQTT_CA_FILE={pki / 'ca.pem'}\n")
            events_path = tmp_path / password / "events.jsonl"
            log = EventLog(events_path)
            relay = open_relays(configure([uri], env), events_path)[0]
            log.append({"frame": 7, "unix": time.time(), "score": 2.0})
            relay.wake()
            deadline = time.monotonic() + 15
            while relay.summary()["delivered"] < 1 and relay.summary()["failures"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            stats = relay.close(0.5)
            log.close()
            assert stats["delivered"] == want and stats["pending"] == 1 - want, stats
            if not want:
                assert "refused" in stats["last_error"] and "EDGEAD_MQTT_USERNAME/PASSWORD" in stats["last_error"]
        plain = open_relays(configure([f"mqtt://127.0.0.1:{broker.port}/line1/alerts"]),
                            tmp_path / "plain" / "events.jsonl")[0]
    finally:
        broker.stop()
    assert plain.close(0.1)["delivered"] == 0


def test_opcua_server_sees_score_reject_and_frame_written_for_each_flagged_frame(bundle, stills, tmp_path):
    sync = pytest.importorskip("asyncua.sync", reason="asyncua not installed (make test installs it)")
    from asyncua import ua
    from asyncua.common.callback import CallbackType

    port = _free_port()
    srv = sync.Server()
    srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    ns = srv.register_namespace("urn:edgead:test:line1")
    line = srv.nodes.objects.add_object(ua.NodeId("Line1", ns), "Line1")
    for name, value, vt in (("Reject", False, ua.VariantType.Boolean), ("Score", 0.0, ua.VariantType.Float),
                            ("Frame", 0, ua.VariantType.UInt32)):
        line.add_variable(ua.NodeId(f"Line1.{name}", ns), name, value, vt).set_writable()
    writes: list[list[tuple[str, object]]] = []

    def on_write(ev, _dispatcher) -> None:
        if ev.is_external:  # a client's Write service call (the server's own status updates are not)
            writes.append([(w.NodeId.Identifier, w.Value.Value.Value) for w in ev.request_params.NodesToWrite])
    srv.aio_obj.subscribe_server_callback(CallbackType.PostWrite, on_write)
    srv.start()
    try:
        uri = f"opcua://127.0.0.1:{port}/ns={ns};s=Line1.Reject?score=ns={ns};s=Line1.Score&frame=ns={ns};s=Line1.Frame"
        code, out, res = _inspect(bundle, f"images://{stills}", tmp_path / "alerts", "--notify", uri)
    finally:
        srv.stop()
    assert code == 0, out
    events = read_events(tmp_path / "alerts" / "events.jsonl")
    assert len(writes) == len(events) > 0 and res["notify"][0]["delivered"] == len(events)
    for w, e in zip(writes, events, strict=True):
        assert [k for k, _ in w] == ["Line1.Score", "Line1.Reject", "Line1.Frame"]  # the frame number last
        assert w[1][1] is True and w[2][1] == e["frame"] and abs(w[0][1] - e["score"]) < 1e-4


def test_opcua_server_that_goes_away_is_reported_down_between_alerts(tmp_path):
    """No alert pending: the relay's probe still notices a PLC that stopped answering (notifier up -> 0)."""
    sync = pytest.importorskip("asyncua.sync", reason="asyncua not installed (make test installs it)")
    from asyncua import ua

    port = _free_port()
    srv = sync.Server()
    srv.set_endpoint(f"opc.tcp://127.0.0.1:{port}")
    ns = srv.register_namespace("urn:edgead:test:line2")
    srv.nodes.objects.add_variable(ua.NodeId("Line2.Reject", ns), "Reject", False, ua.VariantType.Boolean
                                   ).set_writable()
    srv.start()
    events_path = tmp_path / "events.jsonl"
    log = EventLog(events_path)
    relay = open_relays(configure([f"opcua://127.0.0.1:{port}/ns={ns};s=Line2.Reject"]), events_path)[0]
    try:
        log.append({"frame": 1, "unix": time.time(), "score": 2.0})
        relay.wake()
        deadline = time.monotonic() + 15
        while relay.summary()["delivered"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert relay.summary()["connected"] is True
        srv.stop()
        deadline = time.monotonic() + 20
        while relay.summary()["connected"] and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = relay.summary()
    finally:
        relay.close(0.1)
        log.close()
    assert stats["delivered"] == 1 and stats["connected"] is False and stats["pending"] == 0
    assert "OPC UA server" in stats["last_error"]


def test_prometheus_metrics_move_while_a_watched_folder_is_inspected(bundle, stills, tmp_path):
    pytest.importorskip("prometheus_client", reason="prometheus-client not installed (make test installs it)")
    folder, port = tmp_path / "drop", _free_port()
    folder.mkdir()
    files = sorted(stills.iterdir())
    for p in files[:2]:
        shutil.copy(p, folder / p.name)
    proc = subprocess.Popen([sys.executable, "-m", "edgead.cli", "inspect", str(bundle), "--source",
                             f"images://{folder}?watch=1&settle=200", "--category", "magnetic_tile", "--alerts",
                             str(tmp_path / "alerts"), "--metrics", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def scrape() -> dict[str, float]:
        deadline = time.monotonic() + 60
        while True:
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M)}

    def frames(m: dict) -> float:
        return sum(v for k, v in m.items() if k.startswith("edgead_frames_total{"))

    def flagged_of(m: dict) -> float:
        return sum(v for k, v in m.items() if k.startswith("edgead_flagged_total{"))
    try:
        first = scrape()
        deadline = time.monotonic() + 60
        while frames(first) < 2 and time.monotonic() < deadline:
            time.sleep(0.3)
            first = scrape()
        for p in files[2:]:
            shutil.copy(p, folder / p.name)
        deadline = time.monotonic() + 60
        second = scrape()
        # alerts are written off the loop's thread: the last one may land just after its frame is counted
        while (frames(second) < len(files) or second.get("edgead_alerts_written_total", 0) < flagged_of(second)) \
                and time.monotonic() < deadline:
            time.sleep(0.3)
            second = scrape()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert frames(first) == 2 and frames(second) == len(files)
    flagged = flagged_of(second)
    assert 0 < flagged < len(files)
    assert second["edgead_alerts_written_total"] == flagged
    assert second["edgead_alert_images_skipped_total"] == second["edgead_alert_images_pruned_total"] == 0
    assert second["edgead_events_rotated_total"] == 0  # a few alerts stay far inside the default budget
    assert second["edgead_events_reopened_total"] == second["edgead_alert_folder_recreated_total"] == 0
    key = 'edgead_stage_seconds_count{stage="inference"}'
    assert first[key] == 2 and second[key] == len(files)
    info = [k for k in second if k.startswith("edgead_bundle_info{")]
    assert info and 'model="crad"' in info[0] and 'precision="fp32"' in info[0]


def test_notify_and_metrics_bad_input_is_one_line_errors(bundle, stills, tmp_path, monkeypatch):
    port = _free_port()
    cases = [
        (["--notify", "mqtt://user:secret@127.0.0.1/t"], "credentials never go on the command line"),
        (["--notify", "mqtt://127.0.0.1/line/#"], "without wildcards"),
        (["--notify", "mqtt://127.0.0.1:99999/t"], "port must be a number"),
        (["--notify", "kafka://127.0.0.1/t"], "unknown scheme"),
        (["--notify", "mqtt://127.0.0.1/t?qos=5"], "qos='5' must be"),
        (["--notify", "opcua://127.0.0.1/Line1.Reject"], "node id"),
        (["--notify", "mqtt://127.0.0.1/t", "--notify-env", str(tmp_path / "none.env")], "none.env: unreadable"),
        (["--metrics", "localhost"], "expected [ADDRESS]:PORT"),
    ]
    for args, want in cases:
        code, out, _ = _inspect(bundle, f"images://{stills}", tmp_path / "alerts", *args)
        assert code == 2 and want in out and "Traceback" not in out, (args, out)
        assert not (tmp_path / "alerts" / "events.jsonl").exists()  # refused before anything ran
    env = tmp_path / "notify.env"
    env.write_text("EDGEAD_BUNDLE=/opt/x\nEDGEAD_MQTT_PASWORD=typo\n")
    with pytest.raises(EdgeadError, match=r"notify.env:2: unknown key EDGEAD_MQTT_PASWORD"):
        credentials(env)
    env.write_text("# the service's env file\nEDGEAD_MQTT_USERNAME=line1\nexport EDGEAD_MQTT_PASSWORD='s3 cret'\n")
    monkeypatch.setenv("EDGEAD_MQTT_USERNAME", "from-environment")
    assert credentials(env) == {"EDGEAD_MQTT_USERNAME": "line1", "EDGEAD_MQTT_PASSWORD": "s3 cret"}
    env.chmod(0o644)
    assert "chmod 600" in exposed(env, credentials(env))
    env.chmod(0o600)
    assert exposed(env, credentials(env)) is None
    assert parse("mqtts://broker.local/a/b?qos=0&max_age=2.5").port == 8883
    with socket.socket() as s:  # a port already taken
        s.bind(("127.0.0.1", port))
        s.listen()
        code, out, _ = _inspect(bundle, f"images://{stills}", tmp_path / "alerts2", "--metrics", f"127.0.0.1:{port}")
    assert code == 2 and "cannot listen" in out


def test_relay_never_blocks_and_counts_expired_alerts(tmp_path):
    """Nothing listens on the port: appending stays instant; alerts older than max_age are expired, not sent."""
    events_path = tmp_path / "events.jsonl"
    log = EventLog(events_path)
    relay = open_relays(configure([f"mqtt://127.0.0.1:{_free_port()}/t?max_age=60"]), events_path)[0]
    t0 = time.monotonic()
    log.append({"frame": 1, "unix": time.time() - 3600})  # an hour old: a reject gate must never act on it
    log.append({"frame": 2, "unix": time.time()})
    relay.wake()
    assert time.monotonic() - t0 < 0.5
    time.sleep(1.0)
    stats = relay.close(0.5)
    log.close()
    assert stats["expired"] == 1 and stats["delivered"] == 0 and stats["pending"] == 1
    assert "unreachable" in stats["last_error"]
