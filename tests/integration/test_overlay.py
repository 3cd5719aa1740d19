"""Two nodes, a cloud, loopback UDP: the whole signaling and data path."""

from __future__ import annotations

import os
import socket

import dns.message
import dns.rcode
import pytest
import trio

from tests.integration.conftest import DOMAIN, ipv4_udp


async def resolve(node, name: str, rdtype: str = "A") -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    with trio.fail_after(10):
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.sendto(query.to_wire(), node.resolver)
            data = await sock.recv(65535)
    return dns.message.from_wire(data)


def answer(msg: dns.message.Message) -> str:
    return msg.answer[0][0].to_text()


async def recv_packet(node, timeout: float = 5) -> bytes:
    with trio.fail_after(timeout):
        return await node.tun.app.recv(65535)


async def test_node_resolves_peer_by_name_and_packets_cross_the_tunnel(overlay):
    mn = await overlay.start_node("mn")
    cn = await overlay.start_node("cn")
    reply = await resolve(mn, f"cn.{DOMAIN}")
    assert answer(reply) == cn.vip4
    reply6 = await resolve(mn, f"cn.{DOMAIN}", "AAAA")
    assert answer(reply6) == cn.vip6

    packet = ipv4_udp(mn.vip4, cn.vip4, b"hello through the overlay")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    back = ipv4_udp(cn.vip4, mn.vip4, b"and back")
    await cn.tun.app.send(back)
    assert await recv_packet(mn) == back

    [peer] = mn.daemon.status({})["peers"]
    assert peer["fqdn"] == f"cn.{DOMAIN}" and peer["path"] == "direct"
    assert peer["tx_bytes"] == len(packet) and peer["rx_bytes"] == len(back)


async def test_peer_behind_nat_opens_the_reverse_path(overlay):
    mn = await overlay.start_node("mn")
    # cn reports a locator the NMS never sees it from: NAT detected.
    cn = await overlay.start_node("cn", locators=["192.168.20.10"])
    assert cn.daemon.status({})["nat"] is True
    assert answer(await resolve(mn, f"cn.{DOMAIN}")) == cn.vip4
    assert mn.daemon.status({})["peers"][0]["path"] == "reverse"
    packet = ipv4_udp(mn.vip4, cn.vip4, b"x" * 1300)
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet


async def test_unknown_name_is_nxdomain_and_own_name_resolves(overlay):
    mn = await overlay.start_node("mn")
    assert (await resolve(mn, f"nobody.{DOMAIN}")).rcode() == dns.rcode.NXDOMAIN
    assert answer(await resolve(mn, f"mn.{DOMAIN}")) == mn.vip4
    # no upstream configured: other names are refused, not left hanging
    assert (await resolve(mn, "example.org")).rcode() == dns.rcode.REFUSED


async def test_both_behind_nat_without_trs_is_servfail(overlay):
    mn = await overlay.start_node("mn", locators=["10.1.1.1"])
    await overlay.start_node("cn", locators=["10.2.2.2"])
    assert (await resolve(mn, f"cn.{DOMAIN}")).rcode() == dns.rcode.SERVFAIL


async def test_spoofed_inner_source_is_dropped(overlay):
    mn = await overlay.start_node("mn")
    cn = await overlay.start_node("cn")
    await resolve(mn, f"cn.{DOMAIN}")
    await mn.tun.app.send(ipv4_udp("10.96.9.9", cn.vip4, b"spoofed"))
    good = ipv4_udp(mn.vip4, cn.vip4, b"genuine")
    await mn.tun.app.send(good)
    assert await recv_packet(cn) == good  # the spoofed one never arrived first
    assert cn.daemon.packet.drops.counts["inner source is not the peer's virtual IP"] == 1


async def test_hostile_datagrams_are_counted_and_change_nothing(overlay):
    mn = await overlay.start_node("mn")
    cn = await overlay.start_node("cn")
    await resolve(mn, f"cn.{DOMAIN}")
    tunnel = cn.daemon.packet.tunnel_to(f"mn.{DOMAIN}")
    endpoint = tunnel.endpoint
    # capture a genuine capsule to replay it from elsewhere
    sniffer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sniffer.bind(("127.0.0.1", 0))
    genuine = tunnel.seal(0x30, ipv4_udp(cn.vip4, mn.vip4, b"genuine"))
    garbage = [
        b"", b"\x30", b"\x30" + os.urandom(40), b"\x01" + os.urandom(200), b"\x10" + os.urandom(100),
        b"\x20" + os.urandom(80), b"\x21" + os.urandom(80), b"\x14" + os.urandom(90), b"\xff" * 1500,
    ]
    for target in (("127.0.0.1", mn.port), ("127.0.0.1", overlay.as_port), ("127.0.0.1", overlay.nms_port)):
        for g in garbage:
            await sniffer.sendto(g, target)
    cn.daemon.sockets[socket.AF_INET].sendto(genuine, ("127.0.0.1", mn.port))  # the real path
    assert await recv_packet(mn) == ipv4_udp(cn.vip4, mn.vip4, b"genuine")
    await sniffer.sendto(genuine, ("127.0.0.1", mn.port))  # replay from another address
    await trio.sleep(0.2)
    mn_tunnel = mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}")
    assert mn.daemon.packet.drops.counts["replayed capsule"] == 1
    assert mn_tunnel.endpoint[1] == cn.port  # the replay moved nothing
    assert tunnel.endpoint == endpoint
    assert mn.daemon.packet.drops.total() + mn.daemon.signaling.drops.total() >= len(garbage) - 1
    assert overlay.auth.drops.total() >= len(garbage) - 1
    assert overlay.nms.drops.total() >= len(garbage) - 1
    assert len(mn.daemon.packet.by_index) == 1  # no state from garbage
    # and everything still works
    packet = ipv4_udp(mn.vip4, cn.vip4, b"still alive")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet
    sniffer.close()


