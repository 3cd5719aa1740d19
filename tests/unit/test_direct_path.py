"""Relay -> direct: a relayed tunnel leaves the TRS only for a direct path
that a probe confirmed (issue "hardening", finding 7), never on one
datagram from a new address; mobility on a direct path is unchanged."""

from __future__ import annotations

import ipaddress
import socket

from cyphonic import crypto
from cyphonic.core import handshake
from cyphonic.core import tunnel as core
from cyphonic.core.relay import RelayLink
from cyphonic.node.packet import PacketHandlingModule
from cyphonic.wire import tunnel as wire
from tests.support.sockets import RecordingSocket

T0 = 1_800_000_000.0
MN = core.PeerInfo("mn.cyphonic.test", ipaddress.IPv4Address("10.96.0.2"), ipaddress.IPv6Address("fd7c:1f00::2"))
CN = core.PeerInfo("cn.cyphonic.test", ipaddress.IPv4Address("10.96.0.3"), ipaddress.IPv6Address("fd7c:1f00::3"))
TRS = ("203.0.113.5", 7002)
CN_DIRECT, ELSEWHERE = ("198.51.100.20", 40001), ("192.0.2.66", 5555)


def pair(relayed: bool = True) -> tuple[core.Tunnel, core.Tunnel]:
    """(MN, CN): MN's end relayed through the TRS unless `relayed` is False."""
    key = crypto.random_key()
    link = RelayLink(9, crypto.random_key(), responder=False, sequence=0) if relayed else None
    peer_address = TRS if relayed else CN_DIRECT
    init = handshake.Initiator(core.Path(9, "TunnelRequestToTRS", True, CN, peer_address, key, link), MN, T0)
    cn, response = handshake.respond(core.Path(9, "TunnelRequestToTRS", False, MN, TRS, key), CN, init.request, TRS, T0)
    return init.accept_response(response, peer_address, T0), cn


def test_one_direct_datagram_from_a_new_address_does_not_leave_the_relay():
    mn, cn = pair()
    assert mn.relayed
    assert mn.open(cn.seal(core.CAPSULE, b"direct"), CN_DIRECT, T0 + 1) == b"direct"
    assert mn.relayed and mn.endpoint == TRS
    assert list(mn.candidates) == [CN_DIRECT] and mn.probes == [(mn, CN_DIRECT)]


def test_only_the_echo_from_the_probed_address_moves_the_tunnel():
    mn, cn = pair()
    mn.open(cn.seal(core.CAPSULE, b"direct"), CN_DIRECT, T0 + 1)
    challenge = mn.candidates[CN_DIRECT].challenge
    assert len(challenge) == wire.PROBE_CHALLENGE
    assert not mn.confirm(CN_DIRECT, bytes(8))  # a wrong echo
    assert not mn.confirm(ELSEWHERE, challenge)  # the right echo from elsewhere
    assert mn.relayed
    assert mn.confirm(CN_DIRECT, challenge)
    assert mn.endpoint == CN_DIRECT and not mn.relayed and mn.candidates == {}
    assert not mn.confirm(CN_DIRECT, challenge)  # once


def test_a_replayed_or_older_datagram_from_any_address_never_moves_or_probes():
    mn, cn = pair()
    first, second = cn.seal(core.CAPSULE, b"1"), cn.seal(core.CAPSULE, b"2")
    assert mn.open(second, TRS, T0 + 1) == b"2"  # through the relay
    assert mn.open(second, CN_DIRECT, T0 + 1) is None  # a replay from a direct address
    assert mn.open(first, CN_DIRECT, T0 + 1) == b"1"  # older than the newest: opens, moves nothing
    assert mn.candidates == {} and mn.probes == [] and mn.endpoint == TRS
    mn, cn = pair(relayed=False)
    first, second = cn.seal(core.CAPSULE, b"1"), cn.seal(core.CAPSULE, b"2")
    mn.open(second, CN_DIRECT, T0 + 1)
    assert mn.open(second, ELSEWHERE, T0 + 1) is None and mn.open(first, ELSEWHERE, T0 + 1) == b"1"
    assert mn.endpoint == CN_DIRECT


