"""Mobility and failover in the Signaling machine (core.signaling.mobility),
on the simulated network of test_signaling_machine: a host that moves
takes a new address (and, behind a NAPT, a new mapping) and is told its
new locators, as the driver tells it from netlink."""

from __future__ import annotations

import pytest

from cyphonic.core.signaling import events as ev
from cyphonic.core.signaling import mobility, punching
from cyphonic.wire.common import TYPE
from cyphonic.wire.tunnel import DATA_TYPES
from tests.unit.test_signaling_machine import CN, DOMAIN, MN, TRS, Host, Net, registered_pair

MOVED = ("198.51.101.10", 4500)


@pytest.fixture
def net(tmp_path) -> Net:
    return Net(tmp_path)


@pytest.fixture
def relay_net(tmp_path) -> Net:
    return Net(tmp_path, trs=True)


def move(net: Net, host: Host, address: tuple[str, int], locators: list[str] | None = None) -> None:
    """The host's uplink is now elsewhere: datagrams come from `address`."""
    del net.hosts[host.address]
    host.address = address
    net.hosts[address] = host
    host.locators = [address[0]] if locators is None else locators
    host.machine.moved(net.now, host.locators)


def tunnel_of(host: Host):
    [tunnel] = host.machine.tunnels.values()
    return tunnel


def test_a_same_family_move_keeps_the_tunnel_and_the_peer_follows_the_update(net):
    mn, cn = registered_pair(net)
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 0.1)
    before = tunnel_of(mn)
    move(net, mn, MOVED)
    net.settle(until=net.now + 0.5)
    # the same tunnel, the same End Keys: the peer moved its endpoint to the update's source
    assert tunnel_of(mn) is before and len(net.of(mn, ev.TunnelEstablished)) == 1
    assert tunnel_of(cn).endpoint == MOVED
    assert before.update_nonce is None  # acknowledged: no more retransmissions
    updates = [s for d, s, dest in net.sent if d[0] == TYPE["TunnelUpdate"]]
    assert updates == [MOVED]
    assert mn.machine.path_changes == 0
    # and the NMS has the new locator
    assert [r for r in net.of(mn, ev.Registered) if r.observed == f"{MOVED[0]}:{MOVED[1]}"]


def test_an_unacknowledged_update_is_sent_again_then_the_path_is_selected_again(net):
    mn, cn = registered_pair(net)
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 0.1)
    # cn's side takes no update (a firewall that knows only the old address)
    net.lose = lambda d, s, dest: d[0] == TYPE["TunnelUpdate"]
    start = net.now
    move(net, mn, MOVED)
    net.settle(until=start + 3)
    sent = [round(t - start, 2) for t, dest in net.send_log if dest == CN and t >= start]
    assert sent[: len(mobility.UPDATE_AT)] == list(mobility.UPDATE_AT)
    assert mn.machine.path_changes == 1
    assert len(net.of(mn, ev.TunnelEstablished)) == 2  # a new tunnel on the path the NMS named
    assert tunnel_of(cn).endpoint == MOVED


def test_a_peer_that_opened_the_path_to_us_gets_a_new_one_when_we_move(net):
    # cn behind NAPT opened the tunnel to mn (reverse path); its NAPT drops
    # whatever comes from mn's new address
    mn, cn = registered_pair(net, cn_locators=["192.168.2.10"])
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 0.1)
    assert tunnel_of(mn).path.process == "TunnelRequestToNATcn"
    net.lose = lambda d, s, dest: s == MOVED and dest == CN and d[0] in DATA_TYPES
    start = net.now
    move(net, mn, MOVED)
    net.settle(until=start + 0.2)  # well before the update's retransmissions give up
    assert mn.machine.path_changes == 1
    assert [e.tunnel.endpoint for e in net.of(cn, ev.TunnelEstablished)][-1] == MOVED


def test_a_relayed_end_that_moves_moves_its_side_at_the_trs_and_punches_again(relay_net):
    net = relay_net
    mn, cn = registered_pair(net, mn_locators=["192.168.1.10"], cn_locators=["192.168.2.10"])
    net.lose = lambda d, s, dest: s in (MN, CN, MOVED) and dest in (MN, CN, MOVED)  # no punch gets through
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 1)
    tunnel = tunnel_of(mn)
    assert tunnel.relayed
    [session] = net.services[TRS].sessions.values()
    announced = len([1 for d, s, dest in net.sent if dest == TRS and s == MN])
    net.settle(until=net.now + 2)
    move(net, mn, MOVED, locators=["192.168.9.10"])  # behind another NAPT
    net.settle(until=net.now + 0.5)
    assert MOVED in [side.endpoint for side in session.sides.values()]
    assert tunnel_of(mn) is tunnel and mn.machine.path_changes == 0  # still relayed, same keys
    assert len([1 for d, s, dest in net.sent if dest == TRS and s == MOVED]) >= 2  # Keep Alive, then announce
    assert announced
    # the announcement started a punch round at both ends, from the new address
    assert [1 for d, s, dest in net.sent if s == MOVED and dest == CN]


