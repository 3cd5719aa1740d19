"""The adapter daemon over loopback UDP in one Trio run: the cloud, a node
`cn` with an in-memory TUN, and an AdapterDaemon whose LAN port is a
socketpair (tests/support/lan.py) on which scapy plays the general nodes."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import trio
from scapy.layers.dhcp import BOOTP
from scapy.layers.dhcp6 import (
    DUID_LL,
    DHCP6_Advertise,
    DHCP6_Reply,
    DHCP6_Request,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptServerId,
)
from scapy.layers.dns import DNS, DNSQR
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror
from scapy.layers.inet6 import (
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from cyphonic import cli, config
from cyphonic.adapter.daemon import AdapterDaemon
from cyphonic.adapter.settings import SCHEMA as ADAPTER_SCHEMA
from tests.integration.conftest import DOMAIN, _Started, free_port
from tests.integration.test_overlay import answer, recv_packet, resolve
from tests.support.lan import OFFER, Device, FakeLan, dhcp_options

TV, CAM = "02:00:5e:00:53:01", "02:00:5e:00:53:02"
STRANGER = "02:00:5e:00:53:99"
MTU = 1400
LEASE_TIME = 3600


@dataclass
class Adapter:
    daemon: AdapterDaemon
    lan: FakeLan
    scope: trio.CancelScope
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def vip4(self) -> str:
        return str(self.daemon.signaling.grant.vip4)

    @property
    def drops(self) -> dict[str, int]:
        return self.daemon.status({})["drops"]

    def general_node(self, device: Device):
        return self.daemon.general_nodes.by_mac[device.mac_bytes]

    async def stop(self) -> None:
        self.scope.cancel()
        with trio.fail_after(5):
            await self.stopped.wait()


def enroll_adapter(overlay, name: str, *general: str) -> Path:
    """`cyphonic enroll adapter` for the loopback cloud; adapter.toml on a free port."""
    bundle = overlay.tmp / name
    argv = ["enroll", "adapter", name, "--ca", str(overlay.ca), "--out", str(bundle), "--cloud", "127.0.0.1"]
    for g in general:
        argv += ["--general-node", g]
    assert cli.main(argv) == 0
    text = (bundle / "adapter.toml").read_text()
    text = text.replace('"127.0.0.1:7000"', f'"127.0.0.1:{overlay.as_port}"')
    text = text.replace('"127.0.0.1:7001"', f'"127.0.0.1:{overlay.nms_port}"')
    text = text.replace("listen_port = 4500", f"listen_port = {free_port()}\nkeepalive = 2")
    text = text.replace("mtu = 1400", f"mtu = {MTU}\nlease_time = {LEASE_TIME}")
    (bundle / "adapter.toml").write_text(text)
    return bundle


async def start_adapter(overlay, bundle: Path) -> Adapter:
    """An AdapterDaemon on the bundle with a FakeLan for its port, started:
    it logged in, registered and got its general nodes from the AS."""
    cfg = config.load(bundle / "adapter.toml", ADAPTER_SCHEMA)
    lans: list[FakeLan] = []

    def factory(name: str) -> FakeLan:
        lans.append(FakeLan(name))
        return lans[-1]

    daemon = AdapterDaemon(cfg, lan_factory=factory, local_addresses=lambda own: ["127.0.0.1"], control_name=None)
    overlay.nursery.start_soon(lans[0].read_forever)
    stopped = trio.Event()
    with trio.fail_after(20):
        scope = await overlay.nursery.start(_run_adapter, daemon, stopped)
    return Adapter(daemon, lans[0], scope, stopped)


async def _run_adapter(daemon: AdapterDaemon, stopped: trio.Event, *, task_status) -> None:
    with trio.CancelScope() as scope:
        try:
            await daemon.run(task_status=_Started(task_status, scope))
        finally:
            for sock in daemon.sockets.values():
                sock.close()
            daemon.lan.close()
            stopped.set()


async def hall_with_tv(overlay, tv: str = "tv", *others: str) -> tuple[Adapter, Device]:
    """The adapter `hall` serving tv (`tv` may add ",ipv6") and `others`."""
    adapter = await start_adapter(overlay, enroll_adapter(overlay, "hall", f"{TV}={tv}", *others))
    return adapter, Device(adapter.lan, TV)


async def connected(overlay, *others: str) -> tuple[Adapter, Device, object]:
    """cn up, the adapter up, tv leased and its DNS query for cn answered."""
    cn = await overlay.start_node("cn")
    adapter, tv = await hall_with_tv(overlay, "tv", *others)
    await tv.lease()
    assert answer(await dns_from(tv, adapter, f"cn.{DOMAIN}")) == cn.vip4
    return adapter, tv, cn


async def dns_from(device: Device, adapter: Adapter, name: str, qid: int = 0x5A5A) -> dns.message.Message:
    """`device`'s query to the adapter's DNS server, and its answer off the LAN."""
    mark = adapter.lan.mark()
    await adapter.lan.send(device.dns_query(adapter.vip4, name, qid=qid))
    reply = await adapter.lan.expect(
        lambda f: f.dst == device.mac and UDP in f and f[UDP].sport == 53 and f[DNS].id == qid, mark
    )
    assert reply[IP].src == adapter.vip4 and reply[IP].dst == device.ip and checksums_ok(reply)
    return dns.message.from_wire(bytes(reply[UDP].payload))


def registered(overlay) -> set[str]:
    return {n["fqdn"] for n in overlay.nms.status(time.time())}


async def until(condition, timeout: float = 10) -> None:
    """Poll `condition` until it holds, failing after `timeout`."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


