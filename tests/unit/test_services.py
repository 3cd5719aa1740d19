"""AS and NMS logic driven step by step, with `now` passed in (no sockets)."""

from __future__ import annotations

import ipaddress
import secrets

import pytest

from cyphonic import crypto
from cyphonic.auth.service import AuthenticationService
from cyphonic.core.login import LoginClient, LoginRefused
from cyphonic.nms.service import ATTEMPTS, NodeManagementService
from cyphonic.store import Store
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import build, locator, parse

NOW = 1_800_000_000.0
DOMAIN = "cyphonic.test"


class Pki:
    def __init__(self) -> None:
        self.ca = crypto.Identity.generate()
        self.as_id = crypto.Identity.generate()
        self.as_cert = self.issue("as", "authority", self.as_id)
        self.revoked: set[int] = set()

    def issue(self, name, role="node", ident=None, start=NOW - 60, days=1, ca=None, serial=None):
        ident = ident or crypto.Identity.generate()
        cert = crypto.issue_certificate(
            ca or self.ca, serial=serial or secrets.randbits(63), role=role, fqdn=f"{name}.{DOMAIN}",
            sign_key=ident.sign_public, dh_key=ident.dh_public, not_before=int(start), not_after=int(start + days * 86400),
        )
        return cert if role == "authority" else (cert, ident)


@pytest.fixture
def pki():
    return Pki()


@pytest.fixture
def nms_key():
    return crypto.random_key()


@pytest.fixture
def auth(pki, nms_key, tmp_path):
    store = Store(tmp_path / "as.sqlite", ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_network("fd7c:1f00::/64"))
    return AuthenticationService(
        identity=pki.as_id, certificate=pki.as_cert, ca_public=pki.ca.sign_public, store=store,
        domain=DOMAIN, nms_key=nms_key, revoked=lambda: frozenset(pki.revoked),
    )


def login(auth, pki, name, cert_ident=None, now=NOW):
    cert, ident = cert_ident or pki.issue(name)
    client = LoginClient(ident, cert, pki.ca.sign_public, now)
    [(reply, dest)] = auth.receive(client.request, ("198.51.100.10", 4500), now)
    assert dest == ("198.51.100.10", 4500)
    return client.accept(reply, now)


def test_login_assigns_virtual_ips_that_survive_a_restart(auth, pki, tmp_path, nms_key):
    cert = pki.issue("mn")
    grant = login(auth, pki, "mn", cert)
    assert grant.fqdn == f"mn.{DOMAIN}" and grant.vip4 in ipaddress.ip_network("10.96.0.0/16")
    auth.store.close()
    store = Store(tmp_path / "as.sqlite", ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_network("fd7c:1f00::/64"))
    again = AuthenticationService(
        identity=pki.as_id, certificate=pki.as_cert, ca_public=pki.ca.sign_public, store=store,
        domain=DOMAIN, nms_key=nms_key, revoked=frozenset,
    )
    second = login(again, pki, "mn", cert, now=NOW + 10)
    assert (second.vip4, second.vip6) == (grant.vip4, grant.vip6)
    assert second.session_key != grant.session_key
    other = login(again, pki, "cn", now=NOW + 10)
    assert other.vip4 != grant.vip4


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: p.issue("x", ca=crypto.Identity.generate()), "unknown_ca"),
        (lambda p: p.issue("x", start=NOW - 10 * 86400), "expired"),
        (lambda p: p.issue("x", start=NOW + 86400), "not_yet_valid"),
        (lambda p: p.issue("x", serial=42) if p.revoked.add(42) is None else None, "revoked"),
    ],
)
def test_bad_certificates_are_refused_with_the_reason(auth, pki, make, reason):
    with pytest.raises(LoginRefused) as info:
        login(auth, pki, "x", make(pki))
    assert info.value.reason == reason
    assert auth.refusals == 1 and auth.store.lookup(f"x.{DOMAIN}") is None


def test_a_request_signed_by_another_key_is_refused(auth, pki):
    cert, _ = pki.issue("mn")
    client = LoginClient(crypto.Identity.generate(), cert, pki.ca.sign_public, NOW)
    with pytest.raises(LoginRefused) as info:
        client.accept(auth.receive(client.request, ("1.2.3.4", 1), NOW)[0][0], NOW)
    assert info.value.reason == "bad_signature"


def test_a_stale_request_is_refused(auth, pki):
    cert, ident = pki.issue("mn")
    client = LoginClient(ident, cert, pki.ca.sign_public, NOW - 3600)
    with pytest.raises(LoginRefused):
        client.accept(auth.receive(client.request, ("1.2.3.4", 1), NOW)[0][0], NOW)


