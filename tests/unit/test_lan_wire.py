"""The LAN schemas of cyphonic.wire.lan read and write what scapy does.

scapy is the independent encoder/decoder: each header is built by scapy and
read by our schema, or built by our schema and dissected by scapy, field by
field. Random and mutated bytes only ever raise ParseError.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyphonic.errors import ParseError
from cyphonic.wire import lan
from cyphonic.wire.common import build, parse
from tests.support.scapy import (
    ARP,
    FUZZ,
    ICMP,
    IP,
    UDP,
    Ether,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPOption_Router_Alert,
    IPv6,
    Raw,
    mac,
)

MAC_A, MAC_B = "02:00:00:00:00:01", "02:aa:bb:cc:dd:02"


# --- Ethernet, ARP --------------------------------------------------------------------------


def test_ethernet_header_reads_and_writes_what_scapy_does():
    frame = bytes(Ether(dst=MAC_A, src=MAC_B, type=lan.ETH_P_IPV6))
    header = parse(lan.EthernetHeader, frame)
    assert (header.dst, header.src, header.ethertype) == (mac(MAC_A), mac(MAC_B), lan.ETH_P_IPV6)
    assert build(lan.EthernetHeader, header) == frame


def test_an_arp_request_from_scapy_is_read_field_by_field_and_rebuilt_the_same():
    frame = bytes(Ether(src=MAC_B, dst="ff:ff:ff:ff:ff:ff") / ARP(hwsrc=MAC_B, psrc="10.0.0.2", pdst="10.0.0.9"))
    value = parse(lan.ArpFrame, frame + bytes(18))  # padded to the 60-byte minimum
    assert value.ethernet.dst == lan.BROADCAST
    assert value.arp.operation == lan.ARP_REQUEST
    assert (value.arp.sender_mac, value.arp.sender_ip) == (mac(MAC_B), bytes([10, 0, 0, 2]))
    assert (value.arp.target_mac, value.arp.target_ip) == (bytes(6), bytes([10, 0, 0, 9]))
    assert value.padding == bytes(18)
    assert build(lan.Arp, value.arp) == frame[lan.ETH_HLEN :]


def test_arp_built_by_the_schema_dissects_in_scapy_as_a_reply():
    body = dict(operation=lan.ARP_REPLY, sender_mac=mac(MAC_A), sender_ip=bytes([10, 0, 0, 9]))
    body.update(target_mac=mac(MAC_B), target_ip=bytes([10, 0, 0, 2]))
    arp = ARP(build(lan.Arp, body))
    assert (arp.op, arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst) == (2, MAC_A, "10.0.0.9", MAC_B, "10.0.0.2")


@pytest.mark.parametrize(
    "field", [dict(hwtype=6), dict(ptype=0x86DD), dict(hwlen=8), dict(plen=16)], ids=lambda f: next(iter(f))
)
def test_arp_for_other_hardware_or_protocols_is_refused(field):
    with pytest.raises(ParseError):
        parse(lan.Arp, bytes(ARP(psrc="10.0.0.2", pdst="10.0.0.9", **field)))


def test_an_arp_frame_under_another_ethertype_is_refused():
    frame = bytes(Ether(type=lan.ETH_P_IP) / ARP())
    with pytest.raises(ParseError):
        parse(lan.ArpFrame, frame)


# --- IPv4, UDP, ICMP ------------------------------------------------------------------------


def test_ipv4_header_options_are_read_by_ihl():
    packet = bytes(IP(src="10.0.0.2", dst="10.0.0.9", ttl=7, tos=0x10, options=[IPOption_Router_Alert()]) / UDP())
    header = parse(lan.IPv4Header, packet)
    assert header.ihl == 6 and header.options == bytes(IPOption_Router_Alert())
    assert (header.tos, header.ttl, header.protocol, header.total_length) == (0x10, 7, lan.PROTO_UDP, 32)
    assert build(lan.IPv4Header, header) == packet[:24]


def test_ipv4_fragment_flags_and_offset_read_as_scapy_sets_them():
    header = parse(lan.IPv4Header, bytes(IP(flags="MF", frag=185, id=0x1234)))
    assert header.flags.more_fragments and not header.flags.dont_fragment
    assert (header.flags.fragment_offset, header.identification) == (185, 0x1234)


@pytest.mark.parametrize("first_byte", [0x44, 0x65, 0x4F], ids=["ihl-4", "version-6", "options-past-end"])
def test_an_ipv4_header_with_a_bad_version_or_ihl_is_refused(first_byte):
    packet = bytearray(bytes(IP()))
    packet[0] = first_byte
    with pytest.raises(ParseError):
        parse(lan.IPv4Header, bytes(packet))


def test_udp_header_matches_scapy():
    datagram = bytes(IP() / UDP(sport=68, dport=67) / Raw(b"hello"))[20:]
    header = parse(lan.UdpHeader, datagram)
    assert (header.sport, header.dport, header.length) == (68, 67, 13)
    assert header.checksum == UDP(datagram).chksum


def test_icmp_echo_and_frag_needed_fields_match_scapy():
    echo = parse(lan.Icmp, bytes(ICMP(type=8, id=0x42, seq=7) / Raw(b"ping")))
    assert (echo.rest.identifier, echo.rest.sequence, echo.data) == (0x42, 7, b"ping")
    quoted = bytes(IP(src="10.0.0.2", dst="10.0.0.9") / UDP())
    unreachable = parse(lan.Icmp, bytes(ICMP(type=3, code=4, nexthopmtu=1400) / quoted))
    assert (unreachable.code, unreachable.rest.next_hop_mtu, unreachable.data) == (4, 1400, quoted)
    built = build(lan.Icmp, dict(type=3, code=4, checksum=0, rest=dict(unused=0, next_hop_mtu=1280), data=b""))
    assert ICMP(built).nexthopmtu == 1280


# --- IPv6, ICMPv6, Neighbor Discovery -------------------------------------------------------


def test_ipv6_header_matches_scapy():
    header = parse(lan.IPv6Header, bytes(IPv6(src="fd00::2", dst="ff02::1", tc=0xB8, fl=0xABCDE, hlim=255)))
    assert (header.first_word.traffic_class, header.first_word.flow_label) == (0xB8, 0xABCDE)
    assert (header.hop_limit, header.next_header, header.payload_length) == (255, 59, 0)
    assert header.dst == bytes.fromhex("ff02" + "00" * 13 + "01")
    with pytest.raises(ParseError):
        parse(lan.IPv6Header, bytes(IP()) * 2)  # version 4


def test_a_router_advertisement_from_scapy_is_read_option_by_option():
    ra = (
        ICMPv6ND_RA(M=1, O=0, chlim=64, routerlifetime=1800, reachabletime=30000, retranstimer=1000)
        / ICMPv6NDOptSrcLLAddr(lladdr=MAC_A)
        / ICMPv6NDOptMTU(mtu=1400)
        / ICMPv6NDOptPrefixInfo(prefix="fd00:1::", prefixlen=64, L=1, A=0, validlifetime=9, preferredlifetime=8)
        / ICMPv6NDOptRDNSS(dns=["fd00::53", "fd00::54"], lifetime=600)
    )
    value = parse(lan.Icmp6, bytes(ra))
    body = value.body
    assert (value.type, body.cur_hop_limit, body.flags.managed, body.flags.other) == (134, 64, True, False)
    assert (body.router_lifetime, body.reachable_time, body.retrans_timer) == (1800, 30000, 1000)
    source, mtu, prefix, rdnss = body.options
    assert source.body == mac(MAC_A) and mtu.body.mtu == 1400
    assert prefix.body.flags.on_link and not prefix.body.flags.autonomous
    assert (prefix.body.prefix_length, prefix.body.valid_lifetime, prefix.body.preferred_lifetime) == (64, 9, 8)
    assert prefix.body.prefix == bytes.fromhex("fd000001" + "00" * 12)
    assert (rdnss.length, rdnss.body.lifetime) == (5, 600)
    dns = [bytes.fromhex("fd00" + "00" * 12 + last) for last in ("0053", "0054")]
    assert list(rdnss.body.servers) == dns
    assert build(lan.Icmp6, value) == bytes(ra)


def test_a_router_advertisement_built_by_the_schema_dissects_in_scapy():
    options = [
        dict(type=lan.OPT_MTU, length=1, body=dict(reserved=0, mtu=1420)),
        dict(type=lan.OPT_RDNSS, length=3, body=dict(reserved=0, lifetime=1800, servers=[bytes(15) + b"\1"])),
    ]
    body = dict(cur_hop_limit=64, flags=dict(managed=True, other=True, reserved=0), router_lifetime=0)
    body.update(reachable_time=0, retrans_timer=0, options=options)
    ra = ICMPv6ND_RA(build(lan.Icmp6, dict(type=134, code=0, checksum=0, body=body)))
    assert (ra.M, ra.O, ra.chlim, ra.routerlifetime) == (1, 1, 64, 0)
    assert ra[ICMPv6NDOptMTU].mtu == 1420
    assert ra[ICMPv6NDOptRDNSS].dns == ["::1"] and ra[ICMPv6NDOptRDNSS].lifetime == 1800


def test_neighbor_solicitation_and_advertisement_match_scapy():
    ns = parse(lan.Icmp6, bytes(ICMPv6ND_NS(tgt="fd00::9") / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B)))
    assert ns.body.target == bytes.fromhex("fd00" + "00" * 13 + "09")
    assert [(o.type, o.body) for o in ns.body.options] == [(lan.OPT_SOURCE_LL, mac(MAC_B))]
    na = parse(lan.Icmp6, bytes(ICMPv6ND_NA(R=1, S=0, O=1, tgt="fd00::9") / ICMPv6NDOptDstLLAddr(lladdr=MAC_A)))
    assert (na.body.flags.router, na.body.flags.solicited, na.body.flags.override) == (True, False, True)
    assert na.body.options[0].type == lan.OPT_TARGET_LL and na.body.options[0].body == mac(MAC_A)


def test_router_solicitation_and_echo_match_scapy():
    rs = parse(lan.Icmp6, bytes(ICMPv6ND_RS() / ICMPv6NDOptSrcLLAddr(lladdr=MAC_B)))
    assert rs.type == lan.ND_ROUTER_SOLICIT and rs.body.options[0].body == mac(MAC_B)
    echo = parse(lan.Icmp6, bytes(ICMPv6EchoRequest(id=3, seq=4, data=b"abc")))
    assert (echo.body.identifier, echo.body.sequence, echo.body.data) == (3, 4, b"abc")


def test_packet_too_big_names_the_mtu_and_carries_the_packet():
    quoted = bytes(IPv6(src="fd00::2", dst="fd00::9") / UDP() / Raw(bytes(100)))
    value = parse(lan.Icmp6, bytes(ICMPv6PacketTooBig(mtu=1400) / quoted))
    assert (value.type, value.body.mtu, value.body.packet) == (lan.ICMP6_PACKET_TOO_BIG, 1400, quoted)


def test_an_nd_option_of_length_zero_is_refused():
    # RFC 4861 4.6: nodes must discard a packet with a zero-length option
    with pytest.raises(ParseError):
        parse(lan.Icmp6, bytes(ICMPv6ND_NS(tgt="fd00::9")) + b"\x01\x00" + bytes(6))


def test_an_nd_option_running_past_the_message_is_refused():
    with pytest.raises(ParseError):
        parse(lan.Icmp6, bytes(ICMPv6ND_NS(tgt="fd00::9")) + b"\x01\x02" + bytes(6))


def test_unknown_nd_options_are_skipped_by_their_length():
    value = parse(lan.Icmp6, bytes(ICMPv6ND_RS()) + b"\x99\x02" + bytes(14) + bytes(ICMPv6NDOptSrcLLAddr(lladdr=MAC_B)))
    assert [o.type for o in value.body.options] == [0x99, lan.OPT_SOURCE_LL]


# --- bad bytes ------------------------------------------------------------------------------

SCHEMAS = [
    lan.EthernetHeader, lan.Arp, lan.ArpFrame, lan.IPv4Header, lan.UdpHeader, lan.Icmp, lan.IPv6Header,
    lan.NdpOption, lan.NdpOptions, lan.Icmp6,
]  # fmt: skip
VALID = [
    bytes(Ether() / ARP()),
    bytes(IP(options=[IPOption_Router_Alert()]) / UDP() / Raw(b"x")),
    bytes(ICMP(type=3, code=4, nexthopmtu=1400) / IP()),
    bytes(IPv6()),
    bytes(ICMPv6ND_RA() / ICMPv6NDOptSrcLLAddr() / ICMPv6NDOptPrefixInfo() / ICMPv6NDOptRDNSS(dns=["::1"])),
    bytes(ICMPv6ND_NS() / ICMPv6NDOptSrcLLAddr()),
    bytes(ICMPv6ND_NA() / ICMPv6NDOptDstLLAddr()),
    bytes(ICMPv6PacketTooBig() / IPv6()),
]


def only_parse_errors(data: bytes) -> None:
    for schema in SCHEMAS:
        with contextlib.suppress(ParseError):
            parse(schema, data)


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_parse_error(data):
    only_parse_errors(data)


@FUZZ
@given(
    valid=st.sampled_from(VALID),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), max_size=4),
    cut=st.integers(min_value=0),
)
def test_mutated_valid_messages_raise_only_parse_error(valid, flips, cut):
    mutated = bytearray(valid)
    for position, bit in flips:
        mutated[position % len(mutated)] ^= 1 << bit
    only_parse_errors(bytes(mutated[: cut % (len(mutated) + 1)]))
