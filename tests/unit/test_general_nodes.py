"""General nodes: the AS's record of which adapter serves which, the Node
Information Request/Response that hands an adapter its list, the login
rule for `general` certificates (the operator's commands:
test_adapter_enrollment.py)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import nacl.bindings
import pytest

from cyphonic import crypto
from cyphonic import store as store_module
from cyphonic.auth.service import REPLY_TTL, AuthenticationService
from cyphonic.core.login import LoginClient, LoginRefused
from cyphonic.core.node_information import GeneralNodeInfo, NodeInformationClient
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.keys import RevocationList
from cyphonic.store import GeneralNodeConflict, Store, canonical_mac
from cyphonic.wire import signaling as wire
from cyphonic.wire.common import build, parse
from tests.unit.test_services import DOMAIN, NOW, Pki, login
from tests.unit.test_wire_vectors import message, raw

ADAPTER = ("198.51.100.20", 4500)
ELSEWHERE = ("203.0.113.66", 4500)
TV, CAM, LAMP = "02:00:5e:00:53:01", "02:00:5e:00:53:02", "02:00:5e:00:53:03"


@pytest.fixture
def pki():
    return Pki()


def make_auth(pki, tmp_path, revoked=None) -> AuthenticationService:
    store = Store(tmp_path / "as.sqlite", ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_network("fd7c:1f00::/64"))
    return AuthenticationService(
        identity=pki.as_id,
        certificate=pki.as_cert,
        ca_public=pki.ca.sign_public,
        store=store,
        domain=DOMAIN,
        nms_key=crypto.random_key(),
        revoked=revoked or (lambda: frozenset(pki.revoked)),
    )


@pytest.fixture
def auth(pki, tmp_path):
    return make_auth(pki, tmp_path)


def ask(auth, pki, cert_ident, source=ADAPTER, now=NOW) -> list[GeneralNodeInfo]:
    """The adapter's Node Information Request, answered and accepted
    (`pki`: the test PKI, or the CA's public key)."""
    cert, ident = cert_ident
    ca_public = pki if isinstance(pki, bytes) else pki.ca.sign_public
    client = NodeInformationClient(ident, cert, ca_public, now)
    [(reply, dest)] = auth.receive(client.request, source, now)
    assert dest == source and client.matches(reply)
    return client.accept(reply, now)


def serve(auth, adapter: str, *nodes: tuple[str, str, bool]) -> None:
    for mac, name, ipv6 in nodes:
        auth.store.add_general_node(mac, f"{name}.{DOMAIN}", f"{adapter}.{DOMAIN}", ipv6)


# --- the AS ---------------------------------------------------------------------------


def test_the_as_answers_an_adapter_with_its_own_general_nodes_only(auth, pki):
    serve(auth, "hall", (TV, "tv", True), (CAM, "cam", False))
    serve(auth, "shed", (LAMP, "lamp", False))
    hall = ask(auth, pki, pki.issue("hall", "adapter"))
    assert [(g.mac, g.fqdn, g.ipv6) for g in hall] == [
        (bytes.fromhex("02005e005302"), f"cam.{DOMAIN}", False),
        (bytes.fromhex("02005e005301"), f"tv.{DOMAIN}", True),
    ]
    for g in hall:
        enrollment = auth.store.lookup(g.fqdn)
        vip6 = enrollment.vip6 if g.ipv6 else ipaddress.IPv6Address("::")  # no IPv6: no virtual IPv6
        assert (g.vip4, g.vip6) == (enrollment.vip4, vip6)
    [shed] = ask(auth, pki, pki.issue("shed", "adapter"))
    assert shed.fqdn == f"lamp.{DOMAIN}" and shed.vip4 not in {g.vip4 for g in hall}
    assert ask(auth, pki, pki.issue("attic", "adapter")) == []
    assert auth.node_informations == 3 and auth.logins == 0


def test_a_general_node_keeps_the_virtual_ips_its_adapter_was_told(auth, pki):
    serve(auth, "hall", (TV, "tv", False))
    [listed] = ask(auth, pki, pki.issue("hall", "adapter"))
    grant = login(auth, pki, "tv", pki.issue("tv", "general"))
    assert (grant.fqdn, grant.vip4, grant.vip6) == (listed.fqdn, listed.vip4, listed.vip6)
    [again] = ask(auth, pki, pki.issue("hall", "adapter"), now=NOW + 1)
    assert again == listed


@pytest.mark.parametrize("role", ["node", "general"])
def test_a_node_or_general_certificate_asking_is_refused(auth, pki, role):
    serve(auth, "hall", (TV, "tv", False))
    cert_ident = pki.issue("tv" if role == "general" else "mn", role)
    with pytest.raises(LoginRefused) as info:
        ask(auth, pki, cert_ident)
    assert info.value.reason == "wrong_role"
    assert auth.drops.counts["node information refused"] == 1 and auth.node_informations == 0


def test_a_replayed_node_information_request_from_another_source_gets_nothing(auth, pki):
    serve(auth, "hall", (TV, "tv", False))
    cert, ident = pki.issue("hall", "adapter")
    client = NodeInformationClient(ident, cert, pki.ca.sign_public, NOW)
    [first] = auth.receive(client.request, ADAPTER, NOW)
    assert auth.receive(client.request, ADAPTER, NOW + 1) == [first]  # a retransmission
    assert auth.receive(client.request, ELSEWHERE, NOW + 1) == []  # a reflection attempt
    assert auth.receive(client.request, ADAPTER, NOW + REPLY_TTL + 1) == []  # later: a replay
    assert auth.drops.counts["replayed node information request"] == 2
    assert auth.node_informations == 1


def test_a_login_nonce_cannot_be_spent_again_on_node_information(auth, pki):
    cert, ident = pki.issue("hall", "adapter")
    login_client = LoginClient(ident, cert, pki.ca.sign_public, NOW)
    assert auth.receive(login_client.request, ADAPTER, NOW) != []
    fields = dict(
        header=dict(type="NodeInformationRequest", txid=1),
        certificate=cert,
        nonce=login_client.nonce,  # a nonce is spent once, whatever it was spent on
        timestamp=int(NOW),
        ephemeral=crypto.Ephemeral().public,
        signature=bytes(64),
    )
    body = build(wire.NodeInformationRequest, fields)[:-64]
    assert auth.receive(body + ident.sign(body), ADAPTER, NOW) == []
    assert auth.drops.counts["replayed node information request"] == 1


def test_macs_and_names_are_not_readable_on_the_wire(auth, pki):
    serve(auth, "hall", (TV, "television", True))
    cert, ident = pki.issue("hall", "adapter")
    client = NodeInformationClient(ident, cert, pki.ca.sign_public, NOW)
    [(reply, _)] = auth.receive(client.request, ADAPTER, NOW)
    assert bytes.fromhex("02005e005301") not in reply and b"television" not in reply
    [node] = client.accept(reply, NOW)
    assert node.fqdn == f"television.{DOMAIN}"


def test_a_truncated_node_information_request_is_a_counted_drop(auth, pki):
    cert, ident = pki.issue("hall", "adapter")
    request = NodeInformationClient(ident, cert, pki.ca.sign_public, NOW).request
    for cut in (1, 6, 100, len(request) - 1):
        assert auth.receive(request[:cut], ADAPTER, NOW) == []
    assert auth.drops.counts["malformed node information request"] == 4
    assert ask(auth, pki, (cert, ident)) == []  # and the AS goes on serving


def test_a_revoked_adapter_gets_a_signed_refusal(auth, pki):
    serve(auth, "hall", (TV, "tv", False))
    cert_ident = pki.issue("hall", "adapter", serial=4242)
    pki.revoked.add(4242)
    with pytest.raises(LoginRefused) as info:
        ask(auth, pki, cert_ident)
    assert info.value.reason == "revoked"


def test_an_unreadable_revocation_list_lists_nothing(pki, tmp_path):
    path = tmp_path / "revoked.txt"
    path.write_text("garbage\n")
    auth = make_auth(pki, tmp_path, revoked=RevocationList(path))
    serve(auth, "hall", (TV, "tv", False))
    with pytest.raises(LoginRefused) as info:
        ask(auth, pki, pki.issue("hall", "adapter"))
    assert info.value.reason == "unavailable"
    path.write_text("# nothing revoked\n")
    assert len(ask(auth, pki, pki.issue("hall", "adapter"), now=NOW + 1)) == 1


def test_a_general_node_not_enrolled_under_an_adapter_cannot_log_in(auth, pki):
    with pytest.raises(LoginRefused) as info:
        login(auth, pki, "stray", pki.issue("stray", "general"))
    assert info.value.reason == "wrong_role"
    assert auth.store.lookup(f"stray.{DOMAIN}") is None


def test_a_general_node_enrolled_under_an_adapter_logs_in(auth, pki):
    serve(auth, "hall", (TV, "tv", False))
    assert login(auth, pki, "tv", pki.issue("tv", "general")).fqdn == f"tv.{DOMAIN}"


def test_a_removed_general_node_cannot_log_in(auth, pki):
    serve(auth, "hall", (TV, "tv", False))
    cert_ident = pki.issue("tv", "general")
    first = login(auth, pki, "tv", cert_ident)
    assert auth.store.remove_general_node(f"tv.{DOMAIN}").mac == TV
    with pytest.raises(LoginRefused) as info:
        login(auth, pki, "tv", cert_ident, now=NOW + 1)
    assert info.value.reason == "wrong_role"
    assert ask(auth, pki, pki.issue("hall", "adapter"), now=NOW + 1) == []
    assert auth.store.lookup(f"tv.{DOMAIN}").vip4 == first.vip4  # its addresses stay its own


def test_nodes_and_adapters_still_log_in(auth, pki):
    assert login(auth, pki, "mn").fqdn == f"mn.{DOMAIN}"
    assert login(auth, pki, "hall", pki.issue("hall", "adapter")).fqdn == f"hall.{DOMAIN}"


# --- the adapter's client ----------------------------------------------------------------


def test_the_client_accepts_only_an_answer_to_its_own_request(auth, pki):
    serve(auth, "hall", (TV, "tv", False))
    cert, ident = pki.issue("hall", "adapter")
    mine = NodeInformationClient(ident, cert, pki.ca.sign_public, NOW)
    other = NodeInformationClient(ident, cert, pki.ca.sign_public, NOW)
    [(reply, _)] = auth.receive(other.request, ADAPTER, NOW)
    assert not mine.matches(reply) and other.matches(reply)
    with pytest.raises(AuthenticationError):  # signed over the other request's nonce
        mine.accept(reply, NOW)
    tampered = bytearray(reply)
    tampered[-70] ^= 1  # inside the sealed list
    with pytest.raises(AuthenticationError):
        other.accept(bytes(tampered), NOW)
    with pytest.raises(ParseError):
        other.accept(reply[:-1], NOW)
    with pytest.raises(ParseError):
        other.accept(b"", NOW)


def test_the_client_refuses_an_answer_from_a_certificate_that_is_no_authority(auth, pki):
    cert, ident = pki.issue("hall", "adapter")
    client = NodeInformationClient(ident, cert, pki.ca.sign_public, NOW)
    impostor_cert, impostor = pki.issue("as", "node")  # same CA, same name, but no authority
    auth.identity, auth.certificate = impostor, impostor_cert
    [(reply, _)] = auth.receive(client.request, ADAPTER, NOW)
    with pytest.raises(AuthenticationError) as info:
        client.accept(reply, NOW)
    assert info.value.reason == "AS certificate: wrong role"


# --- the golden vectors -------------------------------------------------------------------


def test_the_node_information_response_vector_is_signed_over_the_nonce_and_opens_to_the_list():
    vector = message("authentication", "Node Information Response")
    data = raw("authentication", "Node Information Response")
    request = message("authentication", "Node Information Request")["fields"]
    signed = vector["signed_over_nonce"]
    assert bytes.fromhex(signed["data"]) == bytes.fromhex(request["nonce"]) + data[:-64]
    crypto.verify_signature(bytes.fromhex(signed["public"]), bytes.fromhex(signed["data"]), data[-64:])
    sealed = vector["sealed_with_login_key"]
    opened = crypto.open_sealed(bytes.fromhex(sealed["key"]), bytes.fromhex(vector["fields"]["sealed"]))
    assert opened == raw("authentication", sealed["plaintext"])
    body = parse(wire.NodeInformationBody, opened)
    assert [(bytes(n.mac).hex(), n.fqdn, n.ipv6) for n in body.nodes] == [
        ("02005e005301", "tv.cyphonic.example", True),
        ("02005e005302", "cam.cyphonic.example", False),
    ]


def test_the_node_information_key_is_the_login_key_of_the_exchange():
    doc = json.loads((Path(__file__).parents[2] / "protocols" / "vectors" / "authentication.json").read_text())
    request = message("authentication", "Node Information Request")["fields"]
    response = message("authentication", "Node Information Response")
    adapter_secret = bytes.fromhex(doc["inputs"]["adapter_information_ephemeral_secret"])
    shared = nacl.bindings.crypto_scalarmult(adapter_secret, bytes.fromhex(response["fields"]["ephemeral"]))
    assert shared.hex() == doc["derived"]["information_shared"]
    key = crypto.login_key(shared, bytes.fromhex(request["nonce"]))
    assert key.hex() == doc["derived"]["information_key"] == response["sealed_with_login_key"]["key"]


# --- the store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, canonical",
    [("02:00:5E:00:53:01", TV), ("02-00-5e-00-53-01", TV), (" 02:00:5e:00:53:01 ", TV)],
)
def test_macs_are_kept_in_one_form(text, canonical):
    assert canonical_mac(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "02:00:5e:00:53",
        "02:00:5e:00:53:01:02",
        "02:00:5e:00:53:zz",
        "0200.5e00.5301",
        "01:00:5e:00:00:01",
        "ff:ff:ff:ff:ff:ff",
        "00:00:00:00:00:00",
        "2:0:5e:0:53:1",
    ],
)
def test_a_mac_no_device_can_have_is_refused(text):
    with pytest.raises(ValueError):
        canonical_mac(text)


