"""The Signaling Module's Trio driver: it runs the machine's timers when
they are due, and only then."""

from __future__ import annotations

import trio

from tests.integration.test_overlay import resolve
from tests.integration.conftest import DOMAIN


async def test_an_idle_node_wakes_only_for_its_timers(overlay):
    mn = await overlay.start_node("mn")
    cn = await overlay.start_node("cn")
    await resolve(mn, f"cn.{DOMAIN}")
    machine = mn.daemon.signaling.machine
    calls = []
    handle = machine.handle_timer

    def counting(now):
        calls.append(now)
        return handle(now)

    machine.handle_timer = counting
    await trio.sleep(2)
    # refreshes (every 1 s in this overlay) and their retransmission checks:
    # a handful of wake-ups, never a loop spinning on an event already set
    assert 1 <= len(calls) <= 20, len(calls)
    assert cn.daemon.signaling.registered  # and the refreshes kept working
