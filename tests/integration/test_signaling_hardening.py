"""Nodes and the cloud against replays, forgeries and floods over loopback
(hardening issue, findings 1, 4 and 7): nothing an attacker sends stops a
service, creates state, or draws an answer to the attacker's address."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import time

import trio

from cyphonic import crypto
from cyphonic.auth.service import AuthenticationService
from cyphonic.core import handshake
from cyphonic.core import tunnel as core
from cyphonic.core.login import LoginClient
from cyphonic.core.signaling.routes import Selection
from cyphonic.store import Store
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import TYPE, build, locator
from tests.integration.conftest import DOMAIN, ipv4_udp
from tests.integration.test_overlay import recv_packet, resolve


async def attacker_socket() -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    return sock


async def nothing_arrives(sock, seconds: float = 0.5) -> bool:
    with trio.move_on_after(seconds):
        await sock.recv(65535)
        return False
    return True


def record(node, kind: int) -> list[bytes]:
    """Every datagram of type `kind` the node's Signaling Module receives."""
    seen: list[bytes] = []
    receive = node.daemon.signaling.receive

    def recording(data, source, now):
        if data and data[0] == kind:
            seen.append(bytes(data))
        return receive(data, source, now)

    node.daemon.signaling.receive = recording
    return seen


async def test_a_login_request_with_a_malformed_certificate_does_not_stop_the_cloud(overlay):
    evil = await attacker_socket()
    _, ident = crypto.Identity.generate(), crypto.Identity.generate()
    for certificate in (b"", b"\x01" * 5, bytes(250)):
        request = LoginClient(ident, certificate, bytes(32), time.time()).request
        await evil.sendto(request, ("127.0.0.1", overlay.as_port))
    assert await nothing_arrives(evil)
    mn = await overlay.start_node("mn")  # the cloud still serves
    assert mn.daemon.signaling.grant is not None
    assert overlay.auth.drops.counts["malformed login request"] == 3


async def test_replayed_route_directions_create_nothing_and_draw_no_answer(overlay):
    mn = await overlay.start_node("mn")
    cn = await overlay.start_node("cn")
    directions = record(cn, TYPE["RouteDirectionToCN"])
    await resolve(mn, f"cn.{DOMAIN}")
    assert len(directions) == 1
    signaling = cn.daemon.signaling
    paths, tunnels = {p: e.state for p, e in signaling.machine.paths.items()}, len(cn.daemon.packet.by_index)
    evil = await attacker_socket()
    for _ in range(3):
        await evil.sendto(directions[0], ("127.0.0.1", cn.port))
    assert await nothing_arrives(evil)  # no Route Direction Ack to the replayer
    assert {p: e.state for p, e in signaling.machine.paths.items()} == paths
    assert len(cn.daemon.packet.by_index) == tunnels
    assert signaling.drops.counts["replayed route direction"] == 3


async def test_a_replayed_tunnel_request_is_never_answered_to_the_replayer(overlay):
    mn = await overlay.start_node("mn")
    cn = await overlay.start_node("cn")
    requests = record(cn, TYPE["TunnelRequest"])
    await resolve(mn, f"cn.{DOMAIN}")
    assert requests
    evil = await attacker_socket()
    await evil.sendto(requests[0], ("127.0.0.1", cn.port))
    assert await nothing_arrives(evil)
    assert cn.daemon.signaling.drops.counts["second tunnel request on a path"] == 1


def relayed_direction(node, path_id: int, trs_port: int) -> bytes:
    """A Route Direction to CN as the NMS would seal it for `node`."""
    body = build(wire.RouteDirectionBody, dict(
        timestamp=int(time.time()), process="TunnelRequestToTRS", role="responder", path_id=path_id,
        peer_fqdn=f"peer{path_id}.{DOMAIN}", peer_vip4=bytes(4), peer_vip6=bytes(16),
        peer_locator=locator("127.0.0.1", trs_port), tunnel_key=crypto.random_key(), temporary_key=crypto.random_key(),
    ))
    header = build(wire.NmsReply, dict(header=dict(type="RouteDirectionToCN", txid=secrets.randbits(32)), sealed=b""))
    return header + crypto.seal(node.daemon.signaling.grant.session_key, body, header)


async def test_hundreds_of_relayed_routes_never_evict_a_live_relayed_tunnel(relay_overlay):
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    assert cn.daemon.status({})["peers"][0]["path"] == "relay"
    nms = await attacker_socket()
    for path_id in range(1000, 1300):
        await nms.sendto(relayed_direction(cn, path_id, relay_overlay.trs_port), ("127.0.0.1", cn.port))
    await trio.sleep(0.5)
    packet = ipv4_udp(mn.vip4, cn.vip4, b"still relayed")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    back = ipv4_udp(cn.vip4, mn.vip4, b"and back")
    await cn.tun.app.send(back)
    assert await recv_packet(mn) == back
    assert cn.daemon.signaling.drops.counts["route direction refused"] > 0