def test_a_mac_or_name_belongs_to_one_general_node(auth):
    store = auth.store
    store.add_general_node(TV, f"tv.{DOMAIN}", f"hall.{DOMAIN}", False)
    assert store.add_general_node(TV.upper(), f"tv.{DOMAIN}", f"hall.{DOMAIN}", True).ipv6  # the same: updated
    for mac, name, adapter in [(TV, "tv", "shed"), (TV, "other", "hall"), (CAM, "tv", "hall"), (CAM, "tv", "shed")]:
        with pytest.raises(GeneralNodeConflict):
            store.add_general_node(mac, f"{name}.{DOMAIN}", f"{adapter}.{DOMAIN}", False)
    assert [g.fqdn for g in store.general_nodes()] == [f"tv.{DOMAIN}"]
    assert store.general_node(TV.upper()) == store.general_node_by_fqdn(f"tv.{DOMAIN}")
    assert store.general_nodes(f"shed.{DOMAIN}") == []


def test_an_adapter_serves_at_most_max_general_nodes(auth, monkeypatch):
    monkeypatch.setattr(store_module, "MAX_GENERAL_NODES", 2)
    serve(auth, "hall", (TV, "tv", False), (CAM, "cam", False))
    with pytest.raises(GeneralNodeConflict):
        serve(auth, "hall", (LAMP, "lamp", False))
    serve(auth, "hall", (TV, "tv", True))  # an update is no new one
    serve(auth, "shed", (LAMP, "lamp", False))