def test_retransmitted_login_gets_the_same_answer(auth, pki):
    cert, ident = pki.issue("mn")
    client = LoginClient(ident, cert, pki.ca.sign_public, NOW)
    [first] = auth.receive(client.request, ("1.2.3.4", 1), NOW)
    assert auth.receive(client.request, ("1.2.3.4", 1), NOW + 1) == [first]
    assert auth.logins == 1


def test_a_forged_login_answer_does_not_verify(auth, pki):
    cert, ident = pki.issue("mn")
    client = LoginClient(ident, cert, pki.ca.sign_public, NOW)
    [(reply, _)] = auth.receive(client.request, ("1.2.3.4", 1), NOW)
    reply = bytearray(reply)
    reply[-70] ^= 1
    with pytest.raises(crypto.AuthenticationError):
        client.accept(bytes(reply), NOW)


# --- NMS -------------------------------------------------------------------------


class NodeStub:
    """What a node sends to the NMS, built from a grant-like ticket."""

    def __init__(self, nms_key: bytes, name: str, vip: int, serial: int = 1000, issued: float = NOW - 10) -> None:
        self.fqdn = f"{name}.{DOMAIN}"
        self.nms_key, self.vip, self.serial = nms_key, vip, serial
        self.vip4 = ipaddress.IPv4Address("10.96.0.0") + vip
        self.login(issued)

    def login(self, issued: float) -> None:
        """A new ticket and session key, as a fresh login at the AS gives."""
        self.session_key = crypto.random_key()
        self.ticket = crypto.seal(self.nms_key, build(wire.Ticket, dict(
            fqdn=self.fqdn, vip4=self.vip4.packed, vip6=(ipaddress.IPv6Address("fd7c:1f00::") + self.vip).packed,
            session_key=self.session_key, expires=int(NOW + 86400), serial=self.serial, issued=int(issued * 1e6))))

    def request(self, type_: str, body: bytes, txid: int | None = None) -> bytes:
        header = build(wire.NmsRequest, dict(header=dict(type=type_, txid=txid or secrets.randbits(32)), ticket=self.ticket, sealed=b""))
        return header + crypto.seal(self.session_key, body, header)

    def registration(self, sequence: int, *addresses: tuple[str, int]) -> bytes:
        return self.request("RegistrationRequest", build(wire.RegistrationBody, dict(
            sequence=sequence, locators=[locator(*a) for a in addresses])))

    def open(self, datagram: bytes):
        msg = parse(wire.NmsReply, datagram)
        plain = crypto.open_sealed(self.session_key, bytes(msg.sealed), datagram[: len(datagram) - len(msg.sealed)])
        return str(msg.header.type), plain


MN = ("198.51.100.10", 4500)
CN_PRIVATE = ("192.168.20.10", 4500)
CN_PUBLIC = ("192.0.2.10", 4500)


def test_registration_detects_nat_from_the_observed_source(nms_key):
    nms = NodeManagementService(nms_key)
    mn, cn = NodeStub(nms_key, "mn", 2), NodeStub(nms_key, "cn", 3)
    [(reply, dest)] = nms.receive(mn.registration(1, MN), MN, NOW)
    assert dest == MN and parse(wire.RegistrationAck, mn.open(reply)[1]).nat is False
    [(reply, _)] = nms.receive(cn.registration(1, CN_PRIVATE), CN_PUBLIC, NOW)
    ack = parse(wire.RegistrationAck, cn.open(reply)[1])
    assert ack.nat is True and bytes(ack.observed.address) == ipaddress.ip_address(CN_PUBLIC[0]).packed


def test_a_replayed_registration_never_moves_a_locator(nms_key):
    nms = NodeManagementService(nms_key)
    mn = NodeStub(nms_key, "mn", 2)
    old = mn.registration(1, MN)
    nms.receive(old, MN, NOW)
    nms.receive(mn.registration(2, MN), MN, NOW + 1)
    assert nms.receive(old, ("203.0.113.66", 9999), NOW + 2) == []
    assert nms.registry[mn.fqdn].endpoints.by_family["ipv4"].observed == MN
    assert nms.drops.counts["replayed request from another address"] == 1
    # and a replay of a request whose answer is no longer cached is stale
    nms._replies.clear()
    assert nms.receive(old, ("203.0.113.66", 9999), NOW + 40) == []
    assert nms.drops.counts["stale registration"] == 1
    assert nms.registry[mn.fqdn].endpoints.by_family["ipv4"].observed == MN


def test_garbage_and_foreign_tickets_are_dropped(nms_key):
    nms = NodeManagementService(nms_key)
    stranger = NodeStub(crypto.random_key(), "evil", 9)
    assert nms.receive(stranger.registration(1, MN), MN, NOW) == []
    assert nms.receive(b"\x10\x01\x00", MN, NOW) == []
    assert nms.registry == {} and nms.drops.total() == 2