def test_probes_to_one_candidate_are_rate_limited_and_candidates_bounded():
    mn, cn = pair()
    for k in range(5):
        mn.open(cn.seal(core.CAPSULE, b"x"), CN_DIRECT, T0 + 1 + k * 0.01)
    assert mn.probes == [(mn, CN_DIRECT)]  # one probe per PROBE_INTERVAL
    mn.open(cn.seal(core.CAPSULE, b"x"), CN_DIRECT, T0 + 1 + 2 * core.PROBE_INTERVAL)
    assert len(mn.probes) == 2 and mn.probes[1] == (mn, CN_DIRECT)
    for port in range(10):
        mn.open(cn.seal(core.CAPSULE, b"x"), ("192.0.2.7", 6000 + port), T0 + 2)
    assert len(mn.candidates) == core.MAX_CANDIDATES


def test_on_a_direct_path_the_newest_datagram_still_moves_the_endpoint():
    mn, cn = pair(relayed=False)
    assert mn.open(cn.seal(core.CAPSULE, b"moved"), ELSEWHERE, T0 + 1) == b"moved"
    assert mn.endpoint == ELSEWHERE and mn.candidates == {}


def test_through_the_relay_nothing_moves_a_tunnel_a_punch_made_direct():
    mn, cn = pair()
    mn.open(cn.seal(core.CAPSULE, b"x"), CN_DIRECT, T0 + 1)
    mn.confirm(CN_DIRECT, mn.candidates[CN_DIRECT].challenge)
    buf = crypto.PacketBuffer(data=bytearray(cn.seal(core.CAPSULE, b"via relay")))
    assert mn.open_at(buf, 0, len(buf.data), TRS, T0 + 2, via_relay=True) is not None
    assert mn.endpoint == CN_DIRECT


def test_the_data_path_probes_the_candidate_and_moves_only_on_its_echo():
    mn, cn = pair()
    cn.path = core.Path(
        9,
        "TunnelRequestToTRS",
        False,
        MN,
        TRS,
        cn.path.tunnel_key,
        RelayLink(9, crypto.random_key(), responder=True, sequence=0),
    )
    assert cn.relayed
    mn_sock, cn_sock = RecordingSocket(), RecordingSocket()
    pm_mn = PacketHandlingModule(-1, {socket.AF_INET: mn_sock})
    pm_cn = PacketHandlingModule(-1, {socket.AF_INET: cn_sock})
    pm_mn.install(mn)
    pm_cn.install(cn)
    mn_direct = ("192.0.2.10", 4500)
    # CN's punch gets through: MN echoes it straight back, probes CN's address, stays relayed
    pm_mn.receive(cn.seal(core.KEEPALIVE, cn.challenge_for(mn_direct, T0)), CN_DIRECT, T0 + 1)
    pm_mn.flush()
    assert mn.relayed
    (ack, to_ack), (probe, to_probe) = mn_sock.sent
    assert to_ack == to_probe == CN_DIRECT  # not through the TRS
    assert ack[0] == core.KEEPALIVE_ACK and probe[0] == core.KEEPALIVE
    # the echo of its own punch confirms CN's side; CN answers MN's probe
    pm_cn.receive(ack, mn_direct, T0 + 1)
    assert not cn.relayed and cn.endpoint == mn_direct
    pm_cn.receive(probe, mn_direct, T0 + 1)
    echo, to = cn_sock.sent[-1]
    assert to == mn_direct and echo[0] == core.KEEPALIVE_ACK
    # raced from elsewhere, the echo moves nothing, and the genuine one is then a replay
    pm_mn.receive(echo, ELSEWHERE, T0 + 1)
    pm_mn.receive(echo, CN_DIRECT, T0 + 1)
    assert mn.relayed and pm_mn.drops.counts["replayed capsule"] == 1
    # CN's next direct datagram makes MN probe again; this echo confirms
    mn_sock.sent.clear()
    pm_cn.send(cn, core.KEEPALIVE, b"")
    pm_mn.receive(cn_sock.sent[-1][0], CN_DIRECT, T0 + 2)
    pm_mn.flush()
    probe, to = mn_sock.sent[-1]
    assert to == CN_DIRECT and probe[0] == core.KEEPALIVE
    pm_cn.receive(probe, mn_direct, T0 + 2)
    pm_mn.receive(cn_sock.sent[-1][0], CN_DIRECT, T0 + 2)
    assert not mn.relayed and mn.endpoint == CN_DIRECT
    assert pm_mn.drops.total() == 1 and pm_cn.drops.total() == 0