def test_a_relayed_tunnel_whose_punch_failed_tries_again_with_backoff(relay_net):
    net = relay_net
    mn, cn = registered_pair(net, mn_locators=["192.168.1.10"], cn_locators=["192.168.2.10"])
    net.lose = lambda d, s, dest: s in (MN, CN) and dest in (MN, CN)
    start = net.now
    mn.machine.route_to(f"cn.{DOMAIN}", start)
    net.settle(until=start + 30)
    rounds = _punch_round_starts(net, start)
    gaps = [b - a for a, b in zip(rounds, rounds[1:], strict=False)]
    # each retry counts from the end of the round before (PUNCHES x PUNCH_INTERVAL)
    expected = [punching.PUNCH_RETRY_FIRST, 2 * punching.PUNCH_RETRY_FIRST]
    assert len(gaps) >= 2 and all(abs(g - e) < 0.5 for g, e in zip(gaps, expected, strict=False)), gaps
    # and on, twice as late each time, while the tunnel stays relayed
    net.settle(until=start + 80)
    rounds = _punch_round_starts(net, start)
    gaps = [b - a for a, b in zip(rounds, rounds[1:], strict=False)]
    assert abs(gaps[2] - 4 * punching.PUNCH_RETRY_FIRST) < 0.5, gaps


def _punch_round_starts(net: Net, start: float) -> list[float]:
    """When mn sent straight to cn after a pause: a round's first punch."""
    times = [
        t for (t, dest), (_, s, _) in zip(net.send_log, net.sent, strict=True) if s == MN and dest == CN and t >= start
    ]
    return [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > 1]


def test_both_ends_failing_at_once_settle_on_one_new_tunnel(net):
    mn, cn = registered_pair(net)
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 0.1)
    # both notice the failure in the same instant and both ask the NMS
    cn.machine.path_failed(tunnel_of(cn), net.now)
    mn.machine.path_failed(tunnel_of(mn), net.now)
    assert cn.machine.path_changes == mn.machine.path_changes == 1
    net.settle(until=net.now + 3)
    # one path: the second asker was told the first's was under way, and its
    # selection ended with the tunnel the first one's path brought
    assert len({e.tunnel.path.path_id for e in net.of(mn, ev.TunnelEstablished)[1:]}) == 1
    assert tunnel_of(mn).path.path_id == tunnel_of(cn).path.path_id
    assert tunnel_of(mn).remote_index == tunnel_of(cn).local_index
    assert len(net.of(mn, ev.RouteSelected)) == 2 and len(net.of(cn, ev.RouteSelected)) == 1
    assert not net.of(mn, ev.RouteFailed) and not net.of(cn, ev.RouteFailed)


def test_without_an_uplink_routes_fail_at_once_and_tunnels_wait_for_the_next_one(net):
    mn, cn = registered_pair(net)
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 0.1)
    tunnel = tunnel_of(mn)
    mn.machine.moved(net.now, [])
    assert mn.machine.offline and not mn.machine.registered
    mn.machine.route_to(f"nobody.{DOMAIN}", net.now)
    [failed] = net.of(mn, ev.RouteFailed) or [mn.machine.next_event()]
    assert isinstance(failed, ev.RouteFailed) and "no uplink" in failed.reason
    mn.machine.path_failed(tunnel, net.now)
    assert mn.machine.path_changes == 0
    # the uplink comes back elsewhere: registered again, the same tunnel follows
    move(net, mn, MOVED)
    net.settle(until=net.now + 0.5)
    assert mn.machine.registered and tunnel_of(mn) is tunnel
    assert tunnel_of(cn).endpoint == MOVED


def test_a_replayed_update_from_the_old_address_moves_nothing(net):
    mn, cn = registered_pair(net)
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 0.1)
    move(net, mn, MOVED)
    net.settle(until=net.now + 0.5)
    [update] = [d for d, s, dest in net.sent if d[0] == TYPE["TunnelUpdate"]]
    tunnel = tunnel_of(cn)
    assert tunnel.open(update, MN, net.now) is None  # replayed: refused, from anywhere
    assert tunnel.endpoint == MOVED


def test_status_tells_the_last_move_and_how_soon_the_new_path_carried_a_packet():
    from cyphonic.status_text import format_status

    node = {"role": "node", "fqdn": "mn.x", "vip4": "10.0.0.1", "vip6": "fd00::1", "registered": True,
            "nat": False, "peers": []}
    move = {"at": 1.8e9, "locators": ["198.51.101.10"], "first_received": 1.8e9 + 0.012, "first_received_ms": 12.0}
    text = format_status({**node, "mobility": {"moves": [move], "path_changes": 1, "offline": False}})
    assert "to 198.51.101.10: first packet after 12 ms; paths selected again: 1" in text
    text = format_status({**node, "mobility": {"moves": [move], "path_changes": 1, "offline": True}})
    assert "uplink: none" in text


def test_a_failed_reselection_is_tried_again_while_the_old_tunnel_hears_nothing(net):
    mn, cn = registered_pair(net)
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 0.1)
    net.lose = lambda d, s, dest: CN in (s, dest)  # cn unreachable for a while
    start = net.now
    mn.machine.path_failed(tunnel_of(mn), start)
    net.settle(until=start + 8)
    assert net.of(mn, ev.RouteFailed)  # the first attempt failed...
    assert len(net.of(mn, ev.TunnelEstablished)) == 1
    net.lose = lambda d, s, dest: False
    net.settle(until=start + 40)
    assert len(net.of(mn, ev.TunnelEstablished)) == 2  # ...a later one brought the new path
    assert mn.machine.path_changes == 1  # one change, however many attempts
    tries = len(net.of(mn, ev.RouteFailed))
    net.settle(until=start + 100)
    assert len(net.of(mn, ev.RouteFailed)) == tries  # and nothing more once it worked
