"""OPC UA notifier (asyncua): per alert, one Write service call that sets the score node (when given),
the reject node to ``True`` and the frame-number node (when given) last, so a PLC that watches the frame
number sees a complete decision. Each value is converted to the node's own data type, read at connect.
"""

from __future__ import annotations

import time

from edgead.errors import EdgeadError
from edgead.notify.relay import NotifierDown
from edgead.notify.targets import Target

TIMEOUT_S = 4.0
PROBE_S = 5.0  # between alerts, the server's state is read this often: a dead link shows before the next alert


class OpcuaNotifier:
    def __init__(self, target: Target, creds: dict[str, str]):
        try:
            import asyncua  # noqa: F401
        except ImportError:
            raise EdgeadError("--notify opcua:// needs asyncua: pip install asyncua (make setup installs it)") from None
        self.target, self.creds = target, creds
        self.description = target.text
        self.url = f"opc.tcp://{target.host}:{target.port}"
        # (node id, what goes in it), in write order
        self.fields = [(i, k) for i, k in ((target.options.get("score"), "score"), (target.path, "reject"),
                                           (target.options.get("frame"), "frame")) if i]
        self.client = None
        self.nodes: list = []
        self.types: list = []
        self._probed = 0.0

    def connect(self) -> None:
        from asyncua import sync

        c = sync.Client(self.url, timeout=TIMEOUT_S)
        if "EDGEAD_OPCUA_USERNAME" in self.creds:
            c.set_user(self.creds["EDGEAD_OPCUA_USERNAME"])
            c.set_password(self.creds.get("EDGEAD_OPCUA_PASSWORD", ""))
        try:
            c.connect()
        except Exception as e:  # asyncua raises socket, timeout and UA status errors alike
            c.tloop.stop()
            raise NotifierDown(f"OPC UA server {self.url} unreachable ({type(e).__name__}: {e})") from None
        try:
            self.nodes = [c.get_node(i) for i, _ in self.fields]
            self.types = [n.read_data_type_as_variant_type() for n in self.nodes]
        except Exception as e:
            self._drop(c)
            raise NotifierDown(f"OPC UA server {self.url}: cannot read node {self.fields[len(self.types)][0]} "
                               f"({type(e).__name__}: {e}); check the node id") from None
        self.client = c
        self._probed = time.monotonic()

    def send(self, record: dict) -> None:
        from asyncua import ua

        values = {"score": record.get("score"), "reject": True, "frame": record.get("frame")}
        try:
            self.client.write_values(self.nodes, [ua.Variant(_cast(values[k], t), t)
                                                  for (_, k), t in zip(self.fields, self.types, strict=True)])
        except Exception as e:
            raise NotifierDown(f"OPC UA write to {self.url} failed ({type(e).__name__}: {e})") from None

    def idle(self) -> None:
        """Read the server's state now and then, so a server that went away is reconnected (and reported
        down) before the next alert needs it."""
        if time.monotonic() - self._probed < PROBE_S:
            return
        self._probed = time.monotonic()
        try:
            self.client.nodes.server_state.read_value()
        except Exception as e:
            raise NotifierDown(f"OPC UA server {self.url} not answering ({type(e).__name__}: {e})") from None

    def close(self) -> None:
        if self.client is not None:
            c, self.client = self.client, None
            self._drop(c)

    @staticmethod
    def _drop(c) -> None:
        try:
            c.disconnect()  # stops the client's own event-loop thread too, whatever happens
        except Exception:
            pass


def _cast(value, vtype):
    """A Python value of the node's type (Boolean, a float type or an integer type)."""
    from asyncua import ua

    if vtype == ua.VariantType.Boolean:
        return bool(value)
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        return float(value)
    if vtype == ua.VariantType.String:
        return str(value)
    return int(round(float(value)))
