"""One supervisor task per peer tunnel (DESIGN §6): keepalives while the
tunnel is idle, probes when data goes out and nothing comes back, the
path's failure after a second of that (the Signaling Module then selects
another path), rekeying (core.rekey: start, retransmit, retire the old
keys), teardown when the peer falls silent. Ending the task closes exactly
that tunnel."""

from __future__ import annotations

import logging
import time
from typing import Protocol

import trio

from cyphonic.core import liveness, rekey
from cyphonic.core import tunnel as core

log = logging.getLogger("cyphonic.signaling")

MIN_TICK = 0.01  # never spin, whatever a timer says


class Owner(Protocol):
    """What a supervisor tells the Signaling Module that owns the tunnel."""

    @property
    def offline(self) -> bool: ...
    def tunnel_died(self, tunnel: core.Tunnel, carried_traffic: bool) -> None: ...
    def path_failed(self, tunnel: core.Tunnel) -> None: ...


async def supervise(
    tunnel: core.Tunnel,
    packet,
    owner: Owner,
    keepalive: float,
    rekey_after: float = rekey.REKEY_AFTER,
) -> None:
    while packet.by_index.get(tunnel.local_index) is tunnel:
        now = time.time()
        action = liveness.liveness(tunnel, now, keepalive, owner.offline)
        if action == "dead":
            packet.remove(tunnel)
            log.info("tunnel with %s closed: silent for %.0f s", tunnel.peer.fqdn, now - tunnel.last_received)
            owner.tunnel_died(tunnel, liveness.carried_traffic(tunnel, now, keepalive))
            return
        if action == "failed":
            tunnel.failed_at = now
            log.info(
                "tunnel with %s: nothing back for %.1f s while sending: path via %s:%s failed",
                tunnel.peer.fqdn,
                now - tunnel.last_received,
                *tunnel.endpoint,
            )
            owner.path_failed(tunnel)
        elif action in ("probe", "keepalive"):
            if action == "probe":
                tunnel.probed = now
            packet.send(tunnel, core.KEEPALIVE, b"")
        timer = packet.rekey_tick(tunnel, now, rekey_after)
        await trio.sleep(max(MIN_TICK, min(liveness.next_check(tunnel, now, keepalive), timer) - now))
