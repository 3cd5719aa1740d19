"""cyphonic.core.frames against scapy: what the adapter reads from and writes to the LAN.

Frames a general node would send are built with scapy and read with ours;
frames we build are dissected by scapy, and their checksums must be the ones
scapy computes itself. Random and mutated frames only ever raise ParseError,
and MSS clamping never raises at all.
"""

from __future__ import annotations

import contextlib
import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cyphonic.core import frames
from cyphonic.errors import ParseError
from cyphonic.wire import lan
from cyphonic.wire.common import parse
from tests.support.checksum import l4_checksum_ok
from tests.support.scapy import (
    FUZZ,
    ICMP,
    IP,
    TCP,
    UDP,
    Dot1Q,
    Ether,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NS,
    ICMPv6PacketTooBig,
    IPerror,
    IPv6,
    IPv6ExtHdrHopByHop,
    Raw,
    mac,
)

GN_MAC, ADAPTER_MAC = "02:aa:bb:cc:dd:02", "02:00:00:00:00:01"
GN4, ADAPTER4, PEER4 = "10.64.0.2", "10.64.0.1", "10.64.0.9"
GN6, ADAPTER6, PEER6 = "fd00:64::2", "fd00:64::1", "fd00:64::9"


def from_gn(*layers, v6: bool = False) -> bytes:
    """A frame a general node sends to the adapter."""
    ip = IPv6(src=GN6, dst=ADAPTER6) if v6 else IP(src=GN4, dst=ADAPTER4)
    packet = Ether(src=GN_MAC, dst=ADAPTER_MAC) / ip
    for layer in layers:
        packet = packet / layer
    return bytes(packet)


def checksums_as_scapy_computes(frame: bytes, *layers) -> bytes:
    """`frame` rebuilt by scapy with the checksums of `layers` recomputed."""
    packet = Ether(frame)
    for layer in layers:
        header = packet[layer]
        setattr(header, "cksum" if "cksum" in header.fields else "chksum", None)
    return bytes(packet)


def patched(frame: bytes, offset: int, value: bytes) -> bytes:
    out = bytearray(frame)
    out[offset : offset + len(value)] = value
    return bytes(out)


# --- reading UDP ----------------------------------------------------------------------------


def test_a_dns_query_over_ipv4_is_read_with_its_addresses_and_ports():
    datagram = frames.parse_udp(from_gn(UDP(sport=40000, dport=53) / Raw(b"query")))
    assert (datagram.src_mac, datagram.dst_mac) == (mac(GN_MAC), mac(ADAPTER_MAC))
    assert (datagram.src_ip, datagram.dst_ip) == (IPv4Address(GN4), IPv4Address(ADAPTER4))
    assert (datagram.sport, datagram.dport, datagram.payload, datagram.version) == (40000, 53, b"query", 4)


def test_a_dns_query_over_ipv6_is_read_with_its_addresses_and_ports():
    datagram = frames.parse_udp(from_gn(UDP(sport=40000, dport=53) / Raw(b"query6"), v6=True))
    assert (datagram.src_ip, datagram.dst_ip) == (IPv6Address(GN6), IPv6Address(ADAPTER6))
    assert (datagram.payload, datagram.version) == (b"query6", 6)


def test_a_dhcp_discover_from_nowhere_to_everyone_is_read():
    frame = bytes(
        Ether(src=GN_MAC, dst="ff:ff:ff:ff:ff:ff")
        / IP(src="0.0.0.0", dst="255.255.255.255")
        / UDP(sport=68, dport=67)
        / Raw(bytes(300))
    )
    datagram = frames.parse_udp(frame)
    assert (str(datagram.src_ip), str(datagram.dst_ip), datagram.dport) == ("0.0.0.0", "255.255.255.255", 67)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_ethernet_padding_after_the_packet_is_ignored(v6):
    frame = from_gn(UDP(dport=53) / Raw(b"x"), v6=v6)
    assert frames.parse_udp(frame + bytes(30)).payload == b"x"


def test_a_zero_udp_checksum_over_ipv4_means_none_was_sent():
    frame = from_gn(UDP(dport=53, chksum=0) / Raw(b"query"))
    assert frames.parse_udp(frame).payload == b"query"


