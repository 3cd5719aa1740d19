"""The adapter's DHCPv4 server, driven step by step with a fake clock.

Client messages are built by scapy and replies dissected by scapy, so the
server is checked against an encoder that is not ours (RFC 2131 §4.3)."""

from __future__ import annotations

import logging
import random
from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scapy.all import raw
from scapy.layers.dhcp import BOOTP, DHCP

from cyphonic.core.dhcp import (
    AddressNeeded,
    DhcpServer,
    Lease,
    LeaseDeclined,
    LeaseGranted,
    LeaseReleased,
    Leases,
    Reply,
)
from cyphonic.errors import ParseError
from cyphonic.wire import dhcp as wire
from tests.support.mutations import FLIPS, mutations
from tests.support.scapy import FUZZ

SERVER = IPv4Address("10.77.0.1")
NODE = bytes.fromhex("020000000001")
ADDRESS = IPv4Address("10.77.0.5")
OTHER = IPv4Address("10.77.0.9")
BROADCAST_MAC = b"\xff" * 6
SEARCH = ["lab.example", "site.lab.example"]


class Lan:
    """The cloud's view, as the adapter's callbacks see it: who is known, who has an address."""

    def __init__(self) -> None:
        self.known = {NODE}
        self.addresses: dict[bytes, IPv4Address] = {NODE: ADDRESS}

    def server(self, leases: Leases | None = None, **settings: object) -> DhcpServer:
        arguments: dict = dict(
            server_ip=SERVER, prefix_len=24, router=SERVER, dns=[SERVER], domain_search=SEARCH, mtu=1400,
            leases=leases if leases is not None else Leases(),
            address_of=self.addresses.get, known=self.known.__contains__,
        )  # fmt: skip
        arguments.update(settings)
        return DhcpServer(**arguments)


def message(kind: str, mac: bytes = NODE, *, xid: int = 0x1234, flags: int = 0, ciaddr: str = "0.0.0.0",
            chaddr: bytes | None = None, giaddr: str = "0.0.0.0", **options: object) -> bytes:  # fmt: skip
    head = BOOTP(op=1, chaddr=chaddr or mac, xid=xid, flags=flags, ciaddr=ciaddr, giaddr=giaddr)
    return raw(head / DHCP(options=[("message-type", kind), *options.items(), "end"]))


def dissect(reply: Reply) -> tuple[BOOTP, dict]:
    packet = BOOTP(reply.payload)
    options = {o[0]: o[1] if len(o) == 2 else o[1:] for o in packet[DHCP].options if isinstance(o, tuple)}
    return packet, options


def events(server: DhcpServer) -> list:
    out = []
    while (event := server.next_event()) is not None:
        out.append(event)
    return out


def bind(server: DhcpServer, now: float = 0.0, **options: object) -> None:
    """DISCOVER, OFFER, REQUEST, ACK at `now`."""
    [offer] = server.receive(message("discover", **options), NODE, now)
    [ack] = server.receive(message("request", requested_addr=str(ADDRESS), server_id=str(SERVER), **options), NODE, now)
    assert dissect(ack)[1]["message-type"] == 5


# --- the lifecycle ----------------------------------------------------------------------


def test_a_discover_from_a_known_node_is_offered_its_own_address_with_the_configuration():
    server = Lan().server()
    [offer] = server.receive(message("discover", xid=77), NODE, 0.0)
    packet, options = dissect(offer)
    assert (packet.op, packet.xid, packet.yiaddr, packet.ciaddr, packet.chaddr[:6]) == (
        2,
        77,
        str(ADDRESS),
        "0.0.0.0",
        NODE,
    )
    assert options["message-type"] == 2 and options["server_id"] == str(SERVER)
    assert (options["lease_time"], options["renewal_time"], options["rebinding_time"]) == (3600, 1800, 3150)
    assert options["subnet_mask"] == "255.255.255.0" and options["router"] == str(SERVER)
    assert options["name_server"] == str(SERVER) and options["interface-mtu"] == 1400
    assert options["domain"] == b"lab.example"
    assert wire.decode_domain_search(options[wire.DOMAIN_SEARCH]) == SEARCH
    # §4.1: no ciaddr, no broadcast bit: unicast to chaddr and yiaddr
    assert (offer.dst_mac, offer.dst_ip, offer.broadcast) == (NODE, ADDRESS, False)
    assert len(offer.payload) >= wire.MIN_MESSAGE
    assert events(server) == []  # an offer is no lease