async def test_a_stale_route_direction_is_dropped(overlay):
    cn = await overlay.start_node("cn")
    body = build(wire.RouteDirectionBody, dict(
        timestamp=int(time.time()) - 3600, process="TunnelRequestToCN", role="initiator", path_id=77,
        peer_fqdn=f"x.{DOMAIN}", peer_vip4=bytes(4), peer_vip6=bytes(16),
        peer_locator=locator("127.0.0.1", 9), tunnel_key=crypto.random_key(), temporary_key=bytes(32),
    ))
    header = build(wire.NmsReply, dict(header=dict(type="RouteDirectionToCN", txid=1), sealed=b""))
    datagram = header + crypto.seal(cn.daemon.signaling.grant.session_key, body, header)
    evil = await attacker_socket()
    await evil.sendto(datagram, ("127.0.0.1", cn.port))
    await trio.sleep(0.2)
    assert 77 not in cn.daemon.signaling.machine.paths
    assert cn.daemon.signaling.drops.counts["stale route direction"] == 1


def handshake_for(node, path_id: int) -> tuple[core.Path, bytes]:
    """A path `node` may be told about, and a genuine Tunnel Request on it."""
    key = crypto.random_key()
    peer = core.PeerInfo(f"peer.{DOMAIN}", ipaddress.IPv4Address("10.96.9.9"), ipaddress.IPv6Address("fd7c:1f00::909"))
    mine = core.Path(path_id, "TunnelRequestToNATcn", False, peer, ("127.0.0.1", 9), key)
    theirs = core.Path(path_id, "TunnelRequestToNATcn", True, node.daemon.signaling.me, ("127.0.0.1", node.port), key)
    return mine, handshake.Initiator(theirs, peer, time.time()).request


async def test_junk_tunnel_requests_neither_overwrite_nor_lock_out_an_early_request(overlay):
    mn = await overlay.start_node("mn")
    signaling = mn.daemon.signaling
    machine = signaling.machine
    machine.selections["peer"] = Selection("peer", time.time())  # a route selection in flight
    path, genuine = handshake_for(mn, 4242)
    now, peer = time.time(), ("127.0.0.1", 40000)
    signaling.receive(genuine, peer, now)
    junk = lambda path_id: genuine[:5] + secrets.token_bytes(len(genuine) - 5) if path_id == 4242 else (  # noqa: E731
        path_id.to_bytes(4, "big").join([genuine[:1], secrets.token_bytes(len(genuine) - 5)]))
    for _ in range(50):  # the same path id, from the attacker: never replaces the genuine one
        signaling.receive(junk(4242), ("127.0.0.1", 50000), now)
    for path_id in range(100):  # a flood of other path ids: cannot keep the genuine one out
        signaling.receive(junk(path_id), ("127.0.0.1", 50000), now)
    signaling.receive(genuine, peer, now)  # the peer retransmits
    assert any(e[1] == genuine for e in machine.early)
    del machine.selections["peer"]
    machine.expect(path, now)  # the NMS's Route Direction names the path: the held requests are tried
    signaling.pump()
    assert mn.daemon.packet.tunnel_to(f"peer.{DOMAIN}") is not None


async def test_forged_login_answers_never_stop_a_node(overlay):
    """A forger answers the node's first login attempt with refusals from
    another CA's AS; the node keeps trying and gets in once the real AS answers."""
    foreign_ca, foreign_as = crypto.Identity.generate(), crypto.Identity.generate()
    now = time.time()
    foreign_cert = crypto.issue_certificate(
        foreign_ca, serial=1, role="authority", fqdn=f"as.{DOMAIN}", sign_key=foreign_as.sign_public,
        dh_key=foreign_as.dh_public, not_before=int(now - 60), not_after=int(now + 3600))
    forger = AuthenticationService(
        identity=foreign_as, certificate=foreign_cert, ca_public=foreign_ca.sign_public,
        store=Store(overlay.tmp / "forger.sqlite", ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("fd00::/64")),
        domain=DOMAIN, nms_key=crypto.random_key(), revoked=frozenset)
    front = await attacker_socket()
    back = await attacker_socket()
    forged, nonces, real_as = 0, set(), ("127.0.0.1", overlay.as_port)

    async def man_in_the_middle():
        nonlocal forged
        while True:
            request, node = await front.recvfrom(65535)
            nonces.add(request[-120:-104])  # the nonce: one per login attempt
            if len(nonces) == 1:  # the whole first attempt is answered by the forger
                [(reply, _)] = forger.receive(request, node, time.time())
                forged += 1
            else:
                await back.sendto(request, real_as)
                reply = await back.recv(65535)
            await front.sendto(reply, node)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(man_in_the_middle)
        overlay.as_port = front.getsockname()[1]  # the node's config names the forger's front
        try:
            with trio.fail_after(30):
                mn = await overlay.start_node("mn")
        finally:
            overlay.as_port = real_as[1]
        nursery.cancel_scope.cancel()
    assert forged >= 3 and mn.daemon.signaling.grant is not None
