"""Alert notifiers beside ``events.jsonl``: MQTT and OPC UA, each fed by a relay thread from the file.

``configure(uris, env_file)`` parses every ``--notify`` URI and the credentials once (errors before
anything starts); ``open_relays(config, events)`` builds the notifiers and returns started relays. The
inspection loop only calls ``wake()``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from edgead.errors import EdgeadError
from edgead.notify.relay import Relay
from edgead.notify.targets import Target, credentials, exposed, parse


@dataclass(frozen=True)
class NotifyConfig:
    targets: list[Target]
    creds: dict[str, str]
    warning: str | None = None  # the credentials file is readable by others


def configure(uris: list[str], env_file: Path | None = None) -> NotifyConfig:
    targets = [parse(u) for u in uris]
    names = [t.name for t in targets]
    for t in targets:
        if names.count(t.name) > 1:
            raise EdgeadError(f"--notify {t.text}: given twice (same scheme, host, port and topic or node)")
    creds = credentials(env_file)
    return NotifyConfig(targets, creds, exposed(env_file, creds))


def open_notifier(target: Target, creds: dict[str, str], events: Path):
    if target.scheme in ("mqtt", "mqtts"):
        from edgead.notify.mqtt import MqttNotifier, default_client_id

        return MqttNotifier(target, creds, default_client_id(target, str(events.resolve())))
    from edgead.notify.opcua import OpcuaNotifier

    logging.getLogger("asyncua").setLevel(logging.ERROR)  # its per-connection warnings are not the user's concern
    return OpcuaNotifier(target, creds)


def open_relays(config: NotifyConfig, events: Path) -> list[Relay]:
    notifiers = [open_notifier(t, config.creds, events) for t in config.targets]
    return [Relay(n, events, events.parent / ".notify" / f"{t.name}.json", t.max_age).start()
            for n, t in zip(notifiers, config.targets, strict=True)]