def test_a_zero_udp_checksum_over_ipv6_is_refused():
    with pytest.raises(ParseError, match="zero UDP checksum"):
        frames.parse_udp(from_gn(UDP(dport=53, chksum=0) / Raw(b"query"), v6=True))


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_bad_udp_checksum_is_refused_unless_the_kernel_left_it_partial(v6):
    frame = from_gn(UDP(dport=53, chksum=0x1234) / Raw(b"query"), v6=v6)
    with pytest.raises(ParseError, match="UDP checksum"):
        frames.parse_udp(frame)
    assert frames.parse_udp(frame, verify_checksum=False).payload == b"query"


def test_a_bad_ipv4_header_checksum_is_refused():
    with pytest.raises(ParseError, match="header checksum"):
        frames.parse_udp(bytes(Ether() / IP(chksum=0xBEEF) / UDP()))


@pytest.mark.parametrize("fragment", [dict(flags="MF"), dict(frag=10)], ids=["first", "later"])
def test_ipv4_fragments_are_refused(fragment):
    frame = bytes(Ether() / IP(src=GN4, dst=ADAPTER4, **fragment) / UDP(dport=53) / Raw(b"q"))
    with pytest.raises(ParseError, match="fragment"):
        frames.parse_udp(frame)


V4_UDP = from_gn(UDP(dport=53) / Raw(b"query"))
V6_UDP = from_gn(UDP(dport=53) / Raw(b"query"), v6=True)


def v4_with(**fields) -> bytes:
    return bytes(Ether() / IP(src=GN4, dst=ADAPTER4, **fields) / UDP(dport=53) / Raw(b"query"))


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(V4_UDP[:13], id="shorter-than-ethernet"),
        pytest.param(V4_UDP[:30], id="truncated-ipv4-header"),
        pytest.param(V4_UDP[:-1], id="ip-total-length-beyond-frame"),
        pytest.param(v4_with(len=20 + 7), id="ip-total-length-cuts-udp-header"),
        pytest.param(v4_with(ihl=4), id="ihl-below-five"),
        pytest.param(v4_with(ihl=15), id="ihl-beyond-total-length"),
        pytest.param(patched(V4_UDP, 14 + 20 + 4, b"\x00\x07"), id="udp-length-below-8"),
        pytest.param(patched(V4_UDP, 14 + 20 + 4, b"\x00\x20"), id="udp-length-beyond-ip"),
        pytest.param(V6_UDP[:-1], id="ipv6-payload-length-beyond-frame"),
        pytest.param(patched(V6_UDP, 14 + 4, b"\x00\x00"), id="ipv6-jumbogram"),
        pytest.param(patched(V6_UDP, 14 + 40 + 4, b"\x00\x40"), id="ipv6-udp-length-beyond-ip"),
    ],
)
def test_lengths_that_do_not_add_up_are_refused(frame):
    with pytest.raises(ParseError):
        frames.parse_udp(frame, verify_checksum=False)


def test_a_udp_length_shorter_than_the_ip_payload_keeps_only_the_udp_data():
    frame = v4_with()
    frame = patched(frame, 14 + 20 + 4, struct.pack("!HH", 8 + 3, 0))  # 3 bytes, no checksum
    assert frames.parse_udp(frame).payload == b"que"


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(bytes(Ether() / Dot1Q(vlan=5) / IP() / UDP()), id="vlan-tagged"),
        pytest.param(bytes(Ether(type=0x88B5) / Raw(bytes(60))), id="other-ethertype"),
        pytest.param(from_gn(TCP()), id="tcp"),
        pytest.param(from_gn(IPv6ExtHdrHopByHop() / UDP(), v6=True), id="ipv6-extension-header"),
        pytest.param(bytes(Ether(type=lan.ETH_P_IP) / IPv6() / UDP()), id="ipv6-under-ipv4-ethertype"),
    ],
)
def test_frames_that_are_not_plain_udp_are_refused(frame):
    with pytest.raises(ParseError):
        frames.parse_udp(frame)