def test_the_broadcast_flag_makes_the_offer_broadcast():
    server = Lan().server()
    [offer] = server.receive(message("discover", flags=0x8000), NODE, 0.0)
    assert (offer.dst_mac, offer.dst_ip, offer.broadcast) == (BROADCAST_MAC, IPv4Address("255.255.255.255"), True)
    assert BOOTP(offer.payload).flags == 0x8000


def test_a_request_for_the_offered_address_is_acked_and_the_lease_granted():
    server = Lan().server(lease_time=600)
    server.receive(message("discover"), NODE, 10.0)
    [ack] = server.receive(message("request", requested_addr=str(ADDRESS), server_id=str(SERVER)), NODE, 11.0)
    packet, options = dissect(ack)
    assert (options["message-type"], packet.yiaddr, options["lease_time"]) == (5, str(ADDRESS), 600)
    assert (options["renewal_time"], options["rebinding_time"]) == (300, 525)
    assert (ack.dst_mac, ack.dst_ip) == (NODE, ADDRESS)
    assert events(server) == [LeaseGranted(NODE, ADDRESS, 611.0)]
    assert server.leases[NODE] == Lease(ADDRESS, 611.0)


def test_a_request_naming_another_server_forgets_the_offer_silently():
    server = Lan().server()
    server.receive(message("discover"), NODE, 0.0)
    assert server.receive(message("request", requested_addr=str(ADDRESS), server_id="10.77.0.254"), NODE, 1.0) == []
    assert events(server) == [] and NODE not in server.leases
    assert server.counters["chose another server"] == 1


def test_a_selecting_request_for_another_address_is_naked_by_broadcast():
    server = Lan().server()
    [nak] = server.receive(message("request", requested_addr=str(OTHER), server_id=str(SERVER)), NODE, 0.0)
    packet, options = dissect(nak)
    assert options["message-type"] == 6 and options["server_id"] == str(SERVER)
    assert options["error_message"] == b"not the address of this client"
    assert packet.yiaddr == "0.0.0.0" and "lease_time" not in options and "router" not in options
    assert (nak.dst_mac, nak.dst_ip, nak.broadcast) == (BROADCAST_MAC, IPv4Address("255.255.255.255"), True)


def test_init_reboot_with_a_wrong_address_is_naked_by_broadcast():
    server = Lan().server()
    [nak] = server.receive(message("request", requested_addr=str(OTHER)), NODE, 0.0)
    assert dissect(nak)[1]["message-type"] == 6 and nak.broadcast
    assert events(server) == []


def test_init_reboot_with_the_nodes_address_is_acked():
    server = Lan().server()
    [ack] = server.receive(message("request", requested_addr=str(ADDRESS)), NODE, 5.0)
    assert dissect(ack)[1]["message-type"] == 5
    assert events(server) == [LeaseGranted(NODE, ADDRESS, 3605.0)]


def test_a_renewal_by_unicast_is_acked_to_ciaddr():
    server = Lan().server()
    bind(server)
    events(server)
    [ack] = server.receive(message("request", ciaddr=str(ADDRESS)), NODE, 1800.0)  # T1
    packet, options = dissect(ack)
    assert (options["message-type"], packet.ciaddr, packet.yiaddr) == (5, str(ADDRESS), str(ADDRESS))
    assert (ack.dst_mac, ack.dst_ip, ack.broadcast) == (NODE, ADDRESS, False)
    assert events(server) == [LeaseGranted(NODE, ADDRESS, 5400.0)]


def test_a_rebinding_by_broadcast_is_acked_to_ciaddr():
    server = Lan().server()
    bind(server)
    events(server)
    [ack] = server.receive(message("request", ciaddr=str(ADDRESS), flags=0x8000), NODE, 3150.0)  # T2
    # §4.1: a client with a ciaddr is answered there, broadcast bit or not
    assert (ack.dst_mac, ack.dst_ip, ack.broadcast) == (NODE, ADDRESS, False)
    assert events(server) == [LeaseGranted(NODE, ADDRESS, 6750.0)]


