"""The adapter answers address resolution for peers: ARP (RFC 826, RFC 5227)
and IPv6 Neighbor Discovery (RFC 4861), checked against scapy.

Requests come from scapy as a stock general node would send them; replies
are dissected by scapy with the checksums scapy computes. The struct-based
hot paths agree with the `cyphonic.wire.lan` schemas on every mutated frame,
and bad bytes only ever raise ParseError.
"""

from __future__ import annotations

import contextlib
from ipaddress import IPv6Address, IPv6Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyphonic.core import ndp
from cyphonic.core.arp import ArpResponder
from cyphonic.errors import ParseError
from cyphonic.wire import lan
from cyphonic.wire.common import build, parse
from tests.support.scapy import (
    ARP,
    FUZZ,
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
    IPv6,
    Raw,
    in6_mactoifaceid,
    mac,
)

GN_MAC, ADAPTER_MAC = "02:aa:bb:cc:dd:02", "02:00:00:00:00:01"
GN4, PEER4 = "10.64.0.2", "10.64.0.9"
GN_LL, GN6, PEER6 = "fe80::aa:bbff:fecc:dd02", "fd00:64::2", "fd00:64::9"


def ip4(text: str) -> bytes:
    return bytes(int(part) for part in text.split("."))


def peers_only(target: bytes, *_sender) -> bool:
    """The caller's rule: peers' virtual addresses yes, the general node's own never."""
    return target in (ip4(PEER4), IPv6Address(PEER6).packed)


def checksum_as_scapy_computes(frame: bytes, layer) -> bool:
    packet = Ether(frame)
    packet[layer].cksum = None
    return bytes(packet) == frame


# --- ARP ------------------------------------------------------------------------------------


def arp_request(psrc: str = GN4, pdst: str = PEER4, op: int = 1, hwsrc: str = GN_MAC, **arp) -> bytes:
    frame = Ether(src=hwsrc, dst="ff:ff:ff:ff:ff:ff") / ARP(op=op, hwsrc=hwsrc, psrc=psrc, pdst=pdst, **arp)
    return bytes(frame) + bytes(18)  # padded to the 60-byte minimum, as on the wire


def test_an_arp_request_for_a_peer_gets_the_adapter_s_mac_unicast_to_the_requester():
    responder = ArpResponder(mac(ADAPTER_MAC))
    reply = Ether(responder.answer(arp_request(), peers_only))
    assert (reply.dst, reply.src, reply[ARP].op) == (GN_MAC, ADAPTER_MAC, 2)
    assert (reply[ARP].hwsrc, reply[ARP].psrc) == (ADAPTER_MAC, PEER4)
    assert (reply[ARP].hwdst, reply[ARP].pdst) == (GN_MAC, GN4)


def test_a_conflict_probe_for_a_peer_address_is_answered_to_the_prober():
    # RFC 5227 2.1.1: a probe has sender IP 0.0.0.0; the reply must reach the prober's MAC
    reply = Ether(ArpResponder(mac(ADAPTER_MAC)).answer(arp_request(psrc="0.0.0.0"), peers_only))
    assert (reply.dst, reply[ARP].hwdst, reply[ARP].pdst) == (GN_MAC, GN_MAC, "0.0.0.0")
    assert (reply[ARP].hwsrc, reply[ARP].psrc) == (ADAPTER_MAC, PEER4)


def test_a_dad_probe_for_the_general_node_s_own_address_gets_silence():
    responder = ArpResponder(mac(ADAPTER_MAC))
    assert responder.answer(arp_request(psrc="0.0.0.0", pdst=GN4), peers_only) is None
    assert responder.answer(arp_request(pdst=GN4), peers_only) is None


