"""The Packet Handling Module's tunnel table: which tunnel a capsule's
receiver index and a packet's destination name. A mixin of
PacketHandlingModule; the per-packet paths read `by_index` and `routes`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from cyphonic.core import tunnel as core

if TYPE_CHECKING:
    from cyphonic.core.relay import RelayLink

# A tunnel a new path replaced still opens data for this long (what was in
# flight on the old path), at most this many at once
Address = tuple[str, int]
REPLACED_FOR = 2.0
MAX_REPLACED = 256


class TunnelTable:
    # What this mixin uses from PacketHandlingModule. For the type checker
    # only: a definition here would shadow the real one.
    if TYPE_CHECKING:
        _relay_links: dict[int, RelayLink]

        def _link_relay(self, tunnel: core.Tunnel) -> None: ...

        def _unlink_relay(self, tunnel: core.Tunnel) -> None: ...

    def __init__(self) -> None:
        self.by_index: dict[int, core.Tunnel] = {}  # current keys' index -> tunnel
        self._others: dict[int, core.Tunnel] = {}  # previous / next keys' index -> tunnel
        # tunnels a new path replaced: they still open what was in flight on
        # the old path for a while (make before break), and send nothing
        self._replaced: dict[int, tuple[core.Tunnel, float]] = {}
        self._probes: list[tuple[core.Tunnel, Address]] = []  # shared by every tunnel
        # destination -> tunnel: the peer's virtual IPs (the adapter: the
        # general node's and the peer's, `route_keys`)
        self.routes: dict[bytes, core.Tunnel] = {}

    # -- tunnel table ---------------------------------------------------------

    def route_keys(self, tunnel: core.Tunnel) -> tuple[bytes, bytes]:
        """The keys `_route` finds `tunnel` under: the peer's virtual IPv4 and IPv6."""
        return tunnel.peer.vip4_bytes, tunnel.peer.vip6_bytes

    def install(self, tunnel: core.Tunnel) -> core.Tunnel | None:
        """Add `tunnel`; returns the tunnel it replaces for the same peer."""
        keys = self.route_keys(tunnel)
        old = self.routes.get(keys[0])
        if old is not None:
            self.remove(old)
            now = time.time()
            for index, (_, until) in list(self._replaced.items()):
                if until <= now:
                    del self._replaced[index]
            if len(self._replaced) < MAX_REPLACED:
                self._replaced[old.local_index] = (old, now + REPLACED_FOR)
        tunnel.probes = self._probes
        self._link_relay(tunnel)
        self.by_index[tunnel.local_index] = tunnel
        for index in tunnel.indices()[1:]:
            self._others[index] = tunnel
        for key in keys:
            self.routes[key] = tunnel
        return old

    def remove(self, tunnel: core.Tunnel) -> None:
        self._unlink_relay(tunnel)
        for index in tunnel.indices():
            if self.by_index.get(index) is tunnel:
                del self.by_index[index]
            if self._others.get(index) is tunnel:
                del self._others[index]
        for key in self.route_keys(tunnel):
            if self.routes.get(key) is tunnel:
                del self.routes[key]

    def tunnel_to(self, fqdn: str) -> core.Tunnel | None:
        for t in self.by_index.values():
            if t.peer.fqdn == fqdn:
                return t
        return None

    def _route(self, packet: bytes | memoryview) -> core.Tunnel | None:
        version = packet[0] >> 4 if packet else 0
        if version == 4:
            return self.routes.get(bytes(packet[16:20]))
        if version == 6:
            return self.routes.get(bytes(packet[24:40]))
        return None
