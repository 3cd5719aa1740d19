"""The data plane's hardening over loopback: tunnels rekey under load with no
loss; a relayed tunnel leaves the TRS only for a confirmed direct path; the
frames that may move an endpoint at the TRS are sealed for it."""

from __future__ import annotations

import socket

import trio

from cyphonic import crypto
from cyphonic.wire import relay as relay_wire
from tests.integration.conftest import DOMAIN, ipv4_udp
from tests.integration.test_overlay import recv_packet, resolve
from tests.integration.test_relayed_route import record_trs

TUNNEL_UPDATE, REKEY_REQUEST, REKEY_RESPONSE = 0x33, 0x34, 0x35


async def start(overlay, name: str, rekey_after: int | None = None, **kwargs):
    bundle = overlay.enroll(name)
    if rekey_after is not None:
        toml = bundle / "node.toml"
        text = toml.read_text().replace("listen_port = 4500", f"rekey_after = {rekey_after}\nlisten_port = 4500")
        toml.write_text(text)
    return await overlay.start_node(name, bundle=bundle, **kwargs)


def relayed_inner_types(frames: list[bytes], session) -> list[tuple[bool, int]]:
    """(sealed?, type of the node's datagram inside) of every Relayed frame."""
    out = []
    for frame in frames:
        if frame[0] != 0x42 or len(frame) < relay_wire.RELAYED_HEADER + relay_wire.RELAY_TAG:
            continue
        if frame[5] & relay_wire.SEALED:
            head = relay_wire.RELAYED_HEADER
            inner = crypto.open_sealed(session.seal_key, frame[head:], frame[:head])[8:]
            if inner:
                out.append((True, inner[0]))
        else:
            out.append((False, frame[relay_wire.RELAYED_HEADER]))
    return out


def peer(node) -> dict:
    [p] = node.daemon.status({})["peers"]
    return p


async def test_tunnels_rekey_under_a_continuous_stream_both_ways_with_zero_loss(overlay):
    mn = await start(overlay, "mn", rekey_after=1)
    cn = await start(overlay, "cn", rekey_after=1)
    await resolve(mn, f"cn.{DOMAIN}")
    nodes = {"mn": mn, "cn": cn}
    before = {name: peer(node) for name, node in nodes.items()}
    # (the responder's first Keep Alive may beat the initiator's install: not ours)
    await trio.sleep(0.2)
    drops_before = {name: dict(node.daemon.packet.drops.counts) for name, node in nodes.items()}
    count = 600
    sent = {"mn": 0, "cn": 0}
    got: dict[str, set[int]] = {"mn": set(), "cn": set()}

    async def stream(src: str, dst: str):
        a, b = nodes[src], nodes[dst]
        for k in range(count):
            packet = ipv4_udp(a.vip4, b.vip4, k.to_bytes(4, "big") + b"." * 200)
            sent[src] += len(packet)
            await a.tun.app.send(packet)
            await trio.sleep(0.01)

    async def collect(name: str):
        while len(got[name]) < count:
            data = await nodes[name].tun.app.recv(65535)
            got[name].add(int.from_bytes(data[28:32], "big"))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream, "mn", "cn")
            nursery.start_soon(stream, "cn", "mn")
            nursery.start_soon(collect, "mn")
            nursery.start_soon(collect, "cn")
    assert got["mn"] == got["cn"] == set(range(count))  # zero loss, both ways
    for name, other in (("mn", "cn"), ("cn", "mn")):
        node, p, first = nodes[name], peer(nodes[name]), before[name]
        assert p["rekeys"] >= 3, p
        assert p["last_handshake"] < 2.5 < node.daemon.status({})["uptime"]
        assert p["tx_bytes"] == sent[name] and p["rx_bytes"] == sent[other]
        for key in ("vip4", "vip6", "path", "endpoint"):
            assert p[key] == first[key]
        assert dict(node.daemon.packet.drops.counts) == drops_before[name]  # nothing dropped
        tunnel = node.daemon.packet.tunnel_to(nodes[other].daemon.signaling.grant.fqdn)
        assert len(node.daemon.packet.by_index) == 1 and len(tunnel.indices()) <= 3


async def test_a_relayed_tunnel_rekeys_and_the_trs_sees_only_sealed_rekey_frames(relay_overlay):
    seen = record_trs(relay_overlay)
    mn = await start(relay_overlay, "mn", rekey_after=1, locators=["192.168.1.10"], hole_punching=False)
    cn = await start(relay_overlay, "cn", rekey_after=1, locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    with trio.fail_after(10):
        while min(peer(mn)["rekeys"], peer(cn)["rekeys"]) < 2:
            await trio.sleep(0.1)
    packet = ipv4_udp(mn.vip4, cn.vip4, b"after two rekeys, through the relay")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    back = ipv4_udp(cn.vip4, mn.vip4, b"and back")
    await cn.tun.app.send(back)
    assert await recv_packet(mn) == back
    assert peer(mn)["path"] == peer(cn)["path"] == "relay"
    [session] = relay_overlay.trs.sessions.values()
    types = relayed_inner_types(seen, session)
    assert {(True, REKEY_REQUEST), (True, REKEY_RESPONSE)} <= set(types)
    assert not [t for sealed, t in types if not sealed and t in (TUNNEL_UPDATE, REKEY_REQUEST, REKEY_RESPONSE)]


async def test_every_tunnel_update_the_trs_receives_is_sealed(relay_overlay):
    seen = record_trs(relay_overlay)
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"])
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"])
    await resolve(mn, f"cn.{DOMAIN}")
    with trio.fail_after(5):
        while "relay" in (peer(mn)["path"], peer(cn)["path"]):
            await trio.sleep(0.05)
    [session] = relay_overlay.trs.sessions.values()
    types = relayed_inner_types(seen, session)
    updates = [sealed for sealed, t in types if t == TUNNEL_UPDATE]
    assert len(updates) >= 2 and all(updates)  # both ends announced, sealed


async def test_one_direct_datagram_from_a_new_address_does_not_move_a_relayed_tunnel(relay_overlay):
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    mn_tunnel = mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}")
    relayed_at = mn_tunnel.endpoint
    # a genuine, never-seen capsule of cn's, arriving straight from an address
    # that is not the peer's (as a captured packet raced by an attacker)
    racer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await racer.bind(("127.0.0.1", 0))
    genuine = ipv4_udp(cn.vip4, mn.vip4, b"genuine, but not from cn's address")
    cn_tunnel = cn.daemon.packet.tunnel_to(f"mn.{DOMAIN}")
    await racer.sendto(cn_tunnel.seal(0x30, genuine), ("127.0.0.1", mn.port))
    assert await recv_packet(mn) == genuine  # authenticated: delivered ...
    with trio.fail_after(2):
        probe = await racer.recv(2048)  # ... and its source probed
    assert probe[0] == 0x31 and len(probe) == 13 + 8 + 16
    await trio.sleep(0.3)
    assert mn_tunnel.endpoint == relayed_at and peer(mn)["path"] == "relay"  # ... but nothing moved
    packet = ipv4_udp(mn.vip4, cn.vip4, b"still through the relay")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    racer.close()