def test_the_caller_is_asked_with_the_target_ip_and_the_requester_s_mac():
    asked = []
    ArpResponder(mac(ADAPTER_MAC)).answer(arp_request(), lambda *args: asked.append(args) or False)
    assert asked == [(ip4(PEER4), mac(GN_MAC))]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(arp_request(op=2), id="reply"),
        pytest.param(arp_request(psrc=PEER4, pdst=PEER4), id="gratuitous-announcement"),
        pytest.param(arp_request(op=3), id="rarp-request"),
        pytest.param(arp_request(hwsrc="01:00:5e:00:00:01"), id="from-a-group-mac"),
        pytest.param(arp_request(hwsrc=ADAPTER_MAC), id="from-ourselves"),
    ],
)
def test_what_is_not_somebody_asking_gets_no_arp_answer(frame):
    responder = ArpResponder(mac(ADAPTER_MAC))
    assert responder.answer(frame, lambda *_: True) is None
    assert (responder.processed, responder.answered) == (1, 0)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(arp_request(hwtype=6), id="not-ethernet"),
        pytest.param(arp_request(ptype=0x86DD), id="not-ipv4"),
        pytest.param(arp_request(hwlen=8), id="hardware-length"),
        pytest.param(arp_request(plen=16), id="protocol-length"),
        pytest.param(arp_request()[:41], id="truncated"),
        pytest.param(bytes(Ether(type=lan.ETH_P_IP) / ARP()), id="not-the-arp-ethertype"),
    ],
)
def test_malformed_arp_is_refused(frame):
    with pytest.raises(ParseError):
        ArpResponder(mac(ADAPTER_MAC)).answer(frame, lambda *_: True)


def test_the_responder_counts_what_it_processed_and_answered():
    responder = ArpResponder(mac(ADAPTER_MAC))
    for frame in (arp_request(), arp_request(pdst=GN4), arp_request(op=2), arp_request()):
        responder.answer(frame, peers_only)
    with contextlib.suppress(ParseError):
        responder.answer(b"short", peers_only)
    assert (responder.processed, responder.answered) == (4, 2)


def answer_by_the_schema(frame: bytes, answer_for) -> bytes | None:
    """What an ARP responder written with `wire.lan` alone answers (the oracle)."""
    arp = parse(lan.ArpFrame, frame).arp
    own = mac(ADAPTER_MAC)
    if arp.operation != lan.ARP_REQUEST or arp.sender_ip == arp.target_ip:
        return None
    if arp.sender_mac[0] & 1 or arp.sender_mac == own or not answer_for(arp.target_ip, arp.sender_mac):
        return None
    ethernet = build(lan.EthernetHeader, dict(dst=arp.sender_mac, src=own, ethertype=lan.ETH_P_ARP))
    body = dict(operation=lan.ARP_REPLY, sender_mac=own, sender_ip=arp.target_ip)
    return ethernet + build(lan.Arp, dict(body, target_mac=arp.sender_mac, target_ip=arp.sender_ip))


def outcome(call):
    try:
        return call()
    except ParseError:
        return ParseError


@FUZZ
@given(
    base=st.sampled_from([arp_request(), arp_request(psrc="0.0.0.0"), arp_request(op=2)]),
    flips=st.lists(st.tuples(st.integers(0, 41), st.integers(0, 7)), max_size=3),
    cut=st.integers(min_value=0, max_value=60),
    accept=st.booleans(),
)
def test_the_responder_and_the_wire_schema_agree_on_every_frame(base, flips, cut, accept):
    frame = bytearray(base)
    for position, bit in flips:
        frame[position] ^= 1 << bit
    frame = bytes(frame[:cut])
    expected = outcome(lambda: answer_by_the_schema(frame, lambda *_: accept))
    assert outcome(lambda: ArpResponder(mac(ADAPTER_MAC)).answer(frame, lambda *_: accept)) == expected


@FUZZ
@given(data=st.binary(max_size=80))
def test_random_bytes_to_the_arp_responder_raise_only_parse_error(data):
    for frame in (data, bytes(12) + b"\x08\x06" + data, arp_request()[:14] + data):
        with contextlib.suppress(ParseError):
            ArpResponder(mac(ADAPTER_MAC)).answer(frame, lambda *_: True)


# --- Neighbor Discovery ---------------------------------------------------------------------


def solicited_node(address: str) -> str:
    return str(IPv6Address("ff02::1:ff00:0") + (int(IPv6Address(address)) & 0xFFFFFF))