def test_a_renewal_of_an_address_that_is_not_the_nodes_is_naked():
    lan = Lan()
    server = lan.server()
    bind(server)
    lan.addresses[NODE] = OTHER  # the cloud moved the node
    [nak] = server.receive(message("request", ciaddr=str(ADDRESS)), NODE, 1800.0)
    assert dissect(nak)[1]["message-type"] == 6 and nak.broadcast
    [offer] = server.receive(message("discover"), NODE, 1801.0)
    assert BOOTP(offer.payload).yiaddr == str(OTHER)


def test_a_request_naming_no_address_is_dropped():
    server = Lan().server()
    assert server.receive(message("request"), NODE, 0.0) == []
    assert server.drops.counts["REQUEST naming no address"] == 1


def test_a_decline_ends_the_lease_and_the_address_is_still_offered_loudly(caplog):
    server = Lan().server()
    bind(server)
    events(server)
    with caplog.at_level(logging.WARNING, logger="cyphonic.dhcp"):
        assert server.receive(message("decline", requested_addr=str(ADDRESS), server_id=str(SERVER)), NODE, 5.0) == []
        assert events(server) == [LeaseDeclined(NODE, ADDRESS)]
        assert NODE not in server.leases
        [offer] = server.receive(message("discover"), NODE, 15.0)
    assert BOOTP(offer.payload).yiaddr == str(ADDRESS)  # the address is fixed: nothing else to offer
    assert any("declined" in r.getMessage() for r in caplog.records)
    assert any("again" in r.getMessage() for r in caplog.records)


def test_a_decline_is_forgotten_after_some_minutes(caplog):
    server = Lan().server()
    server.receive(message("decline", requested_addr=str(ADDRESS)), NODE, 0.0)
    server.expire(1000.0)
    with caplog.at_level(logging.WARNING, logger="cyphonic.dhcp"):
        server.receive(message("discover"), NODE, 1000.0)
    assert not any("again" in r.getMessage() for r in caplog.records)


def test_a_release_ends_the_lease():
    server = Lan().server()
    bind(server)
    events(server)
    assert server.receive(message("release", ciaddr=str(ADDRESS), server_id=str(SERVER)), NODE, 100.0) == []
    assert events(server) == [LeaseReleased(NODE, ADDRESS)]
    assert NODE not in server.leases


def test_a_release_of_an_address_the_node_does_not_hold_is_ignored():
    server = Lan().server()
    bind(server)
    events(server)
    server.receive(message("release", ciaddr=str(OTHER)), NODE, 100.0)
    assert events(server) == [] and NODE in server.leases
    assert server.drops.counts["RELEASE of no lease"] == 1


def test_an_inform_is_acked_to_ciaddr_with_no_lease_time_and_no_yiaddr():
    server = Lan().server()
    [ack] = server.receive(message("inform", ciaddr=str(ADDRESS), param_req_list=[6, 15]), NODE, 0.0)
    packet, options = dissect(ack)
    assert (options["message-type"], packet.yiaddr, packet.ciaddr) == (5, "0.0.0.0", str(ADDRESS))
    assert not {"lease_time", "renewal_time", "rebinding_time"} & set(options)
    assert options["name_server"] == str(SERVER) and options["domain"] == b"lab.example"
    assert (ack.dst_mac, ack.dst_ip, ack.broadcast) == (NODE, ADDRESS, False)
    assert events(server) == [] and NODE not in server.leases


def test_expired_leases_are_forgotten_with_an_event():
    server = Lan().server(lease_time=100)
    bind(server, now=0.0)
    events(server)
    server.expire(99.0)
    assert events(server) == []
    server.expire(100.0)
    assert events(server) == [LeaseReleased(NODE, ADDRESS)]
    assert NODE not in server.leases


# --- options ------------------------------------------------------------------------------


def test_the_parameter_request_list_orders_the_configuration():
    server = Lan().server()
    [offer] = server.receive(message("discover", param_req_list=[6, 26, 1, 200]), NODE, 0.0)
    codes = [o[0] for o in BOOTP(offer.payload)[DHCP].options if isinstance(o, tuple)]
    assert codes[:5] == ["message-type", "server_id", "lease_time", "renewal_time", "rebinding_time"]
    assert codes[5:8] == ["name_server", "interface-mtu", "subnet_mask"]
    assert set(codes[8:]) == {"router", "domain", wire.DOMAIN_SEARCH}  # unasked but configured


