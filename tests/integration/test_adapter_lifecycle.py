"""The adapter daemon's life over loopback UDP (tests/integration/test_adapter.py
has the harness): general nodes changed at the AS while it runs, its status,
a restart, and hostile frames on its LAN port."""

from __future__ import annotations

import ipaddress
import json
import random

import trio
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptIA_NA,
)
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6ND_RS,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import Ether

from cyphonic import cli
from cyphonic.wire.virtio import PLAIN_HEADER, VNET_HDR
from tests.integration.conftest import DOMAIN
from tests.integration.test_adapter import (
    LEASE_TIME,
    TV,
    Adapter,
    connected,
    dns_from,
    echo_reply,
    hall_with_tv,
    start_adapter,
    until,
)
from tests.integration.test_overlay import answer, recv_packet
from tests.support.lan import ACK, Device


async def test_a_general_node_given_ipv6_later_is_served_it_without_a_new_lease(overlay):
    adapter, tv, cn = await connected(overlay)
    bundle = overlay.tmp / "hall"
    argv = ["adapter", "add", "--ca", str(overlay.ca), "--bundle", str(bundle), "--adapter", "hall", f"{TV}=tv,ipv6"]
    assert cli.main(argv) == 0
    gns = adapter.daemon.general_nodes
    with trio.fail_after(10):
        gns.update(await gns.fetch())  # what the refresh every general_node_refresh seconds does
    await until(lambda: adapter.general_node(tv).state == "ready" and adapter.general_node(tv).ipv6)
    assert adapter.general_node(tv).vip6 != ipaddress.IPv6Address("::")
    # its IPv4 lease still carries its packets, with no DHCP message meanwhile
    ping = tv.ping(cn.vip4)
    await adapter.lan.send(ping)
    assert await recv_packet(cn) == bytes(ping[IP])


# --- status -------------------------------------------------------------------------------


async def test_the_status_document_lists_the_general_node_its_lease_and_peers(overlay):
    adapter, tv, cn = await connected(overlay)
    ping = tv.ping(cn.vip4)
    await adapter.lan.send(ping)
    await recv_packet(cn)
    status = adapter.daemon.status({})
    assert status["role"] == "adapter" and status["fqdn"] == f"hall.{DOMAIN}" and status["registered"]
    assert status["vip4"] == adapter.vip4 and status["mac"] == adapter.lan.mac.hex(":")
    [gn] = status["general_nodes"]
    assert gn["mac"] == TV and gn["fqdn"] == f"tv.{DOMAIN}" and gn["state"] == "ready" and gn["registered"]
    assert gn["vip4"] == tv.ip and gn["vip6"] is None  # enrolled without IPv6
    assert LEASE_TIME - 60 < gn["lease_expires"] <= LEASE_TIME and gn["lease6_expires"] is None
    [peer] = gn["peers"]
    assert peer["fqdn"] == f"cn.{DOMAIN}" and peer["vip4"] == cn.vip4 and peer["path"] == "direct"
    assert peer["tx_bytes"] == len(ping[IP])  # into the tunnel to cn
    assert gn["tx_bytes"] == peer["tx_bytes"]  # the general node's own row counts the same way
    assert status["lan_frames"]["in"] >= 4 and status["lan_frames"]["out"] >= 3
    json.dumps(status)  # what the control socket sends


# --- restart ------------------------------------------------------------------------------


async def test_a_restarted_adapter_keeps_the_lease_and_the_peers(overlay):
    adapter, tv, cn = await connected(overlay)
    await adapter.lan.send(tv.ping(cn.vip4))
    await recv_packet(cn)
    expires = adapter.general_node(tv).lease4
    bundle = overlay.tmp / "hall"
    peers = json.loads((bundle / "leases.json.peers").read_text())
    assert peers[TV][ipaddress.IPv4Address(cn.vip4).packed.hex()] == f"cn.{DOMAIN}"
    await adapter.stop()
    logins = overlay.auth.logins
    again = await start_adapter(overlay, bundle)
    tv.lan = again.lan
    # no DHCP message: the kept lease logs tv in and registers it by itself
    await until(lambda: again.general_node(tv).state == "ready")
    assert overlay.auth.logins == logins + 2  # the adapter and tv
    gn = again.general_node(tv)
    assert str(gn.vip4) == tv.ip and gn.lease4 == expires
    # tv's packets to cn flow again without a new DNS query: the adapter
    # remembered the peer, selects the route by itself and holds the very
    # first packet until the tunnel is up
    await again.lan.send(tv.ping(cn.vip4, seq=1))
    with trio.fail_after(10):
        arrived = IP(await cn.tun.app.recv(65535))
    assert arrived.src == tv.ip and arrived[ICMP].seq == 1
    mark = again.lan.mark()
    await cn.tun.app.send(echo_reply(bytes(arrived)))
    await again.lan.expect(lambda f: ICMP in f and f[ICMP].type == 0 and f.dst == TV, mark)
    assert not any(DHCP in f or DNS in f for f in again.lan.frames())
    # and its renewal, unicast to the adapter, is acknowledged with the same address
    mark = again.lan.mark()
    renew = tv.dhcp("request", ciaddr=tv.ip)
    renew[Ether].dst, renew[IP].src, renew[IP].dst = again.lan.mac.hex(":"), tv.ip, again.vip4
    await again.lan.send(renew)
    ack = await again.lan.expect(tv.is_dhcp_reply(ACK), mark)
    assert ack[BOOTP].yiaddr == tv.ip and ack[IP].dst == tv.ip