def direction(node: NodeStub, target: str, txid: int = 7, at: float = NOW) -> bytes:
    return node.request("DirectionRequest", build(wire.DirectionRequestBody, dict(timestamp=int(at), target=target)), txid)


def route_ack(path_id: int, at: float = NOW) -> bytes:
    return build(wire.AckBody, dict(timestamp=int(at), path_id=path_id))


def test_route_selection_tells_cn_first_and_answers_mn_after_its_ack(nms_key):
    nms = NodeManagementService(nms_key)
    mn, cn = NodeStub(nms_key, "mn", 2), NodeStub(nms_key, "cn", 3)
    nms.receive(mn.registration(1, MN), MN, NOW)
    nms.receive(cn.registration(1, CN_PRIVATE), CN_PUBLIC, NOW)
    [(to_cn, dest)] = nms.receive(direction(mn, cn.fqdn), MN, NOW)
    assert dest == CN_PUBLIC
    kind, body = cn.open(to_cn)
    route = parse(wire.RouteDirectionBody, body)
    assert kind == "RouteDirectionToCN" and str(route.process) == "TunnelRequestToNATcn" and str(route.role) == "initiator"
    # retransmitted direction request while waiting: nothing new
    assert nms.receive(direction(mn, cn.fqdn), MN, NOW + 0.1) == []
    # an ack from someone else than CN is ignored
    ack = route_ack(route.path_id)
    assert nms.receive(mn.request("RouteDirectionAck", ack), MN, NOW + 0.1) == []
    [(to_mn, dest)] = nms.receive(cn.request("RouteDirectionAck", ack), CN_PUBLIC, NOW + 0.2)
    kind, body = mn.open(to_mn)
    mine = parse(wire.RouteDirectionBody, body)
    assert dest == MN and kind == "RouteDirection" and str(mine.role) == "responder"
    assert mine.path_id == route.path_id and bytes(mine.tunnel_key) == bytes(route.tunnel_key)
    assert nms.receive(direction(mn, cn.fqdn), MN, NOW + 0.3) == [(to_mn, MN)]  # duplicate: same answer


def test_a_silent_cn_gets_retries_then_the_mn_hears_unreachable(nms_key):
    nms = NodeManagementService(nms_key)
    mn, cn = NodeStub(nms_key, "mn", 2), NodeStub(nms_key, "cn", 3)
    nms.receive(mn.registration(1, MN), MN, NOW)
    nms.receive(cn.registration(1, ("192.0.2.10", 4500)), ("192.0.2.10", 4500), NOW)
    [(first, _)] = nms.receive(direction(mn, cn.fqdn), MN, NOW)
    now, resent = NOW, []
    while nms.pending:
        now = nms.next_timer()
        resent += nms.handle_timer(now)
    assert [d for d, _ in resent[:-1]] == [first] * (ATTEMPTS - 1)
    kind, body = mn.open(resent[-1][0])
    assert kind == "SignalingError" and str(parse(wire.SignalingErrorBody, body).code) == "unreachable"
    assert now - NOW < 10


def test_unknown_and_unregistered_get_their_errors(nms_key):
    nms = NodeManagementService(nms_key)
    mn = NodeStub(nms_key, "mn", 2)
    [(reply, _)] = nms.receive(direction(mn, f"cn.{DOMAIN}", 1), MN, NOW)
    assert str(parse(wire.SignalingErrorBody, mn.open(reply)[1]).code) == "not_registered"
    nms.receive(mn.registration(1, MN), MN, NOW)
    [(reply, _)] = nms.receive(direction(mn, f"nobody.{DOMAIN}", 2), MN, NOW)
    assert str(parse(wire.SignalingErrorBody, mn.open(reply)[1]).code) == "unknown_peer"


def test_registrations_expire_without_refresh(nms_key):
    nms = NodeManagementService(nms_key, refresh=10)
    mn = NodeStub(nms_key, "mn", 2)
    nms.receive(mn.registration(1, MN), MN, NOW)
    assert [n["fqdn"] for n in nms.status(NOW + 29)] == [mn.fqdn]
    assert nms.status(NOW + 31) == []


# --- NMS: relayed routes ------------------------------------------------------------

from cyphonic.core.relay import RelayService  # noqa: E402
from cyphonic.wire import relay as relay_wire  # noqa: E402

TRS1, TRS2 = ("203.0.113.20", 7002), ("203.0.113.21", 7002)
A1 = ("192.0.2.20", 4500)
B1 = ("192.0.2.30", 4500)


def natted_pair(nms, nms_key):
    a, b = NodeStub(nms_key, "a1", 4), NodeStub(nms_key, "b1", 5)
    nms.receive(a.registration(1, ("192.168.10.10", 4500)), A1, NOW)
    nms.receive(b.registration(1, ("192.168.11.10", 4500)), B1, NOW)
    return a, b