def test_a_client_that_takes_short_messages_gets_what_it_asked_for_first():
    long_search = [f"zone{i}.site.lab.example" for i in range(30)]
    server = Lan().server(domain_search=long_search)
    [offer] = server.receive(message("discover", param_req_list=[1, 3, 6]), NODE, 0.0)
    assert len(offer.payload) <= 576 - 28
    options = dissect(offer)[1]
    assert {"subnet_mask", "router", "name_server", "lease_time"} <= set(options)
    assert wire.DOMAIN_SEARCH not in options
    [big] = server.receive(message("discover", param_req_list=[1, 3, 6], max_dhcp_size=1500), NODE, 0.0)
    assert (
        wire.decode_domain_search(wire.options_of(wire.Message.parse(big.payload))[wire.DOMAIN_SEARCH]) == long_search
    )


def test_the_client_identifier_is_echoed():
    server = Lan().server()
    [offer] = server.receive(message("discover", client_id=b"\x01" + NODE), NODE, 0.0)
    assert dissect(offer)[1]["client_id"] == b"\x01" + NODE  # RFC 6842 §3


def test_no_router_option_without_a_router():
    server = Lan().server(router=None)
    [offer] = server.receive(message("discover", param_req_list=[1, 3, 6]), NODE, 0.0)
    assert "router" not in dissect(offer)[1]


# --- who is answered --------------------------------------------------------------------


def test_a_spoofed_chaddr_is_dropped_and_counted():
    server = Lan().server()
    intruder = bytes.fromhex("02000000dead")
    assert server.receive(message("discover", chaddr=NODE), intruder, 0.0) == []
    assert server.receive(message("request", requested_addr=str(ADDRESS), chaddr=NODE), intruder, 0.0) == []
    assert server.drops.counts["chaddr is not the source MAC"] == 2
    assert events(server) == []


def test_a_relayed_message_is_dropped_and_counted():
    server = Lan().server()
    assert server.receive(message("discover", giaddr="10.9.9.9"), NODE, 0.0) == []
    assert server.drops.counts["relayed"] == 1


def test_a_bootp_request_without_a_message_type_is_dropped():
    server = Lan().server()
    assert server.receive(raw(BOOTP(op=1, chaddr=NODE) / DHCP(options=["end"])), NODE, 0.0) == []
    assert server.drops.counts["BOOTP (no message type)"] == 1


def test_a_server_message_from_the_lan_is_dropped():
    server = Lan().server()
    assert server.receive(message("offer"), NODE, 0.0) == []
    assert server.drops.counts["not a client message type"] == 1


def test_an_unknown_mac_gets_nothing_and_is_logged_once(caplog):
    server = Lan().server()
    stranger = bytes.fromhex("02000000beef")
    with caplog.at_level(logging.INFO, logger="cyphonic.dhcp"):
        for now in (0.0, 10.0, 20.0):
            assert server.receive(message("discover", stranger), stranger, now) == []
    assert len([r for r in caplog.records if "02:00:00:00:be:ef" in r.getMessage()]) == 1
    assert server.drops.counts["unknown MAC"] == 3
    assert events(server) == [] and len(server.waiting) == 0


def test_a_storm_of_random_macs_leaves_memory_bounded():
    server = Lan().server()
    template = bytearray(message("discover", bytes(6)))
    rng = random.Random(7)
    for i in range(10_000):
        mac = bytes([2]) + rng.randbytes(5)
        template[28:34] = mac  # chaddr
        assert server.receive(bytes(template), mac, float(i)) == []
    assert len(server.unknown) <= 256
    assert server.drops.counts["unknown MAC"] == 10_000
    assert len(server.waiting) == 0 and len(server.leases) == 0 and events(server) == []


def test_a_held_discover_is_answered_by_address_ready():
    lan = Lan()
    del lan.addresses[NODE]  # its identity is not logged in yet
    server = lan.server()
    assert server.receive(message("discover", xid=1), NODE, 0.0) == []
    assert server.receive(message("discover", xid=2), NODE, 4.0) == []
    assert events(server) == [AddressNeeded(NODE)]  # once while pending
    lan.addresses[NODE] = ADDRESS
    [offer] = server.address_ready(NODE, 6.0)
    assert (BOOTP(offer.payload).xid, BOOTP(offer.payload).yiaddr) == (2, str(ADDRESS))  # the latest one
    assert server.address_ready(NODE, 7.0) == []


