"""The AS under attack: what one datagram, a replay or a broken file on the
AS's disk can and cannot do (hardening issue, findings 1, 3 and 6)."""

from __future__ import annotations

import ipaddress
import sqlite3

import pytest

from cyphonic import crypto
from cyphonic.auth.service import REPLY_TTL, VERIFY_PER_SOURCE, AuthenticationService
from cyphonic.core.login import LoginClient, LoginRefused
from cyphonic.keys import RevocationList
from cyphonic.store import Store
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import parse
from tests.unit.test_services import DOMAIN, NOW, Pki, login

NODE = ("198.51.100.10", 4500)
SPOOFED = ("203.0.113.66", 4500)


@pytest.fixture
def pki():
    return Pki()


def make_auth(pki, tmp_path, revoked=frozenset, certificate=None, nms_key=None):
    store = Store(tmp_path / "as.sqlite", ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_network("fd7c:1f00::/64"))
    return AuthenticationService(
        identity=pki.as_id, certificate=certificate or pki.as_cert, ca_public=pki.ca.sign_public, store=store,
        domain=DOMAIN, nms_key=nms_key or crypto.random_key(), revoked=revoked,
    )


def request_with_certificate(pki, certificate: bytes) -> bytes:
    _, ident = pki.issue("mn")
    return LoginClient(ident, certificate, pki.ca.sign_public, NOW).request


@pytest.mark.parametrize("certificate", [b"", b"\x01", b"\x01" + bytes(200), b"\xff" * 300])
def test_a_login_request_whose_certificate_does_not_parse_is_a_counted_drop(pki, tmp_path, certificate):
    auth = make_auth(pki, tmp_path)
    assert auth.receive(request_with_certificate(pki, certificate), NODE, NOW) == []
    assert auth.drops.counts["malformed login request"] == 1
    assert login(auth, pki, "mn").fqdn == f"mn.{DOMAIN}"  # and the AS goes on serving


def test_a_malformed_revocation_list_refuses_every_login_until_it_is_fixed(pki, tmp_path):
    path = tmp_path / "revoked.txt"
    path.write_text("# revoked\n12\nnot-a-serial\n")
    auth = make_auth(pki, tmp_path, revoked=RevocationList(path))
    with pytest.raises(LoginRefused) as info:
        login(auth, pki, "mn")
    assert info.value.reason == "unavailable"
    assert auth.store.lookup(f"mn.{DOMAIN}") is None  # fail closed: nobody got in
    path.write_text("# revoked\n12\n")
    assert login(auth, pki, "mn", now=NOW + 1).fqdn == f"mn.{DOMAIN}"


def test_the_revocation_list_applies_once_it_is_fixed(pki, tmp_path):
    path = tmp_path / "revoked.txt"
    path.write_text("x\n")
    auth = make_auth(pki, tmp_path, revoked=RevocationList(path))
    cert = pki.issue("gone", serial=77)
    with pytest.raises(LoginRefused):
        login(auth, pki, "gone", cert)
    path.write_text("77\n")
    with pytest.raises(LoginRefused) as info:
        login(auth, pki, "gone", cert, now=NOW + 1)
    assert info.value.reason == "revoked"