def echo_reply(packet: bytes) -> bytes:
    """cn's answer to the echo request `packet` (an IP packet)."""
    request = IP(packet)
    return bytes(
        IP(src=request.dst, dst=request.src)
        / ICMP(type=0, id=request[ICMP].id, seq=request[ICMP].seq)
        / Raw(bytes(request[ICMP].payload))
    )


def checksums_ok(frame: Ether) -> bool:
    """The IPv4 header and TCP/UDP/ICMP checksums are what scapy computes."""
    for layer in (IP, UDP, TCP, ICMP):
        if layer in frame:
            fresh = frame.copy()
            del fresh[layer].chksum
            if Ether(bytes(fresh))[layer].chksum != frame[layer].chksum:
                return False
    return True


# --- Address Configuration ------------------------------------------------------------------


async def test_a_known_mac_is_logged_in_and_leased_its_virtual_ip(overlay):
    adapter, tv = await hall_with_tv(overlay)
    logins = overlay.auth.logins
    assert f"tv.{DOMAIN}" not in registered(overlay)  # nothing on its behalf before it asks
    offer, ack = await tv.lease()
    gn = adapter.general_node(tv)
    # its first DHCP message logged it in and registered it, on its behalf
    assert overlay.auth.logins == logins + 1
    assert f"tv.{DOMAIN}" in registered(overlay)
    assert gn.state == "ready"
    assert offer[BOOTP].yiaddr == ack[BOOTP].yiaddr == str(gn.vip4)
    mac = adapter.lan.mac.hex(":")
    assert offer.dst == ack.dst == TV and offer.src == ack.src == mac
    assert checksums_ok(offer) and checksums_ok(ack)
    grant = adapter.daemon.signaling.grant
    overlay_prefix = ipaddress.IPv4Network(f"{grant.vip4}/{grant.vip4_prefix}", strict=False)
    options = dhcp_options(ack)
    assert options["subnet_mask"] == str(overlay_prefix.netmask)
    assert options["server_id"] == options["router"] == options["name_server"] == adapter.vip4
    assert options["interface-mtu"] == MTU
    assert options["lease_time"] == LEASE_TIME
    assert gn.vip4 in overlay_prefix
    assert LEASE_TIME - 60 < gn.lease4 - time.time() <= LEASE_TIME


