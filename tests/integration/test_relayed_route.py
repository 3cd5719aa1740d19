"""Both ends behind NAPT: the NMS assigns the TRS and traffic crosses it."""

from __future__ import annotations

import pytest
import trio

from cyphonic import crypto
from cyphonic.keys import read_secret
from cyphonic.errors import AuthenticationError
from cyphonic.wire import relay, tunnel as tunnel_wire
from cyphonic.wire.common import TYPE, parse
from tests.integration.conftest import DOMAIN, ipv4_udp
from tests.integration.test_overlay import answer, recv_packet, resolve


def record_trs(overlay) -> list[bytes]:
    """Every datagram the TRS receives from now on, in order."""
    seen: list[bytes] = []
    receive = overlay.trs.receive

    def recording(data, source, now):
        seen.append(bytes(data))
        return receive(data, source, now)

    forward_at = overlay.trs.forward_at

    def recording_at(buf, start, end, source, now):  # the batch path's data frames
        seen.append(bytes(buf.data[start:end]))
        return forward_at(buf, start, end, source, now)

    forward_run = overlay.trs.forward_run

    def recording_run(buf, start, n, size, source, now):  # runs of them
        end, dest = forward_run(buf, start, n, size, source, now)
        seen.extend(bytes(buf.data[k : min(k + size, end)]) for k in range(start, end, size))
        return end, dest

    overlay.trs.receive = recording
    overlay.trs.forward_at = recording_at
    overlay.trs.forward_run = recording_run
    return seen


def relay_requests(seen: list[bytes], nms_trs_key: bytes) -> list[tuple[bytes, object]]:
    """(plaintext, parsed body) of every Relay Request, opened with the
    NMS–TRS key as the TRS does; the health probes (session 0) left out."""
    out = []
    for data in seen:
        if data[0] != TYPE["RelayRequest"]:
            continue
        msg = parse(relay.RelayRequest, data)
        plain = crypto.open_sealed(nms_trs_key, bytes(msg.sealed), data[: len(data) - len(msg.sealed)])
        body = parse(relay.RelayRequestBody, plain)
        if body.session_id:
            out.append((plain, body))
    return out


def trs_keys(nms_trs_key: bytes, tunnel_key: bytes) -> list[bytes]:
    """Every key a TRS holds for a session: the NMS–TRS key, the Tunnel Key
    and the two subkeys it derives from it."""
    return [nms_trs_key, tunnel_key, *crypto.relay_keys(tunnel_key)]


def frames(seen: list[bytes], sealed: bool) -> list[bytes]:
    return [d for d in seen if d[0] == TYPE["Relayed"] and bool(d[5] & relay.SEALED) == sealed]


async def test_nodes_both_behind_napt_talk_through_the_trs(relay_overlay):
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    assert answer(await resolve(mn, f"cn.{DOMAIN}")) == cn.vip4
    assert mn.daemon.status({})["peers"][0]["path"] == "relay"
    packet = ipv4_udp(mn.vip4, cn.vip4, b"x" * 1200)
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    back = ipv4_udp(cn.vip4, mn.vip4, b"through the relay and back")
    await cn.tun.app.send(back)
    assert await recv_packet(mn) == back
    [session] = relay_overlay.trs.status(trio.current_time())
    sides = session["sides"]
    assert sides["initiator"]["packets"] >= 2 and sides["responder"]["packets"] >= 2
    assert sides["initiator"]["endpoint"].endswith(f":{mn.port}") and sides["responder"]["endpoint"].endswith(f":{cn.port}")


async def test_the_trs_never_holds_the_end_keys(relay_overlay):
    seen = record_trs(relay_overlay)
    nms_trs_key = read_secret(relay_overlay.ca / "nms-trs.key")
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    packet = ipv4_udp(mn.vip4, cn.vip4, b"secret")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    mn_tunnel = mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}")
    cn_tunnel = cn.daemon.packet.tunnel_to(f"mn.{DOMAIN}")
    temp_key = mn_tunnel.path.tunnel_key  # on a relayed path: the Temp Key, which seals the hellos
    assert cn_tunnel.path.tunnel_key == temp_key

    # What the NMS told the TRS: the session's Tunnel Key, the one both
    # nodes' relay links use, and not the Temp Key.
    [(_, request)] = relay_requests(seen, nms_trs_key)
    tunnel_key = bytes(request.tunnel_key)
    assert request.session_id == mn_tunnel.path.path_id == cn_tunnel.path.path_id
    for node_tunnel in (mn_tunnel, cn_tunnel):
        link = node_tunnel.path.relay
        assert (link.seal_key, link.mac_key) == crypto.relay_keys(tunnel_key)
    session = relay_overlay.trs.sessions[request.session_id]
    assert (session.seal_key, session.mac_key) == crypto.relay_keys(tunnel_key)
    assert tunnel_key != temp_key

    # No capsule the TRS forwarded opens under any key it holds; each opens
    # under the End Key of the node it went to.
    data = frames(seen, sealed=False)
    assert data, "no data frame crossed the TRS"
    opened = []
    for frame in data:
        capsule = frame[relay.RELAYED_HEADER : -relay.RELAY_TAG]
        for key in trs_keys(nms_trs_key, tunnel_key):
            with pytest.raises(AuthenticationError):
                crypto.DataCipher(key, key).open(capsule, tunnel_wire.CAPSULE_HEADER)
        receiver = mn_tunnel if frame[5] & relay.FROM_RESPONDER else cn_tunnel
        opened.append(receiver.cipher.open(capsule, tunnel_wire.CAPSULE_HEADER))
    assert packet in opened