def neighbor_solicitation(target: str = PEER6, src: str = GN_LL, hlim: int = 255, options=None, **ns) -> bytes:
    dst = solicited_node(target)
    options = [ICMPv6NDOptSrcLLAddr(lladdr=GN_MAC)] if options is None else options
    packet = (
        Ether(src=GN_MAC, dst="33:33:ff:00:00:09") / IPv6(src=src, dst=dst, hlim=hlim) / ICMPv6ND_NS(tgt=target, **ns)
    )
    for option in options:
        packet = packet / option
    return bytes(packet)


def test_link_local_is_the_modified_eui_64_of_the_mac():
    for text in (ADAPTER_MAC, GN_MAC, "00:1b:21:0a:0b:0c", "ff:ff:ff:ff:ff:ff"):
        assert ndp.link_local(mac(text)) == IPv6Address("fe80::" + in6_mactoifaceid(text))


def test_a_router_advertisement_sends_general_nodes_to_dhcpv6_and_names_mtu_and_dns():
    frame = ndp.router_advertisement(mac(ADAPTER_MAC), IPv6Network("fd00:64::/64"), 1420, IPv6Address("fd00:64::1"))
    packet = Ether(frame)
    assert (packet.src, packet.dst) == (ADAPTER_MAC, "33:33:00:00:00:01")
    ip, ra = packet[IPv6], packet[ICMPv6ND_RA]
    assert (ip.src, ip.dst, ip.hlim) == (str(ndp.link_local(mac(ADAPTER_MAC))), "ff02::1", 255)
    assert (ra.M, ra.O, ra.chlim, ra.routerlifetime) == (1, 1, 64, 1800)
    assert packet[ICMPv6NDOptSrcLLAddr].lladdr == ADAPTER_MAC
    assert packet[ICMPv6NDOptMTU].mtu == 1420
    prefix = packet[ICMPv6NDOptPrefixInfo]
    assert (prefix.prefix, prefix.prefixlen, prefix.L, prefix.A) == ("fd00:64::", 64, 1, 0)  # on-link, no SLAAC
    assert prefix.validlifetime >= prefix.preferredlifetime > 0
    assert packet[ICMPv6NDOptRDNSS].dns == ["fd00:64::1"] and packet[ICMPv6NDOptRDNSS].lifetime >= 1800
    assert checksum_as_scapy_computes(frame, ICMPv6ND_RA)


def test_a_router_advertisement_without_dns_has_no_rdnss_and_can_be_unicast():
    frame = ndp.router_advertisement(
        mac(ADAPTER_MAC), IPv6Network("fd00:64::/64"), 1280, None, mac(GN_MAC), IPv6Address(GN_LL), 0
    )
    packet = Ether(frame)
    assert (packet.dst, packet[IPv6].dst, packet[ICMPv6ND_RA].routerlifetime) == (GN_MAC, GN_LL, 0)
    assert ICMPv6NDOptRDNSS not in packet and checksum_as_scapy_computes(frame, ICMPv6ND_RA)


def test_a_neighbor_solicitation_for_a_peer_gets_a_solicited_advert_with_the_adapter_s_mac():
    proxy = ndp.NeighborProxy(mac(ADAPTER_MAC))
    frame = proxy.answer(neighbor_solicitation(), peers_only)
    packet = Ether(frame)
    assert (packet.src, packet.dst, packet[IPv6].dst, packet[IPv6].hlim) == (ADAPTER_MAC, GN_MAC, GN_LL, 255)
    na = packet[ICMPv6ND_NA]
    assert (na.tgt, na.R, na.S, na.O) == (PEER6, 1, 1, 1)
    assert packet[ICMPv6NDOptDstLLAddr].lladdr == ADAPTER_MAC
    assert checksum_as_scapy_computes(frame, ICMPv6ND_NA)
    assert (proxy.processed, proxy.answered) == (1, 1)


def test_without_a_source_link_layer_option_the_advert_goes_to_the_frame_s_sender():
    packet = Ether(ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(neighbor_solicitation(options=[]), peers_only))
    assert (packet.dst, packet[IPv6].dst, packet[ICMPv6ND_NA].S) == (GN_MAC, GN_LL, 1)