# --- building UDP ---------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 2, 333, 1400])
@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_reply_datagram_dissects_in_scapy_with_the_checksums_scapy_computes(v6, size):
    src, dst = (ADAPTER6, GN6) if v6 else (ADAPTER4, GN4)
    payload = bytes(range(256)) * 6
    frame = frames.udp_frame(mac(ADAPTER_MAC), mac(GN_MAC), ip_address(src), ip_address(dst), 53, 40000, payload[:size])
    packet = Ether(frame)
    ip = packet[IPv6] if v6 else packet[IP]
    assert (packet.src, packet.dst, ip.src, ip.dst) == (ADAPTER_MAC, GN_MAC, src, dst)
    assert (packet[UDP].sport, packet[UDP].dport, bytes(packet[UDP].payload)) == (53, 40000, payload[:size])
    assert (ip.hlim if v6 else ip.ttl) == 64
    assert checksums_as_scapy_computes(frame, IPv6 if v6 else IP, UDP) == frame
    assert parse(lan.IPv6Header if v6 else lan.IPv4Header, frame[14:]).src == ip_address(src).packed
    udp = parse(lan.UdpHeader, frame[14 + (40 if v6 else 20) :][:8])
    assert (udp.sport, udp.dport, udp.length) == (53, 40000, 8 + size)


@FUZZ
@given(
    v6=st.booleans(),
    data=st.data(),
    ports=st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
    payload=st.binary(max_size=1500),
)
def test_what_udp_frame_builds_parse_udp_reads_back(v6, data, ports, payload):
    src, dst = data.draw(st.ip_addresses(v=6 if v6 else 4)), data.draw(st.ip_addresses(v=6 if v6 else 4))
    frame = frames.udp_frame(mac(ADAPTER_MAC), mac(GN_MAC), src, dst, *ports, payload)
    datagram = frames.parse_udp(frame)
    assert (datagram.src_ip, datagram.dst_ip, (datagram.sport, datagram.dport), datagram.payload) == (
        src,
        dst,
        ports,
        payload,
    )


def test_an_ipv6_udp_checksum_that_computes_to_zero_is_sent_as_ffff():
    build = lambda payload: frames.udp_frame(  # noqa: E731
        mac(ADAPTER_MAC), mac(GN_MAC), IPv6Address(ADAPTER6), IPv6Address(GN6), 53, 40000, payload
    )
    field = 14 + 40 + 6
    zero_making = build(b"\0\0")[field : field + 2]  # this word makes the sum come out as zero
    frame = build(zero_making)
    assert frame[field : field + 2] == b"\xff\xff"
    assert l4_checksum_ok(frame[14:]) and frames.parse_udp(frame).payload == zero_making


def test_a_datagram_between_ip_versions_cannot_be_built():
    with pytest.raises(ValueError):
        frames.udp_frame(mac(ADAPTER_MAC), mac(GN_MAC), IPv4Address(ADAPTER4), IPv6Address(GN6), 53, 53, b"")


# --- path MTU: ICMP errors ------------------------------------------------------------------


def test_frag_needed_quotes_the_header_and_names_the_mtu():
    big = bytes(IP(src=GN4, dst=PEER4, flags="DF") / UDP(sport=5000, dport=6000) / Raw(bytes(1472)))
    frame = frames.icmp_frag_needed(mac(ADAPTER_MAC), mac(GN_MAC), IPv4Address(ADAPTER4), big, 1400)
    packet = Ether(frame)
    assert (packet.src, packet.dst, packet[IP].src, packet[IP].dst) == (ADAPTER_MAC, GN_MAC, ADAPTER4, GN4)
    assert (packet[ICMP].type, packet[ICMP].code, packet[ICMP].nexthopmtu) == (3, 4, 1400)
    quoted = packet[IPerror]
    assert (quoted.src, quoted.dst, quoted.len, quoted.proto) == (GN4, PEER4, 1500, 17)
    assert bytes(packet[ICMP].payload).startswith(big[:28])  # the IP header and the ports (RFC 1191)
    assert checksums_as_scapy_computes(frame, IP, ICMP) == frame


