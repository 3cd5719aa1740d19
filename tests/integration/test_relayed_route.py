"""Both ends behind NAPT: the NMS assigns the TRS and traffic crosses it."""

from __future__ import annotations

import trio

from tests.integration.conftest import DOMAIN, ipv4_udp
from tests.integration.test_overlay import answer, recv_packet, resolve


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
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    tunnel = mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}")
    [session] = relay_overlay.trs.sessions.values()
    # the End Key cipher's keys differ from everything the TRS derived
    held = {session.seal_key, session.mac_key}
    assert tunnel.path.tunnel_key not in held  # the Temp Key never reached the TRS
    capsule = tunnel.seal(0x30, ipv4_udp(mn.vip4, cn.vip4, b"secret"))
    from cyphonic import crypto
    from cyphonic.errors import AuthenticationError

    for key in held:
        try:
            crypto.DataCipher(key, key).open(capsule, 13)
        except AuthenticationError:
            continue
        raise AssertionError("a TRS key opened relayed data")


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
    from cyphonic.crypto import ffi

    seen: list[bytes] = []
    receive = relay_overlay.trs.receive

    def recording(data, source, now):
        seen.append(bytes(data))
        return receive(data, source, now)

    relay_overlay.trs.receive = recording
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    cn = await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, f"cn.{DOMAIN}")
    await mn.tun.app.send(ipv4_udp(mn.vip4, cn.vip4, b"payload"))
    await recv_packet(cn)
    tunnel = mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}")
    secrets_ = [tunnel.path.tunnel_key]  # the Temp Key (hellos)
    for key in (tunnel.cipher._send_key, tunnel.cipher._recv_key):  # the End Keys
        secrets_.append(bytes(ffi.buffer(key)))
    assert len(seen) >= 4 and all(len(s) == 32 for s in secrets_)
    for datagram in seen:
        for secret in secrets_:
            assert secret not in datagram


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