def test_both_behind_napt_gets_a_relay_session_then_the_route(nms_key):
    trs_key = crypto.random_key()
    nms = NodeManagementService(nms_key, trs=[TRS1], trs_key=trs_key)
    trs = RelayService(trs_key, [TRS1])
    a, b = natted_pair(nms, nms_key)
    [(request, dest)] = nms.receive(direction(a, b.fqdn), A1, NOW)
    assert dest == TRS1
    [(response, back)] = trs.receive(request, ("203.0.113.10", 7001), NOW)
    [(to_cn, dest)] = nms.receive(response, TRS1, NOW)
    kind, body = b.open(to_cn)
    route = parse(wire.RouteDirectionBody, body)
    assert dest == B1 and str(route.process) == "TunnelRequestToTRS" and str(route.role) == "responder"
    assert bytes(route.temporary_key) != bytes(32) and bytes(route.peer_locator.address) == bytes([203, 0, 113, 20])
    session = trs.sessions[route.path_id]
    assert session.seal_key == crypto.relay_keys(bytes(route.tunnel_key))[0]
    ack = route_ack(route.path_id)
    [(to_mn, dest)] = nms.receive(b.request("RouteDirectionAck", ack), B1, NOW)
    mine = parse(wire.RouteDirectionBody, a.open(to_mn)[1])
    assert dest == A1 and str(mine.role) == "initiator" and bytes(mine.temporary_key) == bytes(route.temporary_key)


def test_a_silent_trs_is_skipped_and_never_assigned_while_dead(nms_key):
    trs_key = crypto.random_key()
    nms = NodeManagementService(nms_key, trs=[TRS1, TRS2], trs_key=trs_key)
    nms.relays.next_probe = float("inf")  # this test is about failed requests, not probes
    a, b = natted_pair(nms, nms_key)
    [(_, first)] = nms.receive(direction(a, b.fqdn, 1), A1, NOW)
    now, sent = NOW, []
    while True:
        now = nms.next_timer()
        out = nms.handle_timer(now)
        sent += out
        if any(dest != first for _, dest in out):
            break
    second = ({TRS1, TRS2} - {first}).pop()
    assert [dest for _, dest in sent] == [first, first, second]
    assert nms.relays.healthy(now) == [second]
    # a new route selection (another pair) goes straight to the healthy one
    c = NodeStub(nms_key, "c1", 6)
    nms.receive(c.registration(1, ("192.168.12.10", 4500)), ("192.0.2.40", 4500), now)
    [(_, dest)] = nms.receive(direction(a, c.fqdn, 2, at=now), A1, now)
    assert dest == second


def test_no_trs_answers_means_unreachable(nms_key):
    nms = NodeManagementService(nms_key, trs=[TRS1], trs_key=crypto.random_key())
    nms.relays.next_probe = float("inf")
    a, b = natted_pair(nms, nms_key)
    nms.receive(direction(a, b.fqdn), A1, NOW)
    out, now = [], NOW
    while not out or out[-1][1] != A1:
        now = nms.next_timer()
        out += nms.handle_timer(now)
    kind, body = a.open(out[-1][0])
    assert kind == "SignalingError" and str(parse(wire.SignalingErrorBody, body).code) == "unreachable"


def test_a_forged_relay_response_is_dropped(nms_key):
    nms = NodeManagementService(nms_key, trs=[TRS1], trs_key=crypto.random_key())
    a, b = natted_pair(nms, nms_key)
    nms.receive(direction(a, b.fqdn), A1, NOW)
    header = build(relay_wire.RelayResponse, dict(header=dict(type="RelayResponse", txid=1), sealed=b""))
    forged = header + crypto.seal(crypto.random_key(), b"x" * 40, header)
    assert nms.receive(forged, TRS1, NOW) == []
    assert nms.drops.counts["bad relay response"] == 1


def test_health_probes_mark_a_silent_trs_dead_and_a_recovered_one_alive(nms_key):
    trs_key = crypto.random_key()
    nms = NodeManagementService(nms_key, trs=[TRS1, TRS2], trs_key=trs_key)
    alive = RelayService(trs_key, [TRS1])
    probes = nms.relays.probes(NOW)
    assert sorted(dest for _, dest in probes) == sorted([TRS1, TRS2])
    for probe, dest in probes:
        if dest == TRS1:  # only TRS1 answers
            [(answer, _)] = alive.receive(probe, ("203.0.113.10", 7001), NOW)
            assert nms.receive(answer, TRS1, NOW) == []
    assert alive.sessions == {}  # a probe leaves no session behind
    nms.relays.probes(NOW + 5)  # TRS2 missed the last probe
    assert nms.relays.healthy(NOW + 5) == [TRS1]
    a, b = natted_pair(nms, nms_key)
    [(_, dest)] = nms.receive(direction(a, b.fqdn), A1, NOW + 5)
    assert dest == TRS1
