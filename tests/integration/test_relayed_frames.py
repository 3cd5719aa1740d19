"""Relayed data frames on the batch data path: built in the send buffer
(relay head, capsule sealed in place, relay MAC) exactly as the per-packet
RelayLink.wrap builds them, and opened where they lie on receipt."""

from __future__ import annotations

import random
import time

import pytest

from cyphonic import crypto
from cyphonic.core import tunnel as core
from cyphonic.core.relay import RelayLink
from cyphonic.crypto import PacketBuffer
from tests.support.dataplane import PATHS, pump, read_tun, socket_batch
from tests.support.traffic import TcpFlow

TRS = ("203.0.113.20", 7002)
SESSION = 0x0BADCAFE


def relayed(pair) -> tuple[RelayLink, RelayLink]:
    """mn and cn's tunnel moved onto a relay session through TRS."""
    mn, cn = pair
    key = crypto.random_key()
    links = RelayLink(SESSION, key, responder=False, sequence=1), RelayLink(SESSION, key, responder=True, sequence=1)
    for node, link in zip((mn, cn), links, strict=True):
        node.module.remove(node.tunnel)
        node.tunnel.path.relay, node.tunnel.path.peer_address, node.tunnel.endpoint = link, TRS, TRS
        node.module.install(node.tunnel)
    return links


def deliver(node, datagrams: list[bytes]) -> None:
    """GRO reads, the way read_sockets hands them over: every one is data."""
    assert socket_batch(node, datagrams, TRS, time.time()) == []


@PATHS
def test_relayed_frames_are_the_per_packet_bytes_and_open_in_place(pair):
    mn, cn = pair
    mn_link, cn_link = relayed(pair)
    flow = TcpFlow(random.Random(5), mn.module.vnet, mn.me, cn.me, 40001, 5201)
    frames, metas = flow.write(plain=not mn.module.vnet)
    counter = mn.tunnel.send_counter
    sent = pump(mn, frames)
    assert metas and len(sent) == len(metas)
    # each is RelayLink.wrap of the capsule the tunnel seals for that counter
    for i, frame in enumerate(sent):
        inner = cn_link.unwrap(frame)  # MAC checked by the per-packet code
        assert int.from_bytes(inner[5:13], "little") == counter + i
        plain = cn.tunnel.cipher.open(inner, 13)
        assert mn_link.wrap(mn.tunnel.cipher.seal(inner[:13], plain)) == frame
    read_tun(cn)
    deliver(cn, sent)
    assert sum(len(f) for f in read_tun(cn)) > 0
    assert cn.tunnel.rx_packets == len(sent) and cn.tunnel.endpoint == TRS


@pytest.mark.parametrize("pair", ["offload"], indirect=True)
def test_a_bad_mac_is_dropped_and_frames_not_ours_go_to_signaling(pair):
    mn, cn = pair
    relayed(pair)
    frame = mn.tunnel.path.relay.wrap(mn.tunnel.seal(core.CAPSULE, bytes(40)))
    bad = bytearray(frame)
    bad[-1] ^= 1
    assert cn.module.receive_relayed_at(PacketBuffer(data=bad), 0, len(bad), TRS, time.time())
    assert cn.module.drops.counts["relayed frame with a bad MAC"] == 1 and cn.tunnel.rx_packets == 0
    own = cn.tunnel.path.relay.wrap(cn.tunnel.seal(core.CAPSULE, bytes(40)))  # from our own side
    sealed = mn.tunnel.path.relay.wrap(mn.tunnel.seal(core.TUNNEL_UPDATE, bytes(15)), sealed=True)
    other = RelayLink(SESSION + 1, crypto.random_key(), responder=False, sequence=1).wrap(bytes(60))
    for data in (own, sealed, other, frame[:40]):
        assert not cn.module.receive_relayed_at(PacketBuffer(data=bytearray(data)), 0, len(data), TRS, time.time())
    # a removed tunnel's session is no longer taken
    cn.module.remove(cn.tunnel)
    assert not cn.module.receive_relayed_at(PacketBuffer(data=bytearray(frame)), 0, len(frame), TRS, time.time())