def test_a_locked_database_is_a_signed_unavailable_and_the_as_keeps_serving(pki, tmp_path):
    auth = make_auth(pki, tmp_path)
    locker = sqlite3.connect(str(tmp_path / "as.sqlite"), isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(LoginRefused) as info:
        login(auth, pki, "mn")
    assert info.value.reason == "unavailable"
    locker.execute("ROLLBACK")
    locker.close()
    assert login(auth, pki, "mn", now=NOW + 1).fqdn == f"mn.{DOMAIN}"


def test_a_cached_answer_goes_only_to_the_source_it_answered(pki, tmp_path):
    auth = make_auth(pki, tmp_path)
    cert, ident = pki.issue("mn")
    client = LoginClient(ident, cert, pki.ca.sign_public, NOW)
    [first] = auth.receive(client.request, NODE, NOW)
    assert auth.receive(client.request, NODE, NOW + 1) == [first]  # a retransmission, to the same source
    assert auth.receive(client.request, SPOOFED, NOW + 1) == []  # a reflection attempt
    assert auth.drops.counts["replayed login request"] == 1
    assert auth.logins == 1


def test_a_cached_answer_lasts_only_as_long_as_a_node_retransmits(pki, tmp_path):
    auth = make_auth(pki, tmp_path)
    cert, ident = pki.issue("mn")
    client = LoginClient(ident, cert, pki.ca.sign_public, NOW)
    assert auth.receive(client.request, NODE, NOW) != []
    # later, even from the same source, a replay gets nothing and no session
    assert auth.receive(client.request, NODE, NOW + 60) == []
    assert auth.logins == 1


def test_the_timer_forgets_cached_answers_once_a_node_no_longer_retransmits(pki, tmp_path):
    auth = make_auth(pki, tmp_path)
    assert auth.next_timer() is None
    cert, ident = pki.issue("mn")
    client = LoginClient(ident, cert, pki.ca.sign_public, NOW)
    [first] = auth.receive(client.request, NODE, NOW)
    assert auth.next_timer() == NOW + REPLY_TTL
    assert auth.handle_timer(NOW + REPLY_TTL - 1) == []
    assert auth.receive(client.request, NODE, NOW + REPLY_TTL - 1) == [first]  # still retransmitting
    assert auth.handle_timer(NOW + REPLY_TTL) == []
    assert auth.next_timer() is None
    assert auth.receive(client.request, NODE, NOW + REPLY_TTL) == []  # now a replay
    assert auth.logins == 1


def test_a_refusal_is_never_larger_than_the_request_that_drew_it(pki, tmp_path):
    # an AS whose own certificate is long: a refusal carries it
    long_as = pki.issue("a" * 120, "authority", pki.as_id)
    auth = make_auth(pki, tmp_path, certificate=long_as)
    foreign = crypto.Identity.generate()
    cert, ident = pki.issue("x", ca=foreign)
    request = LoginClient(ident, cert, pki.ca.sign_public, NOW).request
    assert auth.receive(request, SPOOFED, NOW) == []
    assert auth.drops.counts["refusal larger than the request"] == 1
    # a refusal that fits is still sent, and signed
    (tmp_path / "other").mkdir()
    [(reply, dest)] = make_auth(pki, tmp_path / "other").receive(request, NODE, NOW)
    assert dest == NODE and len(reply) <= len(request)


def test_an_unauthenticated_source_has_a_budget_of_signature_checks(pki, tmp_path):
    auth = make_auth(pki, tmp_path)
    cert, _ = pki.issue("mn")
    impostor = crypto.Identity.generate()  # signs with a key the certificate does not name
    answered = 0
    for _ in range(200):
        request = LoginClient(impostor, cert, pki.ca.sign_public, NOW).request
        answered += len(auth.receive(request, SPOOFED, NOW))
    rate, burst = VERIFY_PER_SOURCE
    assert answered == burst
    assert auth.drops.counts["verification budget exhausted"] == 200 - burst
    # another source is unaffected, and the budget refills with time
    assert login(auth, pki, "mn").fqdn == f"mn.{DOMAIN}"
    request = LoginClient(impostor, cert, pki.ca.sign_public, NOW + 1).request
    assert auth.receive(request, SPOOFED, NOW + 1) != []


def test_a_ticket_never_outlives_the_certificate(pki, tmp_path):
    nms_key = crypto.random_key()
    auth = make_auth(pki, tmp_path, nms_key=nms_key)
    cert, ident = pki.issue("mn", start=NOW - 3600, days=0.5)  # not_after in 11 hours
    grant = login(auth, pki, "mn", (cert, ident))
    body = parse(crypto.wire_cert.Certificate, cert).body.value
    ticket = parse(wire.Ticket, crypto.open_sealed(nms_key, grant.ticket))
    assert grant.expires == ticket.expires == body.not_after
    assert ticket.serial == body.serial
    assert ticket.issued == int(NOW * 1_000_000)