def test_a_held_message_too_old_is_not_answered_and_the_address_is_asked_again():
    lan = Lan()
    del lan.addresses[NODE]
    server = lan.server()
    server.receive(message("discover"), NODE, 0.0)
    server.receive(message("discover"), NODE, 61.0)
    assert events(server) == [AddressNeeded(NODE), AddressNeeded(NODE)]
    lan.addresses[NODE] = ADDRESS
    assert server.address_ready(NODE, 200.0) == []


def test_a_held_request_is_acked_by_address_ready():
    lan = Lan()
    del lan.addresses[NODE]
    server = lan.server()
    server.receive(message("request", requested_addr=str(ADDRESS)), NODE, 0.0)
    lan.addresses[NODE] = ADDRESS
    [ack] = server.address_ready(NODE, 1.0)
    assert dissect(ack)[1]["message-type"] == 5
    assert events(server) == [AddressNeeded(NODE), LeaseGranted(NODE, ADDRESS, 3601.0)]


# --- persistence ----------------------------------------------------------------------------


def test_leases_survive_a_restart(tmp_path):
    path = tmp_path / "leases.json"
    lan = Lan()
    server = lan.server(leases=Leases.load(path))
    bind(server, now=1000.0)
    server.leases.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["leases.json"]  # the temporary file was renamed

    restarted = lan.server(leases=Leases.load(path))
    assert restarted.leases[NODE] == Lease(ADDRESS, 4600.0)
    [ack] = restarted.receive(message("request", ciaddr=str(ADDRESS)), NODE, 2800.0)
    assert dissect(ack)[1]["message-type"] == 5
    restarted.receive(message("release", ciaddr=str(ADDRESS)), NODE, 2900.0)
    assert events(restarted)[-1] == LeaseReleased(NODE, ADDRESS)


def test_a_missing_lease_file_is_an_empty_table(tmp_path):
    assert len(Leases.load(tmp_path / "none.json")) == 0


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        '{"version": 2, "leases": []}',
        '{"version": 1, "leases": [{"mac": "zz", "address": "10.0.0.1", "expires": 1}]}',
        '{"version": 1, "leases": [{"mac": "02:00:00:00:00:01", "address": "10.0.0.300", "expires": 1}]}',
        '{"version": 1, "leases": [{"mac": "02:00:00:00:00:01", "address": "10.0.0.1", "expires": NaN}]}',
        '{"version": 1, "leases": [{"mac": "02:00:00:00:00:01"}]}',
    ],
)
def test_a_corrupt_lease_file_is_refused(tmp_path, text):
    path = tmp_path / "leases.json"
    path.write_text(text)
    with pytest.raises(ParseError):
        Leases.load(path)


# --- hostile bytes -------------------------------------------------------------------------

VALID = [
    message("discover", param_req_list=[1, 3, 6], client_id=b"\x01" + NODE),
    message("request", requested_addr=str(ADDRESS), server_id=str(SERVER)),
    message("request", ciaddr=str(ADDRESS)),
    message("decline", requested_addr=str(ADDRESS)),
    message("release", ciaddr=str(ADDRESS)),
    message("inform", ciaddr=str(ADDRESS)),
]


def only_parse_errors(server: DhcpServer, data: bytes, mac: bytes = NODE) -> list[Reply]:
    try:
        return server.receive(data, mac, 0.0)
    except ParseError:
        return []


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes_raise_only_parse_error(data):
    only_parse_errors(Lan().server(), data)
    only_parse_errors(Lan().server(), bytes(data[:236]) + wire.MAGIC_COOKIE + data[236:])


@FUZZ
@given(
    valid=st.sampled_from(VALID),
    flips=FLIPS,
    cut=st.integers(min_value=0),
    tail=st.binary(max_size=40),
)
def test_mutated_messages_raise_only_parse_error(valid, flips, cut, tail):
    flipped, truncated = mutations(valid, flips, cut, tail)
    server = Lan().server()
    for reply in only_parse_errors(server, flipped) + only_parse_errors(server, truncated):
        BOOTP(reply.payload)  # whatever goes out is a message