# --- hostile LAN input ------------------------------------------------------------------------


def real_frames(tv: Device, adapter: Adapter, cn_vip: str) -> list[bytes]:
    """One of each kind of frame the adapter handles, well formed."""
    vip6 = str(adapter.daemon.signaling.grant.vip6)
    own6 = str(adapter.general_node(tv).vip6)
    ll = "fe80::200:5eff:fe00:5301"
    question = DNS(id=7, rd=1, qd=[DNSQR(qname=f"cn.{DOMAIN}", qtype="AAAA")])
    frames = [
        tv.arp_for(cn_vip),
        tv.discover(),
        tv.request(tv.ip or "10.0.0.1", adapter.vip4),
        tv.dns_query(adapter.vip4, f"cn.{DOMAIN}"),
        tv.ping(cn_vip),
        tv.ping(adapter.vip4),
        tv.syn(cn_vip, 1460),
        tv.ether("33:33:ff:00:00:01")
        / IPv6(src=own6, dst="ff02::1:ff00:1", hlim=255)
        / ICMPv6ND_NS(tgt=vip6)
        / ICMPv6NDOptSrcLLAddr(lladdr=TV),
        tv.ether("33:33:00:00:00:02") / IPv6(src=ll, dst="ff02::2", hlim=255) / ICMPv6ND_RS(),
        tv.ether("33:33:00:01:00:02")
        / IPv6(src=ll, dst="ff02::1:2")
        / UDP(sport=546, dport=547)
        / DHCP6_Solicit(trid=7)
        / DHCP6OptClientId(duid=DUID_LL(lladdr=TV))
        / DHCP6OptIA_NA(iaid=1),
        tv.ether() / IPv6(src=own6, dst=vip6) / UDP(sport=5353, dport=53) / question,
        tv.ether() / IPv6(src=own6, dst=vip6) / ICMPv6EchoRequest(),
    ]
    return [bytes(f) for f in frames]


def mutations(frames: list[bytes], rng: random.Random, count: int) -> list[bytes]:
    """Real frames with bytes changed, cut short, grown or spliced."""
    out = []
    for _ in range(count):
        frame = bytearray(rng.choice(frames))
        how = rng.randrange(4)
        if how == 0:
            for _ in range(rng.randint(1, 4)):
                frame[rng.randrange(len(frame))] = rng.randrange(256)
        elif how == 1:
            del frame[rng.randrange(len(frame)) :]
        elif how == 2:
            frame += rng.randbytes(rng.randint(1, 200))
        else:
            at = rng.randrange(14, len(frame))
            frame[at:] = rng.choice(frames)[at:]
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        out.append(bytes(frame))
    return out


def virtio_header(rng: random.Random) -> bytes:
    """A header as a buggy or hostile kernel path might hand it over: any
    flags, GSO type, sizes and checksum offsets."""
    return VNET_HDR.pack(
        rng.choice([0, 1, 2, rng.randrange(256)]),
        rng.choice([0, 1, 3, 4, 5, 0x81, rng.randrange(256)]),
        rng.randrange(200),
        rng.choice([0, 1, 536, 1400, rng.randrange(65536)]),
        rng.randrange(100),
        rng.randrange(40),
    )


async def test_hostile_lan_input_is_counted_and_the_adapter_keeps_serving(overlay):
    cn = await overlay.start_node("cn")
    adapter, tv = await hall_with_tv(overlay, "tv,ipv6")
    await tv.lease()
    rng = random.Random(20240601)
    real = real_frames(tv, adapter, cn.vip4)
    datagrams = [PLAIN_HEADER + rng.randbytes(rng.randint(0, 1600)) for _ in range(300)]
    datagrams += [PLAIN_HEADER + f for f in mutations(real, rng, 3000)]
    datagrams += [rng.randbytes(rng.randint(0, 24)) for _ in range(50)]  # no room for the headers
    datagrams += [virtio_header(rng) + f for f in real + mutations(real, rng, 1000)]
    frames_in = adapter.daemon.interface.frames_in
    drops = sum(adapter.drops.values())
    for datagram in datagrams:
        await adapter.lan.send_raw(datagram)
    await until(lambda: adapter.daemon.interface.frames_in - frames_in == len(datagrams))
    assert sum(adapter.drops.values()) - drops > len(datagrams) // 2
    # every task is alive: DHCP, DNS and the data path still answer
    await tv.lease()
    assert answer(await dns_from(tv, adapter, f"cn.{DOMAIN}", qid=0x7777)) == cn.vip4
    ping = tv.ping(cn.vip4, seq=99)
    await adapter.lan.send(ping)
    with trio.fail_after(5):
        while await cn.tun.app.recv(65535) != bytes(ping[IP]):
            pass  # the hostile input's packets that were fit to pass
