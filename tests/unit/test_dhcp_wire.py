"""The DHCPv4 and DHCPv6 schemas against an independent encoder (scapy):
what scapy builds, ours parses to the same fields; what ours builds, scapy
dissects to the same fields. Plus the robustness rules of RFC 2131/3396."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import raw
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.dhcp6 import (
    DHCP6_Reply,
    DHCP6_Solicit,
    DHCP6OptClientId,
    DHCP6OptDNSDomains,
    DHCP6OptDNSServers,
    DHCP6OptElapsedTime,
    DHCP6OptIA_NA,
    DHCP6OptIAAddress,
    DHCP6OptOptReq,
    DHCP6OptRapidCommit,
    DHCP6OptServerId,
    DHCP6OptStatusCode,
)
from scapy.layers.dns import dns_get_str

from cyphonic.errors import ParseError
from cyphonic.wire import dhcp, dhcp6
from cyphonic.wire.common import build, parse
from tests.support.scapy import FUZZ

MAC = bytes.fromhex("020000aa0001")
MAC_TEXT = "02:00:00:aa:00:01"


def scapy_discover(**options: object) -> bytes:
    return raw(
        BOOTP(op=1, chaddr=MAC, xid=0xDEADBEEF, flags=0x8000, secs=3)
        / DHCP(options=[("message-type", "discover"), *options.items(), "end"])
    )


def offer_fields(options: list[tuple[int, bytes]]) -> dict:
    return dict(
        op=dhcp.BOOTREPLY, htype=1, hlen=6, hops=0, xid=0xDEADBEEF, secs=0, flags=0x8000,
        ciaddr=IPv4Address(0), yiaddr=IPv4Address("10.1.2.3"), siaddr=IPv4Address(0), giaddr=IPv4Address(0),
        chaddr=MAC + bytes(10), sname=bytes(64), file=bytes(128), options=dhcp.option_list(options), padding=b"",
    )  # fmt: skip


def scapy_names(data: bytes) -> list[str]:
    """Names of a compressed name list, decoded by scapy's DNS code."""
    names, rest = [], data
    while rest:
        name, rest = dns_get_str(rest, full=data)[:2]
        names.append(name.decode().rstrip("."))
    return names


# --- DHCPv4 -------------------------------------------------------------------------------


def test_a_discover_built_by_scapy_parses_to_the_same_fields():
    data = scapy_discover(
        param_req_list=[1, 3, 6, 15, 119, 26], requested_addr="10.1.2.3", hostname=b"sensor-1",
        client_id=b"\x01" + MAC, max_dhcp_size=1500,
    )  # fmt: skip
    message = parse(dhcp.Message, data)
    assert (message.op, message.htype, message.hlen, message.xid, message.flags, message.secs) == (
        1, 1, 6, 0xDEADBEEF, 0x8000, 3,
    )  # fmt: skip
    assert bytes(message.chaddr[:6]) == MAC and message.ciaddr == IPv4Address(0)
    options = dhcp.options_of(message)
    assert options[dhcp.MESSAGE_TYPE] == bytes([dhcp.MessageType.DISCOVER])
    assert options[dhcp.PARAMETER_REQUEST_LIST] == bytes([1, 3, 6, 15, 119, 26])
    assert dhcp.address(options[dhcp.REQUESTED_IP]) == IPv4Address("10.1.2.3")
    assert options[dhcp.HOSTNAME] == b"sensor-1"
    assert options[dhcp.CLIENT_ID] == b"\x01" + MAC
    assert int.from_bytes(options[dhcp.MAX_MESSAGE_SIZE], "big") == 1500


def test_an_offer_built_by_us_dissects_in_scapy_to_the_same_fields():
    search = ["lab.example", "corp.lab.example"]
    data = build(
        dhcp.Message,
        offer_fields([
            (dhcp.MESSAGE_TYPE, b"\x02"), (dhcp.SERVER_ID, IPv4Address("10.1.2.1").packed),
            (dhcp.LEASE_TIME, (3600).to_bytes(4, "big")), (dhcp.RENEWAL_TIME, (1800).to_bytes(4, "big")),
            (dhcp.REBINDING_TIME, (3150).to_bytes(4, "big")), (dhcp.SUBNET_MASK, bytes([255, 255, 255, 0])),
            (dhcp.ROUTER, IPv4Address("10.1.2.1").packed), (dhcp.DNS_SERVERS, bytes([10, 1, 2, 1, 9, 9, 9, 9])),
            (dhcp.DOMAIN_NAME, b"lab.example"), (dhcp.INTERFACE_MTU, (1400).to_bytes(2, "big")),
            (dhcp.DOMAIN_SEARCH, dhcp.encode_domain_search(search)),
        ]),
    )  # fmt: skip
    packet = BOOTP(data)
    assert (packet.op, packet.xid, packet.flags, packet.yiaddr, packet.chaddr[:6]) == (
        2, 0xDEADBEEF, 0x8000, "10.1.2.3", MAC,
    )  # fmt: skip
    options = {o[0]: o[1] for o in packet[DHCP].options if isinstance(o, tuple)}
    assert options["message-type"] == 2 and options["server_id"] == "10.1.2.1"
    assert (options["lease_time"], options["renewal_time"], options["rebinding_time"]) == (3600, 1800, 3150)
    assert options["subnet_mask"] == "255.255.255.0" and options["router"] == "10.1.2.1"
    assert [o[1:] for o in packet[DHCP].options if o[0] == "name_server"] == [("10.1.2.1", "9.9.9.9")]
    assert options["domain"] == b"lab.example" and options["interface-mtu"] == 1400
    assert scapy_names(options[119]) == search
    assert packet[DHCP].options[-1] == "end"


