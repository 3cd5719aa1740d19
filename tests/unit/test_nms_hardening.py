"""The NMS under replay and flood: nothing old moves a node, nothing
repeated costs a TRS session, no node asks for more than its share
(hardening issue, findings 2, 4 and 6)."""

from __future__ import annotations

import pytest

from cyphonic import crypto
from cyphonic.core.relay import RelayService
from cyphonic.nms.service import ROUTE_SELECTIONS, NodeManagementService
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import parse
from tests.unit.test_services import DOMAIN
from tests.unit.test_services import (
    A1, B1, CN_PUBLIC, MN, NOW, TRS1, NodeStub, direction, natted_pair, route_ack,
)

MN6 = ("2001:db8::10", 4500)
EVIL6 = ("2001:db8::66", 4500)


@pytest.fixture
def nms_key():
    return crypto.random_key()


def test_an_old_ipv4_registration_replayed_from_ipv6_creates_no_attachment(nms_key):
    nms = NodeManagementService(nms_key)
    mn = NodeStub(nms_key, "mn", 2)
    # a dual-stack node reports both its addresses in every registration
    old = mn.registration(1, MN, MN6)
    nms.receive(old, MN, NOW)
    nms.receive(mn.registration(2, MN, MN6), MN6, NOW + 1)  # the node's one counter, over IPv6
    nms.receive(mn.registration(3, MN, MN6), MN, NOW + 2)
    nms._replies.clear()  # the answer is no longer cached
    assert nms.receive(old, EVIL6, NOW + 3) == []
    assert nms.registry[mn.fqdn].endpoints.by_family["ipv6"].observed == MN6
    assert nms.drops.counts["stale registration"] == 1


def test_a_first_registration_in_a_family_must_still_be_newer_than_the_node_s_last(nms_key):
    nms = NodeManagementService(nms_key)
    mn = NodeStub(nms_key, "mn", 2)
    old = mn.registration(1, MN)
    nms.receive(old, MN, NOW)
    nms.receive(mn.registration(2, MN), MN, NOW + 1)
    nms._replies.clear()
    assert nms.receive(old, EVIL6, NOW + 2) == []
    assert "ipv6" not in nms.registry[mn.fqdn].endpoints.by_family


def test_a_replay_under_the_previous_ticket_does_not_replace_the_session_key(nms_key):
    nms = NodeManagementService(nms_key)
    cn = NodeStub(nms_key, "cn", 3, issued=NOW - 100)
    mn = NodeStub(nms_key, "mn", 2)
    nms.receive(mn.registration(1, MN), MN, NOW)
    captured = cn.registration(10, CN_PUBLIC)  # under the first ticket
    nms.receive(captured, CN_PUBLIC, NOW)
    old_key = cn.session_key
    cn.login(issued=NOW - 5)  # a fresh login: a new ticket and key
    nms.receive(cn.registration(11, CN_PUBLIC), CN_PUBLIC, NOW + 1)
    nms._replies.clear()
    # the old ticket is still valid, and the replay comes from the node's own address
    assert nms.receive(captured, CN_PUBLIC, NOW + 2) == []
    assert nms.registry[cn.fqdn].session_key == cn.session_key != old_key
    # Route Directions are sealed under the key the node has now
    [(to_cn, _)] = nms.receive(direction(mn, cn.fqdn, at=NOW + 3), MN, NOW + 3)
    assert cn.open(to_cn)[0] == "RouteDirectionToCN"


def test_a_newer_ticket_wins_even_with_a_lower_sequence(nms_key):
    """A restarted node counts from its clock again; its new login wins."""
    nms = NodeManagementService(nms_key)
    mn = NodeStub(nms_key, "mn", 2, issued=NOW - 100)
    nms.receive(mn.registration(500, MN), MN, NOW)
    mn.login(issued=NOW - 1)
    [(reply, _)] = nms.receive(mn.registration(7, MN), MN, NOW + 1)
    assert mn.open(reply)[0] == "RegistrationResponse"
    assert nms.registry[mn.fqdn].session_key == mn.session_key


def test_a_revoked_node_is_refused_and_unreachable_within_one_refresh(nms_key):
    revoked: set[int] = set()
    nms = NodeManagementService(nms_key, revoked=lambda: frozenset(revoked))
    mn, cn = NodeStub(nms_key, "mn", 2, serial=1), NodeStub(nms_key, "cn", 3, serial=2)
    nms.receive(mn.registration(1, MN), MN, NOW)
    nms.receive(cn.registration(1, CN_PUBLIC), CN_PUBLIC, NOW)
    revoked.add(2)
    # nobody can reach it any more ...
    [(reply, _)] = nms.receive(direction(mn, cn.fqdn, at=NOW + 1), MN, NOW + 1)
    assert str(parse(wire.SignalingErrorBody, mn.open(reply)[1]).code) == "unknown_peer"
    # ... and its own refresh is refused, with its registration gone
    assert nms.receive(cn.registration(2, CN_PUBLIC), CN_PUBLIC, NOW + 2) == []
    assert cn.fqdn not in nms.registry and nms.drops.counts["revoked certificate"] == 1


def test_an_unreadable_revocation_list_refuses_every_request(nms_key):
    from cyphonic.errors import CyphonicError

    def broken():
        raise CyphonicError("revoked.txt: line 2: 'x' is not a certificate serial")

    nms = NodeManagementService(nms_key, revoked=broken)
    mn = NodeStub(nms_key, "mn", 2)
    assert nms.receive(mn.registration(1, MN), MN, NOW) == []
    assert nms.registry == {}