def test_a_dad_probe_for_a_peer_address_is_defended_to_all_nodes():
    frame = ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(neighbor_solicitation(src="::", options=[]), peers_only)
    packet = Ether(frame)
    assert (packet.dst, packet[IPv6].dst) == ("33:33:00:00:00:01", "ff02::1")
    assert (packet[ICMPv6ND_NA].S, packet[ICMPv6ND_NA].O, packet[ICMPv6ND_NA].tgt) == (0, 1, PEER6)
    assert checksum_as_scapy_computes(frame, ICMPv6ND_NA)


def test_a_dad_probe_for_the_general_node_s_own_ipv6_address_gets_silence():
    proxy = ndp.NeighborProxy(mac(ADAPTER_MAC))
    assert proxy.answer(neighbor_solicitation(target=GN6, src="::", options=[]), peers_only) is None
    assert proxy.answer(neighbor_solicitation(target=GN_LL, src="::", options=[]), peers_only) is None
    assert (proxy.processed, proxy.answered) == (2, 0)


def test_the_adapter_s_own_link_local_is_always_answered():
    # the general nodes' default router: they must resolve it whatever the caller's rule
    own = str(ndp.link_local(mac(ADAPTER_MAC)))
    packet = Ether(ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(neighbor_solicitation(target=own), lambda _: False))
    assert packet[ICMPv6ND_NA].tgt == own and packet[ICMPv6NDOptDstLLAddr].lladdr == ADAPTER_MAC


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(neighbor_solicitation(hlim=64), id="routed-not-on-link"),
        pytest.param(neighbor_solicitation(cksum=0x1234), id="bad-checksum"),
        pytest.param(neighbor_solicitation(code=1), id="nonzero-code"),
        pytest.param(neighbor_solicitation(target="ff02::1"), id="multicast-target"),
        pytest.param(neighbor_solicitation(src="::"), id="dad-with-source-link-layer-option"),
        pytest.param(
            bytes(Ether() / IPv6(src="::", dst=PEER6) / ICMPv6ND_NS(tgt=PEER6)), id="dad-not-to-solicited-node"
        ),
        pytest.param(neighbor_solicitation(options=[Raw(b"\x01\x00" + bytes(6))]), id="zero-length-option"),
        pytest.param(neighbor_solicitation(options=[Raw(b"\x01\x01" + bytes(2))]), id="option-past-the-end"),
        pytest.param(neighbor_solicitation(options=[Raw(b"\x03\x01" + bytes(6))]), id="short-prefix-option"),
        pytest.param(neighbor_solicitation()[:70], id="truncated"),
        pytest.param(bytes(Ether() / ARP()), id="not-ipv6"),
    ],
)
def test_invalid_neighbor_solicitations_are_refused(frame):
    with pytest.raises(ParseError):
        ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(frame, lambda _: True)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(bytes(Ether() / IPv6(src=GN_LL, dst="ff02::2") / ICMPv6ND_RS()), id="router-solicitation"),
        pytest.param(bytes(Ether() / IPv6(src=GN_LL) / ICMPv6ND_NA(tgt=GN6)), id="neighbor-advertisement"),
        pytest.param(bytes(Ether() / IPv6(src=GN6, dst=PEER6) / ICMPv6EchoRequest()), id="echo"),
        pytest.param(bytes(Ether() / IPv6(src=GN6, dst=PEER6, nh=17) / Raw(bytes(30))), id="udp"),
    ],
)
def test_other_ipv6_traffic_gets_no_neighbor_answer(frame):
    assert ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(frame, lambda _: True) is None


def router_solicitation(src: str = GN_LL, hlim: int = 255, options=(), **rs) -> bytes:
    packet = Ether(src=GN_MAC, dst="33:33:00:00:00:02") / IPv6(src=src, dst="ff02::2", hlim=hlim) / ICMPv6ND_RS(**rs)
    for option in options:
        packet = packet / option
    return bytes(packet)