def test_the_longest_list_fits_one_datagram(pki):
    longest = "x" * (255 - len(DOMAIN) - 1) + "." + DOMAIN
    entry = dict(mac=bytes(6), fqdn=longest, ipv6=True, vip4=bytes(4), vip6=bytes(16))
    body = build(wire.NodeInformationBody, dict(nodes=[entry] * store_module.MAX_GENERAL_NODES))
    as_cert = pki.issue(longest.removesuffix("." + DOMAIN), "authority", pki.as_id)
    fields = dict(
        header=dict(type="NodeInformationResponse", txid=0),
        certificate=as_cert,
        ephemeral=bytes(32),
        sealed=crypto.seal(crypto.random_key(), body),
        signature=bytes(64),
    )
    assert len(as_cert) == 442
    assert len(build(wire.NodeInformationResponse, fields)) < 57 * 1024 < 65507


def test_reserved_virtual_ips_are_kept_for_ever(auth):
    store = auth.store
    reserved = store.reserve(f"tv.{DOMAIN}", NOW)
    assert reserved.serial == 0
    assert store.reserve(f"tv.{DOMAIN}", NOW + 5) == reserved
    enrolled = store.enroll(f"tv.{DOMAIN}", 77, bytes(32), NOW + 10)
    assert (enrolled.vip4, enrolled.vip6, enrolled.serial) == (reserved.vip4, reserved.vip6, 77)
    assert store.reserve(f"cam.{DOMAIN}", NOW).vip4 != reserved.vip4