def test_frag_needed_about_a_big_packet_stays_within_576_bytes():
    big = bytes(IP(src=GN4, dst=PEER4, flags="DF") / UDP() / Raw(bytes(9000)))
    frame = frames.icmp_frag_needed(mac(ADAPTER_MAC), mac(GN_MAC), IPv4Address(ADAPTER4), big, 1400)
    assert len(frame) - 14 == Ether(frame)[IP].len == 576  # RFC 1812 4.3.2.3: as much as fits in 576
    assert frame[14 + 28 :] == big[: 576 - 28]


def test_frag_needed_about_a_small_packet_quotes_all_of_it():
    small = bytes(IP(src=GN4, dst=PEER4, options=[]) / UDP() / Raw(b"abc"))
    frame = frames.icmp_frag_needed(mac(ADAPTER_MAC), mac(GN_MAC), IPv4Address(ADAPTER4), small, 68)
    assert frame[14 + 28 :] == small and Ether(frame)[ICMP].nexthopmtu == 68


def test_packet_too_big_quotes_as_much_as_fits_in_1280_and_names_the_mtu():
    big = bytes(IPv6(src=GN6, dst=PEER6) / UDP() / Raw(bytes(3000)))
    frame = frames.icmp6_packet_too_big(mac(ADAPTER_MAC), mac(GN_MAC), IPv6Address(ADAPTER6), big, 1420)
    packet = Ether(frame)
    assert (packet[IPv6].src, packet[IPv6].dst, packet[IPv6].plen + 40) == (ADAPTER6, GN6, 1280)
    assert (packet[ICMPv6PacketTooBig].mtu, frame[14 + 48 :]) == (1420, big[: 1280 - 48])
    assert checksums_as_scapy_computes(frame, ICMPv6PacketTooBig) == frame


def test_icmp_errors_about_what_is_not_an_ip_packet_are_refused():
    with pytest.raises(ParseError):
        frames.icmp_frag_needed(mac(ADAPTER_MAC), mac(GN_MAC), IPv4Address(ADAPTER4), bytes(IPv6()), 1400)
    with pytest.raises(ParseError):
        frames.icmp6_packet_too_big(mac(ADAPTER_MAC), mac(GN_MAC), IPv6Address(ADAPTER6), bytes(IP()), 1400)


# --- ping -----------------------------------------------------------------------------------


def test_a_ping_over_ipv4_gets_its_echo_back():
    request = from_gn(ICMP(type=8, id=0x77, seq=3) / Raw(b"abcdefgh" * 7))
    reply = Ether(frames.echo_reply(request + bytes(4), mac(ADAPTER_MAC)))
    assert (reply.src, reply.dst, reply[IP].src, reply[IP].dst) == (ADAPTER_MAC, GN_MAC, ADAPTER4, GN4)
    assert (reply[ICMP].type, reply[ICMP].id, reply[ICMP].seq) == (0, 0x77, 3)
    assert bytes(reply[ICMP].payload) == b"abcdefgh" * 7
    assert checksums_as_scapy_computes(bytes(reply), IP, ICMP) == bytes(reply)