async def test_an_unknown_mac_gets_no_dhcp_answer(overlay):
    adapter, tv = await hall_with_tv(overlay)
    await tv.lease()
    logins = overlay.auth.logins
    stranger = Device(adapter.lan, STRANGER)
    mark = adapter.lan.mark()
    await adapter.lan.send(stranger.discover())
    await adapter.lan.send(tv.discover())  # answered at once: tv is logged in
    await adapter.lan.expect(tv.is_dhcp_reply(OFFER), mark)
    # whatever the adapter sent for the stranger went out before tv's offer
    assert [f for f in adapter.lan.frames(mark) if f.dst in (STRANGER, "ff:ff:ff:ff:ff:ff")] == []
    assert adapter.drops["unknown MAC"] == 1
    assert overlay.auth.logins == logins
    assert list(adapter.daemon.general_nodes.by_mac) == [tv.mac_bytes]


# --- ARP ----------------------------------------------------------------------------------


async def test_arp_for_a_peer_is_answered_with_the_adapters_mac_never_for_the_node_itself(overlay):
    cn = await overlay.start_node("cn")
    adapter, tv = await hall_with_tv(overlay)
    await tv.lease()
    mark = adapter.lan.mark()
    await adapter.lan.send(tv.arp_for(tv.ip))  # its own address: a conflict check must find no one
    await adapter.lan.send(tv.arp_for(cn.vip4))
    reply = await adapter.lan.expect(lambda f: ARP in f, mark)
    mac = adapter.lan.mac.hex(":")
    assert reply[ARP].op == 2 and reply[ARP].psrc == cn.vip4
    assert reply[ARP].hwsrc == reply.src == mac
    assert reply[ARP].pdst == tv.ip and reply[ARP].hwdst == reply.dst == TV
    assert len([f for f in adapter.lan.frames(mark) if ARP in f]) == 1


# --- DNS and the data path ------------------------------------------------------------------


async def test_a_dns_query_opens_the_tunnel_and_a_ping_crosses_it_both_ways(overlay):
    adapter, tv, cn = await connected(overlay)
    gn = adapter.general_node(tv)
    # route selection and tunnel establishment for tv, as tv
    assert adapter.daemon.packet.tunnel_for(gn, f"cn.{DOMAIN}") is not None
    assert cn.daemon.packet.tunnel_to(f"tv.{DOMAIN}").peer.vip4 == gn.vip4
    ping = tv.ping(cn.vip4)
    await adapter.lan.send(ping)
    arrived = await recv_packet(cn)
    assert arrived == bytes(ping[IP])
    mark = adapter.lan.mark()
    await cn.tun.app.send(echo_reply(arrived))
    pong = await adapter.lan.expect(lambda f: ICMP in f and f[ICMP].type == 0, mark)
    assert pong.dst == TV and pong.src == adapter.lan.mac.hex(":")
    assert bytes(pong[IP]) == echo_reply(arrived)


async def test_cn_resolves_the_general_node_and_reaches_it(overlay):
    cn = await overlay.start_node("cn")
    adapter, tv = await hall_with_tv(overlay)
    await tv.lease()
    assert answer(await resolve(cn, f"tv.{DOMAIN}")) == tv.ip
    assert cn.daemon.packet.tunnel_to(f"tv.{DOMAIN}") is not None
    packet = bytes(IP(src=cn.vip4, dst=tv.ip) / UDP(sport=7000, dport=7001) / Raw(b"cn calls tv"))
    mark = adapter.lan.mark()
    await cn.tun.app.send(packet)
    frame = await adapter.lan.expect(lambda f: UDP in f and f[UDP].dport == 7001, mark)
    assert frame.dst == TV and frame.src == adapter.lan.mac.hex(":")
    assert bytes(frame[IP]) == packet
    # tv answers through the tunnel cn opened
    reply = tv.ether() / tv.ip_to(cn.vip4) / UDP(sport=7001, dport=7000) / Raw(b"tv answers")
    await adapter.lan.send(reply)
    assert await recv_packet(cn) == bytes(reply[IP])