async def test_cloud_restart_keeps_tunnels_and_addresses(overlay):
    mn = await overlay.start_node("mn")
    cn = await overlay.start_node("cn")
    before = (mn.vip4, cn.vip4, mn.vip6, cn.vip6)
    await resolve(mn, f"cn.{DOMAIN}")
    overlay.stop_cloud()
    await trio.sleep(0.1)
    packet = ipv4_udp(mn.vip4, cn.vip4, b"cloud is down")
    await mn.tun.app.send(packet)
    assert await recv_packet(cn) == packet  # the data plane does not need the cloud
    await overlay.start_cloud()
    # a third node logs in after the restart; the old ones keep their VIPs
    third = await overlay.start_node("third")
    assert third.vip4 not in before[:2]
    with trio.fail_after(10):
        while f"cn.{DOMAIN}" not in {n["fqdn"] for n in overlay.nms.status(trio.current_time() * 0 + __import__("time").time())}:
            await trio.sleep(0.2)
    assert answer(await resolve(third, f"cn.{DOMAIN}")) == cn.vip4
    enrolled = {e.fqdn: (str(e.vip4), str(e.vip6)) for e in overlay.auth.store.enrollments()}
    assert enrolled[f"mn.{DOMAIN}"] == (before[0], before[2])
    assert enrolled[f"cn.{DOMAIN}"] == (before[1], before[3])


async def test_refused_certificate_stops_the_node(overlay):
    bundle = overlay.enroll("old", "--start", "2020-01-01", "--days", "1")
    with pytest.raises(BaseException) as info, trio.fail_after(30):
        await overlay.start_node("old", bundle=bundle)
    assert "refused" in repr(info.value) and "expired" in repr(info.value)
    assert overlay.auth.refusals == 1


async def test_revoked_and_foreign_certificates_are_refused(overlay, tmp_path, caplog):
    from cyphonic import cli

    revoked = overlay.enroll("gone")
    assert cli.main(["ca", "revoke", "--ca", str(overlay.ca), str(revoked / "node.crt")]) == 0
    with pytest.raises(BaseException) as info, trio.fail_after(30):
        await overlay.start_node("gone", bundle=revoked)
    assert "revoked" in repr(info.value)

    other = tmp_path / "other-ca"
    assert cli.main(["ca", "init", "--dir", str(other), "--domain", DOMAIN]) == 0
    foreign = tmp_path / "foreign"
    assert cli.main(["enroll", "node", "foreign", "--ca", str(other), "--out", str(foreign), "--cloud", "127.0.0.1"]) == 0
    # answers that do not verify never stop a node (a forger could send
    # them): it keeps asking, with backoff, and says why
    with trio.move_on_after(8) as waiting:
        await overlay.start_node("foreign", bundle=foreign)
    assert waiting.cancelled_caught
    assert "answers did not verify (AS certificate: unknown CA" in caplog.text
    assert overlay.auth.refusals >= 2  # the foreign node tried more than once
    assert overlay.auth.store.lookup(f"foreign.{DOMAIN}") is None


async def test_a_restarted_peer_is_reached_again_without_a_new_dns_query(overlay):
    mn = await overlay.start_node("mn")
    cn = await overlay.start_node("cn")
    await resolve(mn, f"cn.{DOMAIN}")
    old = mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}")
    cn.scope.cancel()  # cn's daemon dies and forgets every tunnel
    await trio.sleep(0.1)
    cn2 = await overlay.start_node("cn", bundle=overlay.tmp / "cn")
    # mn keeps sending (its applications have the address cached): the
    # silent tunnel is torn down and a new route selected by itself
    packet = ipv4_udp(mn.vip4, cn2.vip4, b"are you back?")
    with trio.fail_after(20):
        while True:
            await mn.tun.app.send(packet)
            with trio.move_on_after(0.5):
                assert await cn2.tun.app.recv(65535) == packet
                break
    assert mn.daemon.packet.tunnel_to(f"cn.{DOMAIN}") is not old