def test_the_domain_search_option_is_the_rfc_3397_example():
    # RFC 3397 §3: "eng.apple.com." and "marketing.apple.com.", the second compressed
    expected = b"\x03eng\x05apple\x03com\x00\x09marketing\xc0\x04"
    assert dhcp.encode_domain_search(["eng.apple.com", "marketing.apple.com"]) == expected
    assert dhcp.decode_domain_search(expected) == ["eng.apple.com", "marketing.apple.com"]


def test_a_pointer_past_the_names_is_a_parse_error():
    with pytest.raises(ParseError):
        dhcp.decode_domain_search(b"\x03eng\xc0\x40")


def test_a_repeated_option_is_the_concatenation_of_its_parts():
    # RFC 3396 §7: options of the same code are concatenated in order
    data = raw(BOOTP(chaddr=MAC) / DHCP(options=[("message-type", 1), (119, b"\x03eng"), (12, b"x"), (119, b"\x00")]))
    assert dhcp.options_of(parse(dhcp.Message, data))[119] == b"\x03eng\x00"


def test_a_long_option_is_split_into_parts_of_255_octets():
    names = [f"zone{i}.site{i}.example" for i in range(20)]
    value = dhcp.encode_domain_search(names)
    assert len(value) > 255
    data = build(dhcp.Message, offer_fields([(dhcp.MESSAGE_TYPE, b"\x02"), (dhcp.DOMAIN_SEARCH, value)]))
    parts = [o[1] for o in BOOTP(data)[DHCP].options if o[0] == 119]
    assert [len(p) for p in parts] == [255, len(value) - 255]
    assert dhcp.decode_domain_search(dhcp.options_of(parse(dhcp.Message, data))[119]) == names


def test_options_without_end_still_parse():
    data = scapy_discover(hostname=b"h")[:-1]  # scapy puts End last: cut it
    assert dhcp.options_of(parse(dhcp.Message, data))[dhcp.HOSTNAME] == b"h"


def test_anything_after_end_is_padding():
    message = parse(dhcp.Message, scapy_discover() + b"\x00\x00\x35\x01\x05")
    assert dhcp.options_of(message) == {dhcp.MESSAGE_TYPE: b"\x01"}


def test_pad_octets_between_options_are_skipped():
    data = raw(BOOTP(chaddr=MAC) / DHCP(options=["pad", ("message-type", 3), "pad", "pad", ("hostname", b"a"), "end"]))
    assert dhcp.options_of(parse(dhcp.Message, data)) == {dhcp.MESSAGE_TYPE: b"\x03", dhcp.HOSTNAME: b"a"}


def test_options_overloaded_into_sname_are_ignored():
    sname = bytes([dhcp.MESSAGE_TYPE, 1, 7, dhcp.END]) + bytes(60)
    data = raw(BOOTP(chaddr=MAC, sname=sname) / DHCP(options=[("message-type", 1), (dhcp.OVERLOAD, b"\x02"), "end"]))
    message = parse(dhcp.Message, data)
    assert dhcp.options_of(message)[dhcp.MESSAGE_TYPE] == b"\x01"
    assert bytes(message.sname) == sname


def test_an_option_cut_short_is_a_parse_error():
    data = scapy_discover(hostname=b"sensor")
    with pytest.raises(ParseError):
        parse(dhcp.Message, data[:-4])  # inside the hostname's value


def test_a_wrong_magic_cookie_is_a_parse_error():
    data = bytearray(scapy_discover())
    data[236] ^= 1
    with pytest.raises(ParseError):
        parse(dhcp.Message, bytes(data))


def test_a_truncated_head_is_a_parse_error():
    with pytest.raises(ParseError):
        parse(dhcp.Message, scapy_discover()[:200])


@pytest.mark.parametrize("data", [b"", b"\x01\x02\x03", bytes(5)])
def test_an_address_option_of_the_wrong_length_is_a_parse_error(data):
    with pytest.raises(ParseError):
        dhcp.address(data)
    if len(data) % 4 or not data:
        with pytest.raises(ParseError):
            dhcp.addresses(data)


@FUZZ
@given(st.binary(max_size=200))
def test_random_domain_search_values_raise_only_parse_error(data):
    with contextlib.suppress(ParseError):
        dhcp.decode_domain_search(data)


