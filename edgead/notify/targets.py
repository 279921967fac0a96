"""Alert sinks named by URI, parsed once into typed options, and their credentials from an env file.

``mqtt://HOST[:1883]/TOPIC`` and ``mqtts://HOST[:8883]/TOPIC`` (TLS) publish each alert as JSON, QoS 1 by
default, from a persistent session. ``opcua://HOST[:4840]/NODEID`` writes ``True`` to the reject node of a
PLC for each alert; ``?score=NODEID&frame=NODEID`` write the score and the frame number too (the frame
number last, so a PLC can take a new number as "a new decision is complete").
Options: ``qos=0|1|2``, ``client_id=ID``, ``keepalive=S`` (MQTT); ``max_age=S`` (both: an alert older than
this is not sent but counted as expired, e.g. for a reject gate that must never act on an old part).

Credentials never ride on the command line: a URI with ``user:password@`` is refused. They come from
the environment, or from ``--notify-env FILE`` (lines ``KEY=VALUE``), under the names in ``CREDENTIALS``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl

from edgead.errors import EdgeadError

SCHEMES = ("mqtt", "mqtts", "opcua")
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883, "opcua": 4840}
OPTIONS = {"mqtt": ("qos", "client_id", "keepalive", "max_age"), "opcua": ("score", "frame", "max_age")}
CREDENTIALS = {
    "EDGEAD_MQTT_USERNAME": "MQTT user name", "EDGEAD_MQTT_PASSWORD": "MQTT password",
    "EDGEAD_MQTT_CA_FILE": "CA certificate (PEM) that signed the broker's certificate (mqtts://)",
    "EDGEAD_MQTT_CERT_FILE": "client certificate (PEM), for brokers that require one",
    "EDGEAD_MQTT_KEY_FILE": "the client certificate's private key (PEM)",
    "EDGEAD_OPCUA_USERNAME": "OPC UA user name", "EDGEAD_OPCUA_PASSWORD": "OPC UA password",
}
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_NODE = re.compile(r"(ns=\d{1,5};)?[isgb]=.+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str  # MQTT topic, or the OPC UA reject node id
    options: dict = field(default_factory=dict)
    text: str = ""

    @property
    def name(self) -> str:
        """A file-safe, stable name (the relay's state file): scheme, host, port and a hash of the path."""
        digest = hashlib.sha1(self.path.encode()).hexdigest()[:8]
        return f"{self.scheme}-{re.sub(r'[^A-Za-z0-9.-]', '_', self.host)}-{self.port}-{digest}"

    @property
    def max_age(self) -> float | None:
        return self.options.get("max_age")

    def __str__(self) -> str:
        return self.text


def _number(key: str, lo: float, hi: float, whole: bool = True):
    def conv(v: str):
        pattern = r"\d{1,6}" if whole else r"\d{1,6}(\.\d{1,3})?"
        if not re.fullmatch(pattern, v) or not lo <= float(v) <= hi:
            raise ValueError(f"a {'whole ' if whole else ''}number from {lo:g} to {hi:g}")
        return int(v) if whole else float(v)
    return conv


def _client_id(v: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v):
        raise ValueError("1-64 letters, digits, _ . -")
    return v


def _node(v: str) -> str:
    if not _NODE.fullmatch(v):
        raise ValueError("an OPC UA node id such as ns=2;s=Line1.Score or ns=2;i=1001")
    return v


CONVERTERS = {"qos": _number("qos", 0, 2), "client_id": _client_id, "keepalive": _number("keepalive", 5, 3600),
              "max_age": _number("max_age", 0.001, 86400, whole=False), "score": _node, "frame": _node}


def parse(text: str) -> Target:
    """One ``--notify`` URI -> a typed :class:`Target`; one-line errors naming the accepted forms."""
    where = f"--notify {text!r}"
    if _CONTROL.search(text):
        raise EdgeadError(f"{where}: contains control characters (a newline or NUL); remove them")
    if "://" not in text:
        raise EdgeadError(f"{where}: expected mqtt://HOST:1883/TOPIC, mqtts://HOST:8883/TOPIC or "
                          f"opcua://HOST:4840/ns=2;s=Line1.Reject")
    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise EdgeadError(f"{where}: unknown scheme {scheme!r}; use one of {', '.join(s + '://' for s in SCHEMES)}")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if "@" in netloc:
        raise EdgeadError(f"{where}: credentials never go on the command line; put EDGEAD_"
                          f"{'OPCUA' if scheme == 'opcua' else 'MQTT'}_USERNAME and _PASSWORD in the file given to "
                          f"--notify-env (or the service's environment)")
    host, port = _host_port(where, netloc, DEFAULT_PORTS[scheme])
    kind = "opcua" if scheme == "opcua" else "mqtt"
    if kind == "mqtt":
        if not path or any(c in path for c in "+#") or len(path) > 256 or " " in path:
            raise EdgeadError(f"{where}: needs a topic without wildcards or spaces, e.g. mqtt://{netloc}/line1/alerts")
    else:
        try:
            path = _node(path)
        except ValueError as e:
            raise EdgeadError(f"{where}: the reject node must be {e}, e.g. opcua://{netloc}/ns=2;s=Line1.Reject"
                              ) from None
    opts = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k not in OPTIONS[kind]:
            raise EdgeadError(f"{where}: option {k!r} does not apply to {scheme}://; it takes "
                              f"{', '.join(OPTIONS[kind])}")
        try:
            opts[k] = CONVERTERS[k](v)
        except ValueError as e:
            raise EdgeadError(f"{where}: option {k}={v!r} must be {e}") from None
    return Target(scheme, host, port, path, opts, text)


def _host_port(where: str, netloc: str, default: int) -> tuple[str, int]:
    host, sep, port = netloc.rpartition(":") if not netloc.endswith("]") else (netloc, "", "")
    if not sep:
        host, port = netloc, ""
    if not host or not _HOST.fullmatch(host):
        raise EdgeadError(f"{where}: expected a host name or address, e.g. 10.0.0.5 or broker.local")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise EdgeadError(f"{where}: the port must be a number 1-65535")
    return host.strip("[]"), int(port) if port else default


def exposed(env_file: Path | None, env: dict[str, str]) -> str | None:
    """A warning when the file holding a password can be read by other users, else None."""
    if env_file is None or not any(k.endswith("_PASSWORD") for k in env):
        return None
    mode = Path(env_file).stat().st_mode & 0o777
    if mode & 0o077:
        return (f"{env_file} holds a password and other users may read it (mode {mode:o}); chmod 600 {env_file}")
    return None


def credentials(env_file: Path | None) -> dict[str, str]:
    """The notifiers' credentials: the process environment (a systemd ``EnvironmentFile=``), overridden by
    ``env_file`` when given. Other keys in the file are ignored (it may be the service's whole env file)."""
    env = {k: v for k, v in os.environ.items() if k in CREDENTIALS}
    if env_file is not None:
        try:
            lines = Path(env_file).read_text().splitlines()
        except (FileNotFoundError, IsADirectoryError, PermissionError, UnicodeDecodeError) as e:
            raise EdgeadError(f"--notify-env {env_file}: unreadable ({type(e).__name__}); give a KEY=VALUE file"
                              ) from None
        for n, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            key, eq, value = line.removeprefix("export ").partition("=")
            key, value = key.strip(), value.strip()
            if not eq:
                raise EdgeadError(f"{env_file}:{n}: expected KEY=VALUE")
            if key.startswith(("EDGEAD_MQTT_", "EDGEAD_OPCUA_")) and key not in CREDENTIALS:
                raise EdgeadError(f"{env_file}:{n}: unknown key {key}; the notifiers read {', '.join(CREDENTIALS)}")
            if key in CREDENTIALS:
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                    value = value[1:-1]
                env[key] = value
    for key in ("EDGEAD_MQTT_CA_FILE", "EDGEAD_MQTT_CERT_FILE", "EDGEAD_MQTT_KEY_FILE"):
        if key in env and not Path(env[key]).is_file():
            raise EdgeadError(f"{key}={env[key]}: no such file; fix the path in {env_file or 'the environment'}")
    return env
