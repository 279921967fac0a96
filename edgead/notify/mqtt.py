"""MQTT notifier (paho-mqtt): one JSON message per alert, QoS 1 from a persistent session by default.

The relay's thread drives the network loop itself (``Client.loop``), so paho never reconnects or
re-sends on its own: a message goes out again only when the relay sends it again, flagged as a retry.
Each connection is a new client with the same id and ``clean_session=False``: the broker keeps the
session (and QoS 1/2 state) across reconnects.
"""

from __future__ import annotations

import json
import socket
import ssl
import time

from edgead.errors import EdgeadError
from edgead.notify.relay import NotifierDown
from edgead.notify.targets import Target

ACK_TIMEOUT_S = 10.0


def default_client_id(target: Target, events: str) -> str:
    import hashlib

    digest = hashlib.sha1(f"{events}|{target.path}".encode()).hexdigest()[:8]
    return f"edgead-{socket.gethostname()[:32]}-{digest}"


class MqttNotifier:
    def __init__(self, target: Target, creds: dict[str, str], client_id: str):
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError:
            raise EdgeadError("--notify mqtt:// needs paho-mqtt: pip install paho-mqtt (make setup installs it)"
                              ) from None
        self.target, self.creds = target, creds
        self.client_id = target.options.get("client_id", client_id)
        self.qos = target.options.get("qos", 1)
        self.keepalive = target.options.get("keepalive", 30)
        self.description = target.text
        self.client = None
        tls = target.scheme == "mqtts"
        if not tls and any(k in creds for k in ("EDGEAD_MQTT_CA_FILE", "EDGEAD_MQTT_CERT_FILE")):
            raise EdgeadError(f"--notify {target.text}: certificates are set but the scheme is mqtt://; use "
                              f"mqtts:// for TLS")

    def connect(self) -> None:
        from paho.mqtt import client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                        protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        if "EDGEAD_MQTT_USERNAME" in self.creds:
            c.username_pw_set(self.creds["EDGEAD_MQTT_USERNAME"], self.creds.get("EDGEAD_MQTT_PASSWORD"))
        if self.target.scheme == "mqtts":
            c.tls_set(ca_certs=self.creds.get("EDGEAD_MQTT_CA_FILE"), certfile=self.creds.get("EDGEAD_MQTT_CERT_FILE"),
                      keyfile=self.creds.get("EDGEAD_MQTT_KEY_FILE"), cert_reqs=ssl.CERT_REQUIRED)
        state: dict = {}
        c.on_connect = lambda _c, _u, _f, reason, _p: state.setdefault("reason", reason)
        c.connect_timeout = 5.0
        try:
            c.connect(self.target.host, self.target.port, keepalive=self.keepalive)
        except ssl.SSLError as e:
            raise NotifierDown(f"TLS to {self.target.host}:{self.target.port} failed ({e.reason}); check "
                               f"EDGEAD_MQTT_CA_FILE") from None
        except OSError as e:
            where = f"{self.target.host}:{self.target.port}"
            raise NotifierDown(f"broker {where} unreachable ({e.strerror or e})") from None
        deadline = time.monotonic() + 5.0
        while "reason" not in state:
            rc = c.loop(timeout=0.1)
            if "reason" in state:  # a refusal arrives as a CONNACK too (and an error code from loop)
                break
            if rc != mqtt.MQTT_ERR_SUCCESS or time.monotonic() > deadline:
                c.disconnect()
                raise NotifierDown(f"broker {self.target.host}:{self.target.port} gave no CONNACK "
                                   f"({mqtt.error_string(rc)})")
        if state["reason"].is_failure:
            c.disconnect()
            raise NotifierDown(f"broker {self.target.host}:{self.target.port} refused the connection "
                               f"({state['reason']}); check EDGEAD_MQTT_USERNAME/PASSWORD")
        self.client = c

    def send(self, record: dict) -> None:
        from paho.mqtt import client as mqtt

        c = self.client
        info = c.publish(self.target.path, json.dumps(record, separators=(",", ":")), qos=self.qos)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise NotifierDown(f"publish failed ({mqtt.error_string(info.rc)})")
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while not info.is_published():
            rc = c.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                raise NotifierDown(f"connection lost ({mqtt.error_string(rc)})")
            if time.monotonic() > deadline:
                raise NotifierDown(f"no PUBACK in {ACK_TIMEOUT_S:g} s")

    def idle(self) -> None:
        from paho.mqtt import client as mqtt

        rc = self.client.loop(timeout=0.0)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            raise NotifierDown(f"connection lost ({mqtt.error_string(rc)})")

    def close(self) -> None:
        if self.client is not None:
            c, self.client = self.client, None
            try:
                c.disconnect()
                c.loop(timeout=0.0)
            except (OSError, ValueError):
                pass