def test_a_ping_over_ipv6_gets_its_echo_back():
    request = from_gn(ICMPv6EchoRequest(id=0x77, seq=3, data=b"x" * 33), v6=True)
    reply = Ether(frames.echo_reply(request, mac(ADAPTER_MAC)))
    assert (reply.src, reply.dst, reply[IPv6].src, reply[IPv6].dst) == (ADAPTER_MAC, GN_MAC, ADAPTER6, GN6)
    echo = reply[ICMPv6EchoReply]
    assert (echo.id, echo.seq, echo.data) == (0x77, 3, b"x" * 33)
    assert checksums_as_scapy_computes(bytes(reply), ICMPv6EchoReply) == bytes(reply)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(from_gn(ICMP(type=0)), id="echo-reply"),
        pytest.param(from_gn(ICMP(type=3, code=1) / IP()), id="unreachable"),
        pytest.param(from_gn(UDP()), id="udp"),
        pytest.param(from_gn(ICMPv6ND_NS(tgt=ADAPTER6), v6=True), id="neighbor-solicitation"),
        pytest.param(from_gn(ICMPv6EchoReply(), v6=True), id="echo-reply-v6"),
        pytest.param(bytes(Ether() / IP(src=GN4, dst="224.0.0.1") / ICMP()), id="ping-to-a-group"),
        pytest.param(bytes(Ether() / IP(src=GN4, dst="255.255.255.255") / ICMP()), id="ping-to-broadcast"),
        pytest.param(bytes(Ether() / IPv6(src=GN6, dst="ff02::1") / ICMPv6EchoRequest()), id="ping-to-all-nodes"),
        pytest.param(bytes(Ether() / IP(src=GN4, dst=ADAPTER4, flags="MF") / ICMP()), id="fragment"),
    ],
)
def test_what_is_not_a_ping_to_us_gets_no_echo(frame):
    assert frames.echo_reply(frame, mac(ADAPTER_MAC)) is None


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_a_ping_with_a_bad_checksum_is_refused(v6):
    request = from_gn(ICMPv6EchoRequest(cksum=0x1234) if v6 else ICMP(type=8, chksum=0x1234), v6=v6)
    with pytest.raises(ParseError, match="checksum"):
        frames.echo_reply(request, mac(ADAPTER_MAC))


# --- MSS clamping ---------------------------------------------------------------------------

LINUX_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]


def syn(v6: bool = False, flags: str = "S", options=LINUX_SYN_OPTIONS, payload: bytes = b"") -> bytearray:
    ip = IPv6(src=GN6, dst=PEER6) if v6 else IP(src=GN4, dst=PEER4)
    return bytearray(bytes(ip / TCP(sport=40000, dport=443, flags=flags, options=options) / Raw(payload)))


def mss_of(packet: bytes, v6: bool) -> int:
    return dict((IPv6(packet) if v6 else IP(packet))[TCP].options)["MSS"]


def tcp_checksum_is_scapy_s(packet: bytes, v6: bool) -> bool:
    parsed = IPv6(packet) if v6 else IP(packet)
    parsed[TCP].chksum = None
    return bytes(parsed) == packet


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_mss_of_a_syn_is_clamped_and_the_checksum_stays_valid(v6):
    packet = syn(v6)
    assert frames.clamp_mss(packet, 1360, partial=False)
    assert mss_of(packet, v6) == 1360 and tcp_checksum_is_scapy_s(bytes(packet), v6)


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
def test_an_mss_at_an_odd_offset_is_clamped_with_a_valid_checksum(v6):
    packet = syn(v6, options=[("NOP", None), ("MSS", 9000), ("NOP", None), ("NOP", None), ("NOP", None)])
    assert frames.clamp_mss(packet, 1380, partial=False)
    assert mss_of(packet, v6) == 1380 and tcp_checksum_is_scapy_s(bytes(packet), v6)


def test_the_syn_ack_of_a_server_behind_the_adapter_is_clamped_too():
    packet = syn(flags="SA", payload=b"data")
    assert frames.clamp_mss(packet, 1200, partial=False)
    assert mss_of(packet, False) == 1200 and tcp_checksum_is_scapy_s(bytes(packet), False)


def test_a_partial_checksum_is_left_for_the_kernel_to_finish():
    packet = syn()
    packet[20 + 16 : 20 + 18] = b"\x12\x34"  # the pseudo-header sum the kernel left
    assert frames.clamp_mss(packet, 1360, partial=True)
    assert mss_of(packet, False) == 1360 and packet[36:38] == b"\x12\x34"


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(syn(options=[("MSS", 1200)]), id="mss-already-small"),
        pytest.param(syn(flags="A"), id="not-a-syn"),
        pytest.param(syn(options=[("WScale", 7)]), id="no-mss-option"),
        pytest.param(syn(options=[("EOL", None), ("MSS", 1460)]), id="mss-after-end-of-options"),
        pytest.param(bytearray(bytes(IP() / UDP() / Raw(bytes(30)))), id="udp"),
        pytest.param(bytearray(bytes(IP(frag=3, proto=6) / Raw(bytes(40)))), id="later-fragment"),
        pytest.param(syn()[:40], id="options-cut-off"),
        pytest.param(syn()[:43], id="mss-option-cut-off"),
    ],
)
def test_what_is_not_a_syn_with_a_larger_mss_is_left_alone(packet):
    before = bytes(packet)
    assert not frames.clamp_mss(packet, 1360, partial=False)
    assert bytes(packet) == before