async def test_without_a_trs_both_behind_napt_is_still_unreachable(overlay):
    mn = await overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    await overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    import dns.rcode

    assert (await resolve(mn, f"cn.{DOMAIN}")).rcode() == dns.rcode.SERVFAIL


async def test_a_relayed_tunnel_moves_to_a_direct_path_when_a_punch_gets_through(relay_overlay):
    # loopback has no NAPT to defeat the punches: they always get through
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"])
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"])
    await resolve(mn, f"cn.{DOMAIN}")
    with trio.fail_after(5):
        while any(p["path"] != "direct" for node in (mn, cn) for p in node.daemon.status({})["peers"]):
            await trio.sleep(0.05)
    tunnel = mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}")
    assert tunnel.endpoint == ("127.0.0.1", cn.port)
    [session] = relay_overlay.trs.sessions.values()
    relayed_before = session.sides[0].packets + session.sides[1].packets
    packet = ipv4_udp(mn.vip4, cn.vip4, b"straight across")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    back = ipv4_udp(cn.vip4, mn.vip4, b"and straight back")
    await cn.tun.app.send(back)
    assert await recv_packet(mn) == back
    assert session.sides[0].packets + session.sides[1].packets == relayed_before  # the TRS saw none of it


async def test_no_message_the_trs_receives_contains_a_temp_or_end_key(relay_overlay):
    """Everything the TRS can read — Relay Request bodies under the NMS–TRS
    key, sealed frames under the relay seal key — holds no Temp Key and no
    End Key, and the hellos inside stay closed to it."""
    from cyphonic.crypto import ffi

    seen = record_trs(relay_overlay)
    nms_trs_key = read_secret(relay_overlay.ca / "nms-trs.key")
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    await mn.tun.app.send(ipv4_udp(mn.vip4, cn.vip4, b"payload"))
    await recv_packet(cn)
    tunnel = mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}")
    temp_key = tunnel.path.tunnel_key
    end_keys = [bytes(ffi.buffer(k)) for k in (tunnel.cipher._send_key, tunnel.cipher._recv_key)]
    secrets_ = [temp_key, *end_keys]
    assert all(len(s) == 32 for s in secrets_) and len(set(secrets_)) == 3

    # Relay Requests: session id, Tunnel Key, lifetime and timestamp, nothing else.
    requests = relay_requests(seen, nms_trs_key)
    assert requests, "the TRS received no Relay Request"
    for plain, body in requests:
        assert len(plain) == 8 + 4 + 32 + 2
        assert {k for k in body if not k.startswith("_")} == {"timestamp", "session_id", "tunnel_key", "lifetime"}
        assert bytes(body.tunnel_key) not in secrets_
    keys_of = {body.session_id: bytes(body.tunnel_key) for _, body in requests}

    # Sealed frames: open each as the TRS does; no secret in what it reads.
    sealed = frames(seen, sealed=True)
    kinds = []
    for frame in sealed:
        tunnel_key = keys_of[int.from_bytes(frame[1:5], "big")]
        seal_key, _ = crypto.relay_keys(tunnel_key)
        inner = parse(relay.SealedInner, crypto.open_sealed(seal_key, frame[6:], frame[:6]))
        datagram = bytes(inner.datagram)
        for secret in secrets_:
            assert secret not in datagram
        kinds.append(datagram[0] if datagram else None)
        if datagram and datagram[0] in (TYPE["TunnelRequest"], TYPE["TunnelResponse"]):
            schema = tunnel_wire.TunnelRequest if datagram[0] == TYPE["TunnelRequest"] else tunnel_wire.TunnelResponse
            hello = bytes(parse(schema, datagram).sealed)
            aad = datagram[: len(datagram) - len(hello)]
            for key in trs_keys(nms_trs_key, tunnel_key):
                with pytest.raises(AuthenticationError):
                    crypto.open_sealed(key, hello, aad)
            crypto.open_sealed(temp_key, hello, aad)  # the nodes can
    # CN's bind, MN's Tunnel Request and CN's Tunnel Response at least
    assert {None, TYPE["TunnelRequest"], TYPE["TunnelResponse"]} <= set(kinds), kinds


async def test_the_cloud_process_can_run_the_trs(embedded_relay_overlay):
    o = embedded_relay_overlay
    mn = await o.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await o.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    packet = ipv4_udp(mn.vip4, cn.vip4, b"via the cloud's own relay")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    assert mn.daemon.status({})["peers"][0]["path"] == "relay"
    assert len(o.embedded.sessions) == 1