async def test_frames_whose_mac_and_source_address_match_no_lease_are_dropped(overlay):
    adapter, tv, cn = await connected(overlay, f"{CAM}=cam")
    cam = Device(adapter.lan, CAM)
    await cam.lease()
    data = UDP(sport=1, dport=2) / Raw(b"spoofed")
    other_ip = str(ipaddress.IPv4Address(tv.ip) + 100)
    spoofed = [
        tv.ether() / tv.ip_to(cn.vip4, src=other_ip) / data,  # tv's MAC, not its address
        tv.ether() / tv.ip_to(cn.vip4, src=cam.ip) / data,  # tv's MAC, cam's address
        cam.ether() / tv.ip_to(cn.vip4) / data,  # another general node's MAC, tv's address
        Device(adapter.lan, STRANGER).ether() / tv.ip_to(cn.vip4) / data,  # a stranger's MAC
    ]
    for frame in spoofed:
        await adapter.lan.send(frame)
    genuine = tv.ether() / tv.ip_to(cn.vip4) / UDP(sport=1, dport=2) / Raw(b"genuine")
    await adapter.lan.send(genuine)
    assert await recv_packet(cn) == bytes(genuine[IP])  # the first to arrive: no spoofed one did
    assert adapter.drops["source MAC and address match no lease"] == len(spoofed)
    assert cn.daemon.status({})["peers"][0]["rx_bytes"] == len(genuine[IP])


# --- MTU ----------------------------------------------------------------------------------


async def test_an_oversized_df_packet_gets_fragmentation_needed_with_the_overlay_mtu(overlay):
    adapter, tv, cn = await connected(overlay)
    big = tv.ether() / tv.ip_to(cn.vip4, flags="DF") / UDP(sport=5000, dport=5001)
    big = big / Raw(bytes(1500 - len(big[IP])))
    assert len(big[IP]) == 1500
    mark = adapter.lan.mark()
    await adapter.lan.send(big)
    icmp = await adapter.lan.expect(lambda f: ICMP in f and f[ICMP].type == 3, mark)
    assert icmp[ICMP].code == 4 and icmp[ICMP].nexthopmtu == MTU  # RFC 1191 section 4
    assert icmp.dst == TV and icmp[IP].src == adapter.vip4 and icmp[IP].dst == tv.ip
    assert icmp[IPerror].src == tv.ip and icmp[IPerror].dst == cn.vip4  # it quotes the packet
    assert checksums_ok(icmp)
    # that one never went into the tunnel; one that fits does
    fits = tv.ether() / tv.ip_to(cn.vip4, flags="DF") / UDP(sport=5000, dport=5001) / Raw(bytes(MTU - 28))
    await adapter.lan.send(fits)
    assert await recv_packet(cn) == bytes(fits[IP])


async def test_a_tcp_syn_arrives_with_its_mss_clamped_to_the_overlay_mtu(overlay):
    adapter, tv, cn = await connected(overlay)
    await adapter.lan.send(tv.syn(cn.vip4, 1460))
    syn = IP(await recv_packet(cn))
    assert dict(syn[TCP].options)["MSS"] == MTU - 40
    assert checksums_ok(Ether() / syn)  # the checksum follows the new MSS
    await adapter.lan.send(tv.syn(cn.vip4, 1200))  # small enough already: untouched
    assert dict(IP(await recv_packet(cn))[TCP].options)["MSS"] == 1200


