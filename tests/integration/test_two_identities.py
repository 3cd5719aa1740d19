"""Two CYPHONIC identities in one process behind one pair of sockets (what
the adapter does for its general nodes): the demultiplexer hands each
signaling datagram to the identity it belongs to, and each identity reaches
a different peer by name over its own tunnel."""

from __future__ import annotations

import socket
import time

from cyphonic import config, crypto
from cyphonic.keys import read_certificate
from cyphonic.node.settings import SCHEMA as NODE_SCHEMA
from cyphonic.node.signaling import SignalingModule
from tests.integration.conftest import DOMAIN, ipv4_udp
from tests.integration.test_overlay import answer, recv_packet, resolve


async def second_identity(overlay, node, name: str, nursery) -> SignalingModule:
    """`name`'s identity, run inside `node`'s process on `node`'s sockets."""
    bundle = overlay.enroll(name)
    cfg = config.load(bundle / "node.toml", NODE_SCHEMA)
    signaling = SignalingModule(
        node.daemon.cfg, crypto.Identity.load(cfg["key"]), read_certificate(cfg["certificate"]),
        crypto.ca_public_key(read_certificate(cfg["ca"])), node.daemon.sockets, node.daemon.packet,
        local_addresses=lambda own: ["127.0.0.1"],
    )
    signaling.nursery = nursery
    node.daemon.demux.add(signaling)
    nursery.start_soon(signaling.run)
    await signaling.login()
    await signaling.register_all()
    return signaling


async def test_two_identities_share_one_socket_pair_and_each_reaches_its_own_peer(overlay, nursery):
    mn = await overlay.start_node("mn")
    cn1 = await overlay.start_node("cn1")
    cn2 = await overlay.start_node("cn2")
    other = await second_identity(overlay, mn, "mn2", nursery)
    assert set(mn.daemon.sockets) <= {socket.AF_INET, socket.AF_INET6}  # no socket of its own

    # both identities registered from the same UDP port: one NAT mapping for all
    nodes = {n["fqdn"]: n for n in overlay.nms.status(time.time())}
    assert nodes[f"mn.{DOMAIN}"]["attachments"]["ipv4"]["observed"] == nodes[f"mn2.{DOMAIN}"]["attachments"]["ipv4"]["observed"]

    assert answer(await resolve(mn, f"cn1.{DOMAIN}")) == cn1.vip4  # the node's own identity, by DNS
    peer = await other.route_to(f"cn2.{DOMAIN}")  # the second identity, by name
    assert str(peer.vip4) == cn2.vip4

    # each peer sees the identity that reached it
    assert cn1.daemon.packet.tunnel_to(f"mn.{DOMAIN}") is not None
    assert cn2.daemon.packet.tunnel_to(f"mn2.{DOMAIN}") is not None
    assert cn2.daemon.packet.tunnel_to(f"mn.{DOMAIN}") is None

    mn2_vip4 = str(other.grant.vip4)
    for src, peer_node in ((mn.vip4, cn1), (mn2_vip4, cn2)):
        packet = ipv4_udp(src, peer_node.vip4, f"from {src}".encode())
        await mn.tun.app.send(packet)
        assert await recv_packet(peer_node) == packet
        back = ipv4_udp(peer_node.vip4, src, b"and back")
        await peer_node.tun.app.send(back)
        assert await recv_packet(mn) == back
