"""The Signaling Module's Trio driver: it runs the machine's timers when
they are due, and only then."""

from __future__ import annotations

import time

import trio

from tests.integration.conftest import DOMAIN, ipv4_udp
from tests.integration.test_overlay import recv_packet, resolve


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


async def test_relayed_data_never_wakes_the_signaling_timers(relay_overlay):
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    assert cn.daemon.status({})["peers"][0]["path"] == "relay"
    machine = cn.daemon.signaling.machine
    calls = []
    handle = machine.handle_timer

    def counting(now):
        calls.append(now)
        return handle(now)

    machine.handle_timer = counting
    for i in range(300):  # each one reaches cn's Signaling Module as a Relayed frame
        await mn.tun.app.send(ipv4_udp(mn.vip4, cn.vip4, b"%d" % i))
        await recv_packet(cn)
    # only the timers' own wake-ups (refresh every 1 s here), not one per packet
    assert len(calls) <= 10, len(calls)


async def test_a_changed_address_is_registered_at_once_not_at_the_next_refresh(overlay):
    where = ["127.0.0.1"]  # what the node finds on its interfaces
    mn = await overlay.start_node("mn", locators=where)

    def nat_seen() -> bool | None:
        [node] = [n for n in overlay.nms.status(time.time()) if n["fqdn"] == f"mn.{DOMAIN}"]
        return node["attachments"]["ipv4"]["nat"]

    assert nat_seen() is False
    mn.daemon.network_changed()  # the kernel said nothing changed: nothing is sent
    assert not mn.daemon.signaling.machine.registering
    where[:] = ["198.51.100.77"]  # moved: the NMS now sees another source than the locator
    mn.daemon.network_changed()
    assert mn.daemon.signaling.machine.registering  # sent now, not at the next refresh
    with trio.fail_after(5):
        while not nat_seen():
            await trio.sleep(0.02)