async def test_an_ipv6_general_node_gets_its_address_by_dhcpv6_and_reaches_cn_over_ipv6(overlay):
    cn = await overlay.start_node("cn")
    adapter, tv = await hall_with_tv(overlay, "tv,ipv6")
    lan, link_local = adapter.lan, "fe80::200:5eff:fe00:5301"
    mark = lan.mark()
    await lan.send(tv.ether("33:33:00:00:00:02") / IPv6(src=link_local, dst="ff02::2", hlim=255) / ICMPv6ND_RS())
    duid = DHCP6OptClientId(duid=DUID_LL(lladdr=TV))
    dhcp6 = tv.ether("33:33:00:01:00:02") / IPv6(src=link_local, dst="ff02::1:2") / UDP(sport=546, dport=547)
    await lan.send(dhcp6 / DHCP6_Solicit(trid=1) / duid / DHCP6OptIA_NA(iaid=1))
    advertise = await lan.expect(lambda f: DHCP6_Advertise in f, mark)
    own6 = advertise[DHCP6OptIAAddress].addr
    assert own6 == str(adapter.general_node(tv).vip6)
    server = DHCP6OptServerId(duid=advertise[DHCP6OptServerId].duid)
    ia = DHCP6OptIA_NA(iaid=1, ianaopts=[DHCP6OptIAAddress(addr=own6)])
    mark = lan.mark()
    await lan.send(dhcp6 / DHCP6_Request(trid=2) / duid / server / ia)
    reply = await lan.expect(lambda f: DHCP6_Reply in f, mark)
    assert reply[DHCP6OptIAAddress].addr == own6 and reply.dst == TV
    ra = await lan.expect(lambda f: ICMPv6ND_RA in f)  # M and O: addresses and DNS from DHCPv6
    assert ra[ICMPv6ND_RA].M == 1 and ra[ICMPv6ND_RA].O == 1 and ra[ICMPv6NDOptMTU].mtu == MTU
    # NDP for cn's address is answered with the adapter's MAC, as ARP is
    target = ipaddress.IPv6Address(cn.vip6).packed
    group = str(ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + target[13:]))
    mark = lan.mark()
    solicit = ICMPv6ND_NS(tgt=cn.vip6) / ICMPv6NDOptSrcLLAddr(lladdr=TV)
    await lan.send(tv.ether("33:33:ff:" + target[13:].hex(":")) / IPv6(src=own6, dst=group, hlim=255) / solicit)
    advert = await lan.expect(lambda f: ICMPv6ND_NA in f, mark)
    assert advert[ICMPv6ND_NA].tgt == cn.vip6 and advert[ICMPv6NDOptDstLLAddr].lladdr == adapter.lan.mac.hex(":")
    # AAAA from the adapter's DNS over IPv6, then a ping6 both ways through the tunnel
    vip6 = str(adapter.daemon.signaling.grant.vip6)
    query = DNS(id=6, rd=1, qd=[DNSQR(qname=f"cn.{DOMAIN}", qtype="AAAA")])
    mark = lan.mark()
    await lan.send(tv.ether() / IPv6(src=own6, dst=vip6) / UDP(sport=40053, dport=53) / query)
    found = await lan.expect(lambda f: DNS in f and f[DNS].id == 6, mark)
    assert answer(dns.message.from_wire(bytes(found[UDP].payload))) == cn.vip6
    ping = tv.ether() / IPv6(src=own6, dst=cn.vip6) / ICMPv6EchoRequest(id=1, seq=1, data=b"over IPv6")
    await lan.send(ping)
    assert await recv_packet(cn) == bytes(ping[IPv6])
    pong = IPv6(src=cn.vip6, dst=own6) / ICMPv6EchoReply(id=1, seq=1, data=b"over IPv6")
    mark = lan.mark()
    await cn.tun.app.send(bytes(pong))
    back = await lan.expect(lambda f: ICMPv6EchoReply in f, mark)
    assert back.dst == TV and bytes(back[IPv6]) == bytes(pong)
