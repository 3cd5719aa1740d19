"""One supervisor task per peer tunnel (DESIGN §6): keepalives while the
tunnel is idle, rekeying (core.rekey: start, retransmit, retire the old
keys), teardown when the peer falls silent. Ending the task closes exactly
that tunnel."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import trio

from cyphonic.core import rekey
from cyphonic.core import tunnel as core

log = logging.getLogger("cyphonic.signaling")

MIN_TICK = 0.01  # never spin, whatever a timer says


async def supervise(
    tunnel: core.Tunnel,
    packet,
    keepalive: float,
    on_dead: Callable[[core.Tunnel, bool], None],
    rekey_after: float = rekey.REKEY_AFTER,
) -> None:
    while packet.by_index.get(tunnel.local_index) is tunnel:
        now = time.time()
        action = core.liveness(tunnel, now, keepalive)
        if action == "dead":
            packet.remove(tunnel)
            log.info("tunnel with %s closed: silent for %.0f s", tunnel.peer.fqdn, now - tunnel.last_received)
            on_dead(tunnel, core.carried_traffic(tunnel, now, keepalive))
            return
        if action == "keepalive":
            packet.send(tunnel, core.KEEPALIVE, b"")
        timer = packet.rekey_tick(tunnel, now, rekey_after)
        await trio.sleep(max(MIN_TICK, min(keepalive / 2, timer - now)))