# --- DHCPv6 -------------------------------------------------------------------------------


def test_a_solicit_built_by_scapy_parses_to_the_same_fields():
    packet = (
        DHCP6_Solicit(trid=0xABCDEF)
        / DHCP6OptClientId(duid=dhcp6.DuidLinkLayer.build({"type": 3, "htype": 1, "address": MAC}))
        / DHCP6OptIA_NA(iaid=0x0A0B0C0D, T1=0, T2=0)
        / DHCP6OptOptReq(reqopts=[23, 24])
        / DHCP6OptElapsedTime(elapsedtime=250)
        / DHCP6OptRapidCommit()
    )
    message = parse(dhcp6.Message, raw(packet))
    assert (message.msg_type, message.transaction_id) == (dhcp6.SOLICIT, 0xABCDEF)
    options = dhcp6.options_of(message.options)
    assert options[dhcp6.CLIENTID] == [dhcp6.duid_ll(MAC)]
    ia = parse(dhcp6.IaNa, options[dhcp6.IA_NA][0])
    assert (ia.iaid, ia.t1, ia.t2, list(ia.options)) == (0x0A0B0C0D, 0, 0, [])
    assert list(parse(dhcp6.OptionRequest, options[dhcp6.ORO][0]).codes) == [23, 24]
    assert parse(dhcp6.ElapsedTime, options[dhcp6.ELAPSED_TIME][0]).centiseconds == 250
    assert options[dhcp6.RAPID_COMMIT] == [b""]


def test_our_duid_ll_is_scapys():
    from scapy.layers.dhcp6 import DUID_LL

    assert dhcp6.duid_ll(MAC) == raw(DUID_LL(lladdr=MAC_TEXT))


def test_a_reply_built_by_us_dissects_in_scapy_to_the_same_fields():
    iaaddr = build(
        dhcp6.IaAddress, {"address": IPv6Address("fd00:77::5"), "preferred": 3600, "valid": 7200, "options": []}
    )
    status = build(dhcp6.StatusCode, {"status": dhcp6.SUCCESS, "message": "ok"})
    ia = build(dhcp6.IaNa, {"iaid": 7, "t1": 1800, "t2": 2880, "options": [dhcp6.option(dhcp6.IAADDR, iaaddr)]})
    data = build(
        dhcp6.Message,
        {
            "msg_type": dhcp6.REPLY,
            "transaction_id": 0x010203,
            "options": [
                dhcp6.option(dhcp6.SERVERID, dhcp6.duid_ll(MAC)),
                dhcp6.option(dhcp6.IA_NA, ia),
                dhcp6.option(dhcp6.STATUS_CODE, status),
                dhcp6.option(dhcp6.DNS_SERVERS, build(dhcp6.DnsServers, {"servers": ["fd00:77::1", "fd00::53"]})),
                dhcp6.option(dhcp6.DOMAIN_LIST, dhcp6.encode_domain_list(["lab.example", "example"])),
            ],
        },
    )
    packet = DHCP6_Reply(data)
    assert packet.trid == 0x010203
    assert packet[DHCP6OptServerId].duid.lladdr == MAC_TEXT
    assert (packet[DHCP6OptIA_NA].iaid, packet[DHCP6OptIA_NA].T1, packet[DHCP6OptIA_NA].T2) == (7, 1800, 2880)
    address = packet[DHCP6OptIAAddress]
    assert (address.addr, address.preflft, address.validlft) == ("fd00:77::5", 3600, 7200)
    assert (packet[DHCP6OptStatusCode].statuscode, packet[DHCP6OptStatusCode].statusmsg) == (0, b"ok")
    assert packet[DHCP6OptDNSServers].dnsservers == ["fd00:77::1", "fd00::53"]
    assert packet[DHCP6OptDNSDomains].dnsdomains == ["lab.example.", "example."]


def test_a_domain_list_round_trips_uncompressed():
    value = dhcp6.encode_domain_list(["a.example", "b.example"])
    assert value == b"\x01a\x07example\x00\x01b\x07example\x00"  # RFC 8415 §10: no compression
    assert dhcp6.decode_domain_list(value) == ["a.example", "b.example"]


def test_a_dhcpv6_option_cut_short_is_a_parse_error():
    data = raw(DHCP6_Solicit(trid=1) / DHCP6OptClientId(duid=dhcp6.duid_ll(MAC)))
    with pytest.raises(ParseError):
        parse(dhcp6.Message, data[:-1])


def test_a_nested_option_cut_short_is_a_parse_error():
    ia = build(dhcp6.IaNa, {"iaid": 1, "t1": 0, "t2": 0, "options": [dhcp6.option(dhcp6.STATUS_CODE, b"\0\0")]})
    with pytest.raises(ParseError):
        parse(dhcp6.IaNa, ia[:-1])


@FUZZ
@given(st.binary(max_size=200))
def test_random_domain_list_values_raise_only_parse_error(data):
    with contextlib.suppress(ParseError):
        dhcp6.decode_domain_list(data)