def relayed_setup(nms_key):
    trs_key = crypto.random_key()
    nms = NodeManagementService(nms_key, trs=[TRS1], trs_key=trs_key)
    nms.relays.next_probe = float("inf")
    return nms, RelayService(trs_key, [TRS1]), *natted_pair(nms, nms_key)


def test_a_replayed_direction_request_never_costs_another_trs_session(nms_key):
    nms, trs, a, b = relayed_setup(nms_key)
    request = direction(a, b.fqdn, 1)
    [(relay_request, _)] = nms.receive(request, A1, NOW)
    [(response, _)] = trs.receive(relay_request, ("203.0.113.10", 7001), NOW)
    [(to_cn, _)] = nms.receive(response, TRS1, NOW)
    path_id = parse(wire.RouteDirectionBody, b.open(to_cn)[1]).path_id
    [(answer, _)] = nms.receive(b.request("RouteDirectionAck", route_ack(path_id)), B1, NOW)
    assert nms.receive(request, A1, NOW + 0.5) == [(answer, A1)]  # a retransmission: the same answer
    for t in (NOW + 40, NOW + 200):  # after the answer left the cache
        nms.handle_timer(t)
        assert nms.receive(request, A1, t) == []
    assert nms.relays.waiting == {} and len(trs.sessions) == 1
    # and once outside the freshness window it is stale
    assert nms.receive(request, A1, NOW + 400) == []
    assert nms.drops.counts["stale direction request"] == 1


def test_a_second_request_for_the_same_pair_joins_the_pending_relay_assignment(nms_key):
    nms, trs, a, b = relayed_setup(nms_key)
    [(first, _)] = nms.receive(direction(a, b.fqdn, 1), A1, NOW)
    assert nms.receive(direction(a, b.fqdn, 2), A1, NOW + 0.01) == []
    [(response, _)] = trs.receive(first, ("203.0.113.10", 7001), NOW)
    [(to_cn, _)] = nms.receive(response, TRS1, NOW)
    path_id = parse(wire.RouteDirectionBody, b.open(to_cn)[1]).path_id
    [(to_mn, _)] = nms.receive(b.request("RouteDirectionAck", route_ack(path_id)), B1, NOW)
    assert parse(wire.NmsReply, to_mn).header.txid == 2  # the newest request is answered
    assert len(trs.sessions) == 1


def test_route_selections_are_limited_per_node(nms_key):
    nms = NodeManagementService(nms_key)
    mn, cn = NodeStub(nms_key, "mn", 2), NodeStub(nms_key, "cn", 3)
    other = NodeStub(nms_key, "other", 4)
    for node, where in ((mn, MN), (cn, CN_PUBLIC), (other, ("192.0.2.50", 4500))):
        nms.receive(node.registration(1, where), where, NOW)
    rate, burst = ROUTE_SELECTIONS
    codes = []
    for txid in range(1, 101):
        [(reply, _)] = nms.receive(direction(mn, cn.fqdn, txid), MN, NOW)
        kind, body = mn.open(reply) if reply[0] != 0x14 else ("RouteDirectionToCN", b"")
        codes.append(str(parse(wire.SignalingErrorBody, body).code) if kind == "SignalingError" else kind)
    assert codes.count("rate_limited") == 100 - burst
    assert len(nms.pending) == burst
    # another node is not limited by mn's flood
    [(reply, _)] = nms.receive(direction(other, cn.fqdn, 1), ("192.0.2.50", 4500), NOW)
    assert reply[0] == 0x14  # a Route Direction to CN


def test_a_stale_route_direction_ack_is_dropped(nms_key):
    nms = NodeManagementService(nms_key)
    mn, cn = NodeStub(nms_key, "mn", 2), NodeStub(nms_key, "cn", 3)
    nms.receive(mn.registration(1, MN), MN, NOW)
    nms.receive(cn.registration(1, CN_PUBLIC), CN_PUBLIC, NOW)
    [(to_cn, _)] = nms.receive(direction(mn, cn.fqdn), MN, NOW)
    path_id = parse(wire.RouteDirectionBody, cn.open(to_cn)[1]).path_id
    assert nms.receive(cn.request("RouteDirectionAck", route_ack(path_id, at=NOW - 1000)), CN_PUBLIC, NOW) == []
    assert path_id in nms.pending and nms.drops.counts["stale acknowledgement"] == 1


def test_a_retransmitted_request_whose_error_was_lost_gets_the_error_again(nms_key):
    nms = NodeManagementService(nms_key)
    mn = NodeStub(nms_key, "mn", 2)
    nms.receive(mn.registration(1, MN), MN, NOW)
    request = direction(mn, f"nobody.{DOMAIN}", 5)
    [(first, _)] = nms.receive(request, MN, NOW)
    assert nms.receive(request, MN, NOW + 0.3) == [(first, MN)]
    assert str(parse(wire.SignalingErrorBody, mn.open(first)[1]).code) == "unknown_peer"


def test_a_node_that_reports_no_ipv6_address_any_more_loses_its_ipv6_attachment(nms_key):
    # it moved to an IPv4-only network: a peer sent to its old IPv6
    # attachment (or a TRS address of that family) would reach nothing
    nms = NodeManagementService(nms_key)
    mn = NodeStub(nms_key, "mn", 2)
    nms.receive(mn.registration(1, MN, MN6), MN6, NOW)
    nms.receive(mn.registration(2, MN, MN6), MN, NOW + 1)
    assert set(nms.registry[mn.fqdn].endpoints.by_family) == {"ipv4", "ipv6"}
    moved = ("198.51.101.10", 4500)
    nms.receive(mn.registration(3, moved), moved, NOW + 2)
    assert set(nms.registry[mn.fqdn].endpoints.by_family) == {"ipv4"}
    assert nms.registry[mn.fqdn].endpoints.by_family["ipv4"].observed == moved
