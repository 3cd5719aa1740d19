"""The adapter's DHCPv6 server, driven step by step with a fake clock;
client messages built and replies dissected by scapy (RFC 8415 §18.3)."""

from __future__ import annotations

import logging
import random
from ipaddress import IPv6Address

from hypothesis import given
from hypothesis import strategies as st
from scapy.all import raw
from scapy.layers.dhcp6 import (
    DHCP6,
    DHCP6_Advertise,
    DHCP6_Confirm,
    DHCP6_Decline,
    DHCP6_InfoRequest,
    DHCP6_Rebind,
    DHCP6_RelayForward,
    DHCP6_Release,
    DHCP6_Renew,
    DHCP6_Reply,
    DHCP6_Request,
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

from cyphonic.core.dhcp6 import Dhcp6Server
from cyphonic.core.leases import AddressNeeded, LeaseDeclined, LeaseGranted, LeaseReleased
from cyphonic.errors import ParseError
from cyphonic.wire import dhcp6 as wire
from tests.support.mutations import FLIPS, mutations
from tests.support.scapy import FUZZ

ADAPTER = bytes.fromhex("020000000a0a")
NODE = bytes.fromhex("020000000001")
ADDRESS = IPv6Address("fd00:77::5")
OTHER = IPv6Address("fd00:77::9")
DNS = IPv6Address("fd00:77::1")
SEARCH = ["lab.example", "site.lab.example"]
OURS = wire.duid_ll(ADAPTER)


class Lan:
    def __init__(self) -> None:
        self.known = {NODE}
        self.addresses: dict[bytes, IPv6Address] = {NODE: ADDRESS}

    def server(self, **settings: object) -> Dhcp6Server:
        arguments: dict = dict(
            mac=ADAPTER, dns=[DNS], domain_search=SEARCH,
            address_of=self.addresses.get, known=self.known.__contains__,
        )  # fmt: skip
        arguments.update(settings)
        return Dhcp6Server(**arguments)


def client(kind, mac: bytes = NODE, *, trid: int = 0x123456, server_id: bytes | None = None,
           ias: tuple = ((7, ()),), rapid: bool = False, oro: bool = True):  # fmt: skip
    """A client message: `ias` is (iaid, addresses) per IA_NA."""
    packet = kind(trid=trid) / DHCP6OptClientId(duid=wire.duid_ll(mac))
    if server_id is not None:
        packet /= DHCP6OptServerId(duid=server_id)
    for iaid, addresses in ias:
        inner = [DHCP6OptIAAddress(addr=str(a), preflft=0, validlft=0) for a in addresses]
        packet /= DHCP6OptIA_NA(iaid=iaid, T1=0, T2=0, ianaopts=inner)
    if oro:
        packet /= DHCP6OptOptReq(reqopts=[23, 24])
    packet /= DHCP6OptElapsedTime()
    if rapid:
        packet /= DHCP6OptRapidCommit()
    return packet


def send(server: Dhcp6Server, packet, now: float = 0.0, mac: bytes = NODE) -> list[bytes]:
    return server.receive(raw(packet), mac, now)


def events(server: Dhcp6Server) -> list:
    out = []
    while (event := server.next_event()) is not None:
        out.append(event)
    return out


def status(packet) -> int | None:
    """The top-level Status Code (not one inside an IA)."""
    codes = [o for o in layers(packet) if isinstance(o, DHCP6OptStatusCode)]
    return codes[0].statuscode if codes else None


def layers(packet) -> list:
    out, layer = [], packet.payload
    while layer and layer.name != "NoPayload":
        out.append(layer)
        layer = layer.payload
    return out


def ia_addresses(packet) -> list[tuple[str, int, int]]:
    return [(a.addr, a.preflft, a.validlft) for a in packet[DHCP6OptIA_NA].ianaopts if isinstance(a, DHCP6OptIAAddress)]


def bind(server: Dhcp6Server, now: float = 0.0) -> None:
    [advertise] = send(server, client(DHCP6_Solicit), now)
    [reply] = send(server, client(DHCP6_Request, server_id=OURS), now)
    assert DHCP6(reply).msgtype == wire.REPLY


# --- the exchanges -------------------------------------------------------------------------


def test_a_solicit_is_advertised_the_nodes_address_and_configuration():
    server = Lan().server()
    [answer] = send(server, client(DHCP6_Solicit, trid=0xABCDEF))
    advertise = DHCP6_Advertise(answer)
    assert (advertise.msgtype, advertise.trid) == (wire.ADVERTISE, 0xABCDEF)
    assert raw(advertise[DHCP6OptServerId].duid) == OURS
    assert raw(advertise[DHCP6OptClientId].duid) == wire.duid_ll(NODE)
    ia = advertise[DHCP6OptIA_NA]
    assert (ia.iaid, ia.T1, ia.T2) == (7, 1800, 2880)  # T1 0.5, T2 0.8 of the lifetime
    assert ia_addresses(advertise) == [(str(ADDRESS), 3600, 3600)]
    assert advertise[DHCP6OptDNSServers].dnsservers == [str(DNS)]
    assert advertise[DHCP6OptDNSDomains].dnsdomains == ["lab.example.", "site.lab.example."]
    assert events(server) == [] and server.bindings == {}  # an advertise commits nothing


def test_a_request_naming_us_is_replied_and_the_lease_granted():
    server = Lan().server(lifetime=1000)
    send(server, client(DHCP6_Solicit), 0.0)
    [answer] = send(server, client(DHCP6_Request, server_id=OURS, ias=((9, (ADDRESS,)),)), 2.0)
    reply = DHCP6_Reply(answer)
    assert reply.msgtype == wire.REPLY and reply[DHCP6OptIA_NA].iaid == 9
    assert (reply[DHCP6OptIA_NA].T1, reply[DHCP6OptIA_NA].T2) == (500, 800)
    assert ia_addresses(reply) == [(str(ADDRESS), 1000, 1000)]
    assert events(server) == [LeaseGranted(NODE, ADDRESS, 1002.0)]


def test_a_request_naming_another_server_is_dropped():
    server = Lan().server()
    assert send(server, client(DHCP6_Request, server_id=wire.duid_ll(bytes(6)))) == []
    assert send(server, client(DHCP6_Request)) == []  # §16.4: a Request must name a server
    assert server.drops.total() == 2 and events(server) == []


def test_a_solicit_naming_a_server_is_dropped():
    server = Lan().server()
    assert send(server, client(DHCP6_Solicit, server_id=OURS)) == []  # §16.2


def test_a_message_without_a_client_identifier_is_dropped():
    server = Lan().server()
    assert send(server, DHCP6_Solicit(trid=1) / DHCP6OptIA_NA(iaid=1)) == []
    assert server.drops.counts["no client identifier"] == 1


def test_a_solicit_with_rapid_commit_gets_a_committed_reply():
    server = Lan().server()
    [answer] = send(server, client(DHCP6_Solicit, rapid=True), 5.0)
    reply = DHCP6_Reply(answer)
    assert reply.msgtype == wire.REPLY and reply.haslayer(DHCP6OptRapidCommit)
    assert ia_addresses(reply) == [(str(ADDRESS), 3600, 3600)]
    assert events(server) == [LeaseGranted(NODE, ADDRESS, 3605.0)]


def test_a_renew_extends_the_lease():
    server = Lan().server()
    bind(server)
    events(server)
    [answer] = send(server, client(DHCP6_Renew, server_id=OURS, ias=((7, (ADDRESS,)),)), 1800.0)
    assert ia_addresses(DHCP6_Reply(answer)) == [(str(ADDRESS), 3600, 3600)]
    assert events(server) == [LeaseGranted(NODE, ADDRESS, 5400.0)]


def test_a_renewed_address_that_is_no_longer_the_nodes_gets_lifetimes_of_zero():
    lan = Lan()
    server = lan.server()
    bind(server)
    lan.addresses[NODE] = OTHER
    [answer] = send(server, client(DHCP6_Renew, server_id=OURS, ias=((7, (ADDRESS,)),)), 1800.0)
    assert ia_addresses(DHCP6_Reply(answer)) == [(str(OTHER), 3600, 3600), (str(ADDRESS), 0, 0)]


def test_a_rebind_without_a_server_identifier_is_replied():
    server = Lan().server()
    bind(server)
    events(server)
    [answer] = send(server, client(DHCP6_Rebind, ias=((7, (ADDRESS,)),)), 2880.0)
    assert ia_addresses(DHCP6_Reply(answer)) == [(str(ADDRESS), 3600, 3600)]
    assert events(server) == [LeaseGranted(NODE, ADDRESS, 6480.0)]
    assert send(server, client(DHCP6_Rebind, server_id=OURS)) == []  # §16.7: it must not name one


def test_a_confirm_of_the_nodes_address_is_success():
    server = Lan().server()
    [answer] = send(server, client(DHCP6_Confirm, ias=((7, (ADDRESS,)),)))
    reply = DHCP6_Reply(answer)
    assert reply.msgtype == wire.REPLY and status(reply) == wire.SUCCESS


def test_a_confirm_of_another_address_is_not_on_link():
    server = Lan().server()
    [answer] = send(server, client(DHCP6_Confirm, ias=((7, (ADDRESS, OTHER)),)))
    assert status(DHCP6_Reply(answer)) == wire.NOT_ON_LINK


def test_a_confirm_naming_no_address_gets_no_reply():
    server = Lan().server()
    assert send(server, client(DHCP6_Confirm)) == []  # §18.3.3


def test_a_release_ends_the_lease_with_success():
    server = Lan().server()
    bind(server)
    events(server)
    [answer] = send(server, client(DHCP6_Release, server_id=OURS, ias=((7, (ADDRESS,)),)), 100.0)
    reply = DHCP6_Reply(answer)
    assert status(reply) == wire.SUCCESS and not reply.haslayer(DHCP6OptIA_NA)
    assert events(server) == [LeaseReleased(NODE, ADDRESS)]
    assert server.bindings == {}


def test_a_release_of_no_binding_says_so_in_the_ia():
    server = Lan().server()
    [answer] = send(server, client(DHCP6_Release, server_id=OURS, ias=((7, (ADDRESS,)),)))
    reply = DHCP6_Reply(answer)
    assert status(reply) == wire.SUCCESS
    assert reply[DHCP6OptIA_NA].ianaopts[0].statuscode == wire.NO_BINDING
    assert events(server) == []


def test_a_decline_ends_the_lease_and_is_logged(caplog):
    server = Lan().server()
    bind(server)
    events(server)
    with caplog.at_level(logging.WARNING, logger="cyphonic.dhcp6"):
        [answer] = send(server, client(DHCP6_Decline, server_id=OURS, ias=((7, (ADDRESS,)),)), 10.0)
    assert status(DHCP6_Reply(answer)) == wire.SUCCESS
    assert events(server) == [LeaseDeclined(NODE, ADDRESS)]
    assert any("declined" in r.getMessage() for r in caplog.records)


def test_an_information_request_gets_dns_servers_and_the_domain_list():
    server = Lan().server()
    [answer] = send(server, client(DHCP6_InfoRequest, ias=()))
    reply = DHCP6_Reply(answer)
    assert reply.msgtype == wire.REPLY and not reply.haslayer(DHCP6OptIA_NA)
    assert reply[DHCP6OptDNSServers].dnsservers == [str(DNS)]
    assert reply[DHCP6OptDNSDomains].dnsdomains == ["lab.example.", "site.lab.example."]
    assert raw(reply[DHCP6OptServerId].duid) == OURS
    assert events(server) == []


def test_an_information_request_with_an_ia_is_dropped():
    server = Lan().server()
    assert send(server, client(DHCP6_InfoRequest)) == []  # §16.12


def test_a_second_ia_na_gets_no_addresses_available():
    server = Lan().server()
    [answer] = send(server, client(DHCP6_Solicit, ias=((1, ()), (2, ()))))
    first, second = [o for o in layers(DHCP6_Advertise(answer)) if isinstance(o, DHCP6OptIA_NA)]
    assert first.iaid == 1 and first.ianaopts[0].addr == str(ADDRESS)
    assert second.iaid == 2 and second.ianaopts[0].statuscode == wire.NO_ADDRS_AVAIL


def test_a_solicit_without_an_ia_na_is_told_no_addresses_are_available():
    server = Lan().server()
    [answer] = send(server, client(DHCP6_Solicit, ias=()))
    assert status(DHCP6_Advertise(answer)) == wire.NO_ADDRS_AVAIL


def test_expired_bindings_are_released():
    server = Lan().server(lifetime=100)
    bind(server)
    events(server)
    server.expire(100.0)
    assert events(server) == [LeaseReleased(NODE, ADDRESS)]


# --- who is answered --------------------------------------------------------------------


def test_relayed_messages_are_dropped():
    server = Lan().server()
    assert send(server, DHCP6_RelayForward(linkaddr="fd00::1", peeraddr="fe80::1")) == []
    assert server.drops.counts["relayed"] == 1


def test_an_unknown_mac_gets_nothing():
    server = Lan().server()
    stranger = bytes.fromhex("02000000beef")
    assert send(server, client(DHCP6_Solicit, stranger), mac=stranger) == []
    assert server.drops.counts["unknown MAC"] == 1 and events(server) == []


def test_a_storm_of_random_macs_leaves_memory_bounded():
    server = Lan().server()
    rng = random.Random(7)
    data = raw(client(DHCP6_Solicit))
    for i in range(10_000):
        assert server.receive(data, bytes([2]) + rng.randbytes(5), float(i)) == []
    assert len(server.unknown) <= 256 and server.drops.counts["unknown MAC"] == 10_000
    assert len(server.waiting) == 0 and server.bindings == {} and events(server) == []


def test_a_held_solicit_is_answered_by_address_ready():
    lan = Lan()
    del lan.addresses[NODE]
    server = lan.server()
    assert send(server, client(DHCP6_Solicit, trid=1), 0.0) == []
    assert send(server, client(DHCP6_Solicit, trid=2), 1.0) == []
    assert events(server) == [AddressNeeded(NODE)]
    lan.addresses[NODE] = ADDRESS
    [answer] = server.address_ready(NODE, 2.0)
    assert DHCP6_Advertise(answer).trid == 2
    assert ia_addresses(DHCP6_Advertise(answer)) == [(str(ADDRESS), 3600, 3600)]


# --- hostile bytes -------------------------------------------------------------------------

VALID = [
    raw(client(DHCP6_Solicit, rapid=True)),
    raw(client(DHCP6_Request, server_id=OURS, ias=((7, (ADDRESS,)),))),
    raw(client(DHCP6_Renew, server_id=OURS, ias=((7, (ADDRESS, OTHER)),))),
    raw(client(DHCP6_Confirm, ias=((7, (ADDRESS,)),))),
    raw(client(DHCP6_Release, server_id=OURS, ias=((7, (ADDRESS,)),))),
    raw(client(DHCP6_InfoRequest, ias=())),
]


def only_parse_errors(server: Dhcp6Server, data: bytes) -> list[bytes]:
    try:
        return server.receive(data, NODE, 0.0)
    except ParseError:
        return []


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_raise_only_parse_error(data):
    only_parse_errors(Lan().server(), data)


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
        DHCP6(reply)  # whatever goes out is a message