def test_router_solicitations_are_recognised():
    assert ndp.is_router_solicitation(router_solicitation())
    assert ndp.is_router_solicitation(router_solicitation(options=[ICMPv6NDOptSrcLLAddr(lladdr=GN_MAC)]))
    assert ndp.is_router_solicitation(router_solicitation(src="::") + bytes(20))  # padding ignored


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(router_solicitation(hlim=64), id="routed-not-on-link"),
        pytest.param(router_solicitation(cksum=0x1234), id="bad-checksum"),
        pytest.param(router_solicitation(code=3), id="nonzero-code"),
        pytest.param(router_solicitation(src="::", options=[ICMPv6NDOptSrcLLAddr()]), id="unspecified-with-sllao"),
        pytest.param(router_solicitation(options=[Raw(b"\x01\x00" + bytes(6))]), id="zero-length-option"),
        pytest.param(neighbor_solicitation(), id="neighbor-solicitation"),
        pytest.param(arp_request(), id="arp"),
        pytest.param(b"", id="empty"),
    ],
)
def test_what_is_not_a_valid_router_solicitation_is_not_one(frame):
    assert ndp.is_router_solicitation(frame) is False


def test_the_neighbor_advertisement_reads_back_through_the_wire_schema():
    frame = ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(neighbor_solicitation(), peers_only)
    message = parse(lan.Icmp6, frame[14 + 40 :])
    assert message.type == lan.ND_NEIGHBOR_ADVERT and message.body.target == IPv6Address(PEER6).packed
    flags = message.body.flags
    assert (flags.router, flags.solicited, flags.override, flags.reserved) == (True, True, True, 0)
    assert [(o.type, o.body) for o in message.body.options] == [(lan.OPT_TARGET_LL, mac(ADAPTER_MAC))]


def nd_option(kind: int, units: int, fill: bytes) -> bytes:
    return bytes([kind, units]) + fill * (units * 8 - 2)


ND_OPTION = st.one_of(
    st.binary(max_size=40),
    st.builds(nd_option, st.integers(0, 30), st.integers(0, 5), st.binary(min_size=1, max_size=1)),
)


@FUZZ
@given(options=st.lists(ND_OPTION, max_size=4), dad=st.booleans())
def test_the_fast_option_walk_and_the_wire_schema_agree(options, dad):
    source, raw = ("::" if dad else GN_LL), b"".join(options)
    extra = [Raw(raw)] if raw else []
    checks = [
        (
            neighbor_solicitation(src=source, options=extra),
            lambda f: ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(f, peers_only) is not None,
        ),
        (router_solicitation(src=source, options=extra), ndp.is_router_solicitation),
    ]
    for frame, accepted in checks:
        message = outcome(lambda f=frame: parse(lan.Icmp6, f[14 + 40 :]))
        valid = message is not ParseError and not (
            dad and any(o.type == lan.OPT_SOURCE_LL for o in message.body.options)  # RFC 4861 6.1.1, 7.1.1
        )
        assert (outcome(lambda f=frame, a=accepted: a(f)) is True) == valid


VALID_ND = [
    neighbor_solicitation(),
    neighbor_solicitation(src="::", options=[]),
    router_solicitation(options=[ICMPv6NDOptSrcLLAddr(lladdr=GN_MAC)]),
]


@FUZZ
@given(
    valid=st.sampled_from(VALID_ND),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), max_size=4),
    cut=st.integers(min_value=0),
)
def test_mutated_nd_frames_raise_only_parse_error(valid, flips, cut):
    mutated = bytearray(valid)
    for position, bit in flips:
        mutated[position % len(mutated)] ^= 1 << bit
    frame = bytes(mutated[: cut % (len(mutated) + 1)])
    assert ndp.is_router_solicitation(frame) in (True, False)
    with contextlib.suppress(ParseError):
        ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(frame, lambda _: True)


@FUZZ
@given(data=st.binary(max_size=120))
def test_random_bytes_to_neighbor_discovery_raise_only_parse_error(data):
    for frame in (data, bytes(12) + b"\x86\xdd" + data, neighbor_solicitation()[:54] + data):
        assert ndp.is_router_solicitation(frame) in (True, False)
        with contextlib.suppress(ParseError):
            ndp.NeighborProxy(mac(ADAPTER_MAC)).answer(frame, lambda _: True)