TCP_OPTION = st.one_of(
    st.just(b"\x01"),  # no-operation
    st.integers(0, 65535).map(lambda mss: b"\x02\x04" + mss.to_bytes(2, "big")),
    st.binary(max_size=10),  # anything, including end of list and bad lengths
)


@FUZZ
@given(v6=st.booleans(), parts=st.lists(TCP_OPTION, max_size=8), mss=st.integers(0, 65535))
def test_any_syn_options_are_clamped_with_the_checksum_still_valid(v6, parts, mss):
    options = b"".join(parts)[:40]
    options += bytes(-len(options) % 4)
    ip = IPv6(src=GN6, dst=PEER6) if v6 else IP(src=GN4, dst=PEER4)
    # raw option bytes as the segment's "payload": scapy's checksum covers them all the same
    packet = bytearray(bytes(ip / TCP(flags="S", dataofs=5 + len(options) // 4) / Raw(options)))
    before = bytes(packet)
    changed = frames.clamp_mss(packet, mss, partial=False)
    assert l4_checksum_ok(packet)
    differing = [i for i in range(len(packet)) if packet[i] != before[i]]
    assert bool(differing) == changed and len(differing) <= 4  # the MSS value and the checksum


@FUZZ
@given(data=st.binary(max_size=120), mss=st.integers(0, 65535), partial=st.booleans())
def test_clamp_mss_never_raises_on_any_bytes(data, mss, partial):
    frames.clamp_mss(bytearray(data), mss, partial)
    for first in (0x45, 0x46, 0x4F, 0x60):  # get past the version check
        frames.clamp_mss(bytearray(bytes([first]) + data), mss, partial)


@FUZZ
@given(
    v6=st.booleans(),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), max_size=4),
    cut=st.integers(min_value=0),
)
def test_clamp_mss_never_raises_on_mutated_syns(v6, flips, cut):
    packet = syn(v6)
    for position, bit in flips:
        packet[position % len(packet)] ^= 1 << bit
    frames.clamp_mss(packet[: cut % (len(packet) + 1)], 536, partial=False)


# --- bad bytes ------------------------------------------------------------------------------

VALID = [
    V4_UDP,
    V6_UDP,
    from_gn(ICMP(type=8) / Raw(b"ping")),
    from_gn(ICMPv6EchoRequest(data=b"ping"), v6=True),
]


def only_parse_errors(frame: bytes) -> None:
    adapter, gn = mac(ADAPTER_MAC), mac(GN_MAC)
    calls = [
        lambda: frames.parse_udp(frame),
        lambda: frames.parse_udp(frame, verify_checksum=False),
        lambda: frames.echo_reply(frame, adapter),
        lambda: frames.icmp_frag_needed(adapter, gn, IPv4Address(ADAPTER4), frame[14:], 1400),
        lambda: frames.icmp6_packet_too_big(adapter, gn, IPv6Address(ADAPTER6), frame[14:], 1400),
    ]
    for call in calls:
        with contextlib.suppress(ParseError):
            call()


@FUZZ
@given(data=st.binary(max_size=200), ethertype=st.sampled_from([b"\x08\x00", b"\x86\xdd"]))
def test_random_frames_raise_only_parse_error(data, ethertype):
    only_parse_errors(data)
    only_parse_errors(bytes(12) + ethertype + data)


@FUZZ
@given(
    valid=st.sampled_from(VALID),
    flips=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), max_size=4),
    cut=st.integers(min_value=0),
)
def test_mutated_frames_raise_only_parse_error(valid, flips, cut):
    mutated = bytearray(valid)
    for position, bit in flips:
        mutated[position % len(mutated)] ^= 1 << bit
    only_parse_errors(bytes(mutated[: cut % (len(mutated) + 1)]))
