"""Golden vectors for the CYPHONIC wire protocols (protocols/*.md).

Every input is fixed: keys and seeds are BLAKE2b of a label, the nonces of
sealed fields are fixed too (the daemons draw them at random), and Ed25519
and the counter-nonce AEAD are deterministic, so running this script twice
writes the same bytes. The cryptography here is done with `hashlib` and
`nacl.bindings` directly, not with `cyphonic.crypto`, so that the unit tests
(tests/unit/test_wire_vectors.py) check cyphonic.crypto against an
independent statement of the rules.

    python protocols/vectors/generate.py          # rewrite vectors + docs
    python protocols/vectors/generate.py --check  # exit 1 if out of date

Besides the JSON files it rewrites the block between
`<!-- vectors:begin -->` and `<!-- vectors:end -->` in each protocol's
Markdown document, so the documents quote exactly these bytes.

To add vectors: write a function that returns a `Protocol` (named after its
document, `protocols/<name>.md`) and list it in GENERATORS at the end of
the vector section. Every document in protocols/ (but README.md) must have
one: `--check` and tests/unit/test_wire_vectors.py fail otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import ipaddress
import json
import struct
import sys
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import nacl.signing
from construct import Construct, RawCopy

HERE = Path(__file__).resolve().parent
PROTOCOLS = HERE.parent
sys.path.insert(0, str(PROTOCOLS.parent))

from cyphonic.wire import certificate, common, lan, relay, signaling, tunnel  # noqa: E402

# 2026-01-01T00:00:00Z: "now" for every vector.
NOW = 1767225600
DAY = 86400


def fixed(label: str, size: int = 32) -> bytes:
    """A fixed 'random' value: BLAKE2b of the label."""
    return hashlib.blake2b(b"cyphonic vector " + label.encode(), digest_size=size).digest()


def kdf(label: bytes, *parts: bytes) -> bytes:
    """protocols/README.md, 'Key derivation': BLAKE2b-256 keyed by the label
    over every part, each prefixed with its length (2 bytes, big-endian)."""
    material = b"".join(len(p).to_bytes(2, "big") + p for p in parts)
    return hashlib.blake2b(material, key=label, digest_size=32).digest()


def x25519_public(secret: bytes) -> bytes:
    return sodium.crypto_scalarmult_base(secret)


def x25519(secret: bytes, public: bytes) -> bytes:
    return sodium.crypto_scalarmult(secret, public)


def xseal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """A sealed field: 24-byte nonce || XChaCha20-Poly1305 ciphertext || tag."""
    return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def capsule_seal(key: bytes, header: bytes, plaintext: bytes, suite: str = "chacha20-poly1305") -> bytes:
    """A Capsule-layout datagram: header || AEAD(plaintext) with AAD = the 13
    header bytes and nonce = 4 zero bytes || counter (LE); the AEAD is
    ChaCha20-Poly1305-IETF, or AES-256-GCM (needs a CPU with AES-NI)."""
    nonce = b"\0\0\0\0" + header[5:13]
    if suite == "aes-256-gcm":
        return header + sodium.crypto_aead_aes256gcm_encrypt(plaintext, header, nonce, key)
    return header + sodium.crypto_aead_chacha20poly1305_ietf_encrypt(plaintext, header, nonce, key)


def ed25519(seed: bytes) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed)


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def loc(address: str, port: int) -> dict:
    family = "ipv4" if ipaddress.ip_address(address).version == 4 else "ipv6"
    return {"family": family, "address": ip(address), "port": port}


def jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def schema_of(name: str) -> Construct:
    """"module.Schema" of cyphonic.wire, e.g. "signaling.Ticket"."""
    module, attr = name.split(".")
    return getattr(importlib.import_module(f"cyphonic.wire.{module}"), attr)


def layout(schema: Construct, fields: dict) -> list[tuple[str, bytes]]:
    """(field, bytes) for each top-level field, in wire order."""
    out = []
    for sub in schema.subcons:
        if sub.name is None:  # Terminated
            continue
        value = fields[sub.name]
        if sub.name == "header" and isinstance(value, dict):
            for hsub in sub.subcon.subcons:
                out.append((f"header.{hsub.name}", hsub.build(value[hsub.name])))
            continue
        if isinstance(sub.subcon, RawCopy):  # the certificate body, field by field
            for bsub in sub.subcon.subcon.subcons:
                out.append((f"{sub.name}.{bsub.name}", bsub.build(value["value"][bsub.name])))
            continue
        # the other fields as context, for a Switch on an earlier field (an option's `code`)
        out.append((sub.name, sub.build(value, **fields)))
    return out


class Protocol:
    """Collects the vectors of one protocol document."""

    def __init__(self, name: str, title: str) -> None:
        self.name = name
        self.title = title
        self.inputs: dict[str, Any] = {}
        self.derived: dict[str, Any] = {}
        self.messages: list[dict] = []

    def message(self, name: str, schema: str, fields: dict, **checks: Any) -> bytes:
        data = schema_of(schema).build(fields)
        pieces = layout(schema_of(schema), fields)
        assert b"".join(p for _, p in pieces) == data, name
        entry = {"name": name, "schema": schema, "fields": jsonable(fields), "hex": data.hex()}
        entry["layout"] = [{"field": f, "offset": o, "hex": p.hex()} for f, o, p in _offsets(pieces)]
        for key, value in checks.items():
            entry[key] = jsonable(value)
        self.messages.append(entry)
        return data

    def doc(self) -> dict:
        return {
            "protocol": self.name,
            "title": self.title,
            "generator": "protocols/vectors/generate.py",
            "now": NOW,
            "inputs": jsonable(self.inputs),
            "derived": jsonable(self.derived),
            "messages": self.messages,
        }


def _offsets(pieces: list[tuple[str, bytes]]):
    offset = 0
    for field, data in pieces:
        yield field, offset, data
        offset += len(data)


# --- the fixed world ---------------------------------------------------------

CA = ed25519(fixed("ca sign"))
MN_SIGN, MN_DH = ed25519(fixed("mn sign")), fixed("mn dh")
CN_SIGN, CN_DH = ed25519(fixed("cn sign")), fixed("cn dh")
AS_SIGN, AS_DH = ed25519(fixed("as sign")), fixed("as dh")

AD_SIGN, AD_DH = ed25519(fixed("adapter sign")), fixed("adapter dh")  # an adapter (Node Information)

MN_FQDN, CN_FQDN, AS_FQDN = "mn.cyphonic.example", "cn.cyphonic.example", "as.cyphonic.example"
AD_FQDN = "adapter.cyphonic.example"
MN_VIP4, MN_VIP6 = ip("10.64.0.2"), ip("fd00:c0ff:ee::2")
CN_VIP4, CN_VIP6 = ip("10.64.0.3"), ip("fd00:c0ff:ee::3")

AS_NMS_KEY = fixed("as-nms key")
MN_SESSION = fixed("mn session key")
CN_SESSION = fixed("cn session key")
MN_CN_KEY = fixed("mn-cn key")
PATH_ID = 0x0000A001
MN_SERIAL, CN_SERIAL = 0x1001, 0x1002  # certificate serials, copied into the tickets
AD_SERIAL = 0x1003
CERT_NOT_AFTER = NOW + 365 * DAY
# The AS's ticket lifetime. A ticket never outlives its certificate:
# expires = min(now + lifetime, not_after), here now + lifetime. The
# LoginGrant's `expires` is the ticket's.
TICKET_LIFETIME = DAY
TICKET_EXPIRES = min(NOW + TICKET_LIFETIME, CERT_NOT_AFTER)


def cert_fields(serial: int, role: str, fqdn: str, sign: nacl.signing.SigningKey, dh: bytes) -> dict:
    return {
        "version": 1,
        "serial": serial,
        "role": role,
        "fqdn": fqdn,
        "sign_key": bytes(sign.verify_key),
        "dh_key": x25519_public(dh),
        "not_before": NOW - DAY,
        "not_after": CERT_NOT_AFTER,
        "issuer": bytes(CA.verify_key),
    }


def make_certificate(p: Protocol, name: str, body: dict) -> bytes:
    body_bytes = certificate.CertificateBody.build(body)
    signature = CA.sign(body_bytes).signature
    return p.message(
        name,
        "certificate.Certificate",
        {"body": {"value": body}, "signature": signature},
        certificate_check={"ca_public": bytes(CA.verify_key), "now": NOW, "role": body["role"]},
        signed_by={"public": bytes(CA.verify_key), "data": body_bytes},
    )


def ticket_fields(fqdn: str, vip4: bytes, vip6: bytes, session: bytes, serial: int) -> dict:
    return {
        "fqdn": fqdn,
        "vip4": vip4,
        "vip6": vip6,
        "session_key": session,
        "expires": TICKET_EXPIRES,
        "serial": serial,
        "issued": NOW * 1_000_000,  # AS clock in microseconds
    }


def certificates() -> Protocol:
    p = Protocol("certificate", "Certificate")
    p.inputs = {
        "ca_sign_seed": fixed("ca sign"),
        "ca_sign_public": bytes(CA.verify_key),
        "ca_dh_secret": fixed("ca dh"),
        "mn_sign_seed": fixed("mn sign"),
        "mn_dh_secret": MN_DH,
        "as_sign_seed": fixed("as sign"),
        "as_dh_secret": AS_DH,
    }
    ca_body = cert_fields(0x0000, "ca", "ca.cyphonic.example", CA, fixed("ca dh"))
    ca_body["not_after"] = NOW + 10 * 365 * DAY
    make_certificate(p, "CA certificate (self-signed)", ca_body)
    make_certificate(p, "Node certificate (mn)", cert_fields(MN_SERIAL, "node", MN_FQDN, MN_SIGN, MN_DH))
    make_certificate(p, "Authority certificate (AS)", cert_fields(0x0001, "authority", AS_FQDN, AS_SIGN, AS_DH))
    return p


def authentication() -> Protocol:
    p = Protocol("authentication", "Authentication (Login)")
    mn_body = certificate.CertificateBody.build(cert_fields(MN_SERIAL, "node", MN_FQDN, MN_SIGN, MN_DH))
    mn_cert = mn_body + CA.sign(mn_body).signature
    as_body = certificate.CertificateBody.build(cert_fields(0x0001, "authority", AS_FQDN, AS_SIGN, AS_DH))
    as_cert = as_body + CA.sign(as_body).signature

    nonce = fixed("login nonce", 16)
    mn_eph, as_eph = fixed("mn login ephemeral"), fixed("as login ephemeral")
    txid = 0x00C0FFEE
    shared = x25519(as_eph, x25519_public(mn_eph))
    login_key = kdf(b"cyphonic login", shared, nonce)
    ticket_nonce, grant_nonce = fixed("ticket nonce", 24), fixed("grant nonce", 24)
    p.inputs = {
        "mn_sign_seed": fixed("mn sign"),
        "as_sign_seed": fixed("as sign"),
        "ca_sign_public": bytes(CA.verify_key),
        "mn_login_ephemeral_secret": mn_eph,
        "as_login_ephemeral_secret": as_eph,
        "request_nonce": nonce,
        "as_nms_key": AS_NMS_KEY,
        "session_key": MN_SESSION,
        "ticket_seal_nonce": ticket_nonce,
        "grant_seal_nonce": grant_nonce,
    }
    p.derived = {
        "login_shared": shared,
        "login_key": login_key,
    }

    header = {"type": "LoginRequest", "version": 1, "txid": txid}
    unsigned = {
        "header": header,
        "certificate": mn_cert,
        "nonce": nonce,
        "timestamp": NOW,
        "ephemeral": x25519_public(mn_eph),
        "signature": bytes(64),
    }
    before = signaling.LoginRequest.build(unsigned)[:-64]
    request = dict(unsigned, signature=MN_SIGN.sign(before).signature)
    p.message(
        "Login Request",
        "signaling.LoginRequest",
        request,
        signed_by={"public": bytes(MN_SIGN.verify_key), "data": before},
    )

    ticket = p.message(
        "Ticket (plaintext)", "signaling.Ticket", ticket_fields(MN_FQDN, MN_VIP4, MN_VIP6, MN_SESSION, MN_SERIAL)
    )
    sealed_ticket = xseal(AS_NMS_KEY, ticket_nonce, ticket, b"")
    p.derived["sealed_ticket"] = sealed_ticket
    grant = p.message(
        "Login Grant (plaintext)",
        "signaling.LoginGrant",
        {
            "fqdn": MN_FQDN,
            "vip4": MN_VIP4,
            "vip6": MN_VIP6,
            "vip4_prefix": 16,
            "vip6_prefix": 64,
            "session_key": MN_SESSION,
            "ticket": sealed_ticket,
            "expires": TICKET_EXPIRES,
        },
    )

    header = {"type": "LoginResponse", "version": 1, "txid": txid}
    # No AAD: the AS's signature already covers every byte of the response.
    aad = b""
    sealed = xseal(login_key, grant_nonce, grant, aad)
    unsigned = {
        "header": header,
        "certificate": as_cert,
        "ephemeral": x25519_public(as_eph),
        "sealed": sealed,
        "signature": bytes(64),
    }
    before = signaling.LoginResponse.build(unsigned)[:-64]
    p.message(
        "Login Response",
        "signaling.LoginResponse",
        dict(unsigned, signature=AS_SIGN.sign(nonce + before).signature),
        signed_by={"public": bytes(AS_SIGN.verify_key), "data": nonce + before},
        sealed_with={"field": "sealed", "key": login_key, "aad": aad, "plaintext": "Login Grant (plaintext)"},
    )
    p.inputs["ticket_aad"] = b""

    for reason in ("expired", "unavailable"):
        header = {"type": "LoginReject", "version": 1, "txid": txid}
        unsigned = {"header": header, "reason": reason, "certificate": as_cert, "signature": bytes(64)}
        before = signaling.LoginReject.build(unsigned)[:-64]
        p.message(
            f"Login Reject ({reason})",
            "signaling.LoginReject",
            dict(unsigned, signature=AS_SIGN.sign(nonce + before).signature),
            signed_by={"public": bytes(AS_SIGN.verify_key), "data": nonce + before},
        )
    node_information(p, as_cert)
    return p


def node_information(p: Protocol, as_cert: bytes) -> None:
    """An adapter's Node Information Request and the AS's answer listing its
    two general nodes. The answer's checks are recorded under their own keys
    (`signed_over_nonce`, `sealed_with_login_key`): signed over the request
    nonce and sealed without AAD like a Login Response."""
    ad_body = certificate.CertificateBody.build(
        cert_fields(AD_SERIAL, "adapter", AD_FQDN, AD_SIGN, AD_DH)
    )
    ad_cert = ad_body + CA.sign(ad_body).signature
    nonce = fixed("node information nonce", 16)
    ad_eph, as_eph = fixed("adapter information ephemeral"), fixed("as information ephemeral")
    txid = 0x00ADA001
    shared = x25519(as_eph, x25519_public(ad_eph))
    key = kdf(b"cyphonic login", shared, nonce)
    seal_nonce = fixed("node information seal nonce", 24)
    p.inputs.update(
        {
            "adapter_sign_seed": fixed("adapter sign"),
            "adapter_information_ephemeral_secret": ad_eph,
            "as_information_ephemeral_secret": as_eph,
            "information_request_nonce": nonce,
            "information_seal_nonce": seal_nonce,
        }
    )
    p.derived.update({"information_shared": shared, "information_key": key})

    header = {"type": "NodeInformationRequest", "version": 1, "txid": txid}
    unsigned = {
        "header": header,
        "certificate": ad_cert,
        "nonce": nonce,
        "timestamp": NOW,
        "ephemeral": x25519_public(ad_eph),
        "signature": bytes(64),
    }
    before = signaling.NodeInformationRequest.build(unsigned)[:-64]
    p.message(
        "Node Information Request",
        "signaling.NodeInformationRequest",
        dict(unsigned, signature=AD_SIGN.sign(before).signature),
        signed_by={"public": bytes(AD_SIGN.verify_key), "data": before},
    )
    listing = p.message(
        "Node Information Body (plaintext)",
        "signaling.NodeInformationBody",
        {
            "nodes": [
                {"mac": bytes.fromhex("02005e005301"), "fqdn": "tv.cyphonic.example", "ipv6": True,
                 "vip4": ip("10.64.0.4"), "vip6": ip("fd00:c0ff:ee::4")},
                {"mac": bytes.fromhex("02005e005302"), "fqdn": "cam.cyphonic.example", "ipv6": False,
                 "vip4": ip("10.64.0.5"), "vip6": ip("fd00:c0ff:ee::5")},
            ]
        },
    )
    header = {"type": "NodeInformationResponse", "version": 1, "txid": txid}
    unsigned = {
        "header": header,
        "certificate": as_cert,
        "ephemeral": x25519_public(as_eph),
        "sealed": xseal(key, seal_nonce, listing, b""),
        "signature": bytes(64),
    }
    before = signaling.NodeInformationResponse.build(unsigned)[:-64]
    p.message(
        "Node Information Response",
        "signaling.NodeInformationResponse",
        dict(unsigned, signature=AS_SIGN.sign(nonce + before).signature),
        signed_over_nonce={"public": bytes(AS_SIGN.verify_key), "nonce": nonce, "data": nonce + before},
        sealed_with_login_key={
            "field": "sealed", "key": key, "aad": b"", "plaintext": "Node Information Body (plaintext)"
        },
    )


def nms_request(p: Protocol, name: str, mtype: str, txid: int, ticket: bytes, key: bytes,
                body_name: str, body: bytes, nonce_label: str) -> bytes:
    header = {"type": mtype, "version": 1, "txid": txid}
    aad = signaling.Header.build(header) + signaling.Blob.build(ticket)
    sealed = xseal(key, fixed(nonce_label, 24), body, aad)
    return p.message(
        name,
        "signaling.NmsRequest",
        {"header": header, "ticket": ticket, "sealed": sealed},
        sealed_with={"field": "sealed", "key": key, "aad": aad, "plaintext": body_name},
    )


def nms_reply(p: Protocol, name: str, mtype: str, txid: int, key: bytes,
              body_name: str, body: bytes, nonce_label: str) -> bytes:
    header = {"type": mtype, "version": 1, "txid": txid}
    aad = signaling.Header.build(header)
    sealed = xseal(key, fixed(nonce_label, 24), body, aad)
    return p.message(
        name,
        "signaling.NmsReply",
        {"header": header, "sealed": sealed},
        sealed_with={"field": "sealed", "key": key, "aad": aad, "plaintext": body_name},
    )


def sealed_ticket(fqdn: str, vip4: bytes, vip6: bytes, session: bytes, serial: int, label: str) -> bytes:
    plain = signaling.Ticket.build(ticket_fields(fqdn, vip4, vip6, session, serial))
    return xseal(AS_NMS_KEY, fixed(label, 24), plain, b"")


def cn_ticket() -> bytes:
    return sealed_ticket(CN_FQDN, CN_VIP4, CN_VIP6, CN_SESSION, CN_SERIAL, "cn ticket nonce")


def registration() -> Protocol:
    p = Protocol("registration", "Registration")
    ticket = cn_ticket()
    p.inputs = {"as_nms_key": AS_NMS_KEY, "session_key": CN_SESSION, "ticket": ticket}
    p.derived = {}
    # IPv4, behind NAPT: reported 192.168.1.10:40000, observed 203.0.113.7:61001.
    seq4 = NOW * 10**9
    body = p.message(
        "Registration Body (IPv4)",
        "signaling.RegistrationBody",
        {"sequence": seq4, "locators": [loc("192.168.1.10", 40000)]},
    )
    nms_request(p, "Registration Request (IPv4)", "RegistrationRequest", 0x00000101, ticket, CN_SESSION,
                "Registration Body (IPv4)", body, "registration v4 nonce")
    ack = p.message(
        "Registration Ack (IPv4, behind NAT)",
        "signaling.RegistrationAck",
        {"observed": loc("203.0.113.7", 61001), "nat": True, "refresh": 25},
    )
    nms_reply(p, "Registration Response (IPv4)", "RegistrationResponse", 0x00000101, CN_SESSION,
              "Registration Ack (IPv4, behind NAT)", ack, "registration v4 reply nonce")
    # IPv6, no NAT: the observed source is one of the reported locators.
    seq6 = NOW * 10**9 + 1
    body = p.message(
        "Registration Body (IPv6)",
        "signaling.RegistrationBody",
        {"sequence": seq6, "locators": [loc("2001:db8:1::10", 40000)]},
    )
    nms_request(p, "Registration Request (IPv6)", "RegistrationRequest", 0x00000102, ticket, CN_SESSION,
                "Registration Body (IPv6)", body, "registration v6 nonce")
    ack = p.message(
        "Registration Ack (IPv6, no NAT)",
        "signaling.RegistrationAck",
        {"observed": loc("2001:db8:1::10", 40000), "nat": False, "refresh": 25},
    )
    nms_reply(p, "Registration Response (IPv6)", "RegistrationResponse", 0x00000102, CN_SESSION,
              "Registration Ack (IPv6, no NAT)", ack, "registration v6 reply nonce")
    return p


def route_body(process: str, role: str, fqdn: str, vip4: bytes, vip6: bytes, peer: dict) -> dict:
    return {
        "timestamp": NOW,  # the NMS's clock
        "process": process,
        "role": role,
        "path_id": PATH_ID,
        "peer_fqdn": fqdn,
        "peer_vip4": vip4,
        "peer_vip6": vip6,
        "peer_locator": peer,
        "tunnel_key": MN_CN_KEY,
        "temporary_key": bytes(32),
    }


def route_selection() -> Protocol:
    p = Protocol("route-selection", "Route selection")
    mn_ticket = sealed_ticket(MN_FQDN, MN_VIP4, MN_VIP6, MN_SESSION, MN_SERIAL, "ticket nonce")
    p.inputs = {
        "mn_session_key": MN_SESSION,
        "cn_session_key": CN_SESSION,
        "mn_ticket": mn_ticket,
        "cn_ticket": cn_ticket(),
        "mn_cn_key": MN_CN_KEY,
        "path_id": PATH_ID,
    }
    mn_v4 = loc("198.51.100.20", 40000)
    cn_v4_observed = loc("203.0.113.7", 61001)

    body = p.message("Direction Request Body", "signaling.DirectionRequestBody", {"timestamp": NOW, "target": CN_FQDN})
    nms_request(p, "Direction Request", "DirectionRequest", 0x00000201, mn_ticket, MN_SESSION,
                "Direction Request Body", body, "direction nonce")

    # Reverse: CN behind NAPT on the only common family (IPv4), MN not.
    body = p.message(
        "Route Direction Body to CN (reverse)",
        "signaling.RouteDirectionBody",
        route_body("TunnelRequestToNATcn", "initiator", MN_FQDN, MN_VIP4, MN_VIP6, mn_v4),
    )
    nms_reply(p, "Route Direction to CN (reverse)", "RouteDirectionToCN", 0x80000001, CN_SESSION,
              "Route Direction Body to CN (reverse)", body, "route to cn nonce")
    body = p.message("Route Direction Ack Body", "signaling.AckBody", {"timestamp": NOW, "path_id": PATH_ID})
    # The ack has a txid of its own: the NMS matches it by path_id.
    nms_request(p, "Route Direction Ack", "RouteDirectionAck", 0x00000301, cn_ticket(), CN_SESSION,
                "Route Direction Ack Body", body, "route ack nonce")
    body = p.message(
        "Route Direction Body to MN (reverse)",
        "signaling.RouteDirectionBody",
        route_body("TunnelRequestToNATcn", "responder", CN_FQDN, CN_VIP4, CN_VIP6, cn_v4_observed),
    )
    nms_reply(p, "Route Direction to MN (reverse)", "RouteDirection", 0x00000201, MN_SESSION,
              "Route Direction Body to MN (reverse)", body, "route to mn nonce")

    # Direct: had MN also IPv6, the common family would be IPv6, CN is not
    # behind NAT there, and MN would open the tunnel itself.
    body = p.message(
        "Route Direction Body to MN (direct)",
        "signaling.RouteDirectionBody",
        route_body("TunnelRequestToCN", "initiator", CN_FQDN, CN_VIP4, CN_VIP6, loc("2001:db8:1::10", 40000)),
    )
    nms_reply(p, "Route Direction to MN (direct)", "RouteDirection", 0x00000202, MN_SESSION,
              "Route Direction Body to MN (direct)", body, "route direct nonce")

    errors = [
        # both ends behind NAPT and no TRS configured (nms/service.py's detail text)
        ("unreachable", "both ends behind NAPT or no common address family", 0x00000203, "signaling error nonce"),
        ("rate_limited", "too many route selections", 0x00000204, "rate limited nonce"),
    ]
    for code, detail, txid, nonce_label in errors:
        body = p.message(
            f"Signaling Error Body ({code})", "signaling.SignalingErrorBody", {"code": code, "detail": detail}
        )
        nms_reply(p, f"Signaling Error ({code})", "SignalingError", txid, MN_SESSION,
                  f"Signaling Error Body ({code})", body, nonce_label)
    return p


def icmp_echo(src: bytes, dst: bytes) -> bytes:
    """A small IPv4 ICMP echo request (the plaintext of the Capsule vector)."""

    def checksum(data: bytes) -> int:
        total = sum(struct.unpack(f"!{len(data) // 2}H", data))
        while total >> 16:
            total = (total & 0xFFFF) + (total >> 16)
        return ~total & 0xFFFF

    payload = b"ping"
    icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + payload
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0x4000, 64, 1, 0, src, dst)
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return head + icmp


def capsule(p: Protocol, name: str, mtype: str, index: int, counter: int, key: bytes,
            plaintext: bytes, plaintext_name: str | None = None, suite: str = "chacha20-poly1305") -> bytes:
    header = struct.pack("<BIQ", common.TYPE[mtype], index, counter)
    datagram = capsule_seal(key, header, plaintext, suite)
    check = {"key": key, "plaintext": plaintext, "nonce": b"\0\0\0\0" + header[5:], "aad": header}
    if suite != "chacha20-poly1305":
        check["suite"] = suite
    if plaintext_name:
        check["plaintext_vector"] = plaintext_name
    return p.message(
        name,
        "tunnel.Capsule",
        {"type": mtype, "receiver_index": index, "counter": counter, "sealed": datagram[13:]},
        data_cipher=check,
    )


def tunnel_vectors() -> Protocol:
    """The reverse path of route-selection: CN (behind NAPT) initiates to MN."""
    p = Protocol("tunnel", "Tunnel establishment and data")
    i_eph, r_eph = fixed("cn tunnel ephemeral"), fixed("mn tunnel ephemeral")
    i_pub, r_pub = x25519_public(i_eph), x25519_public(r_eph)
    i_index, r_index = 0x1A2B3C4D, 0x5E6F7081
    shared = x25519(i_eph, r_pub)
    # CN offers both suites (0x03); MN, configured with cipher =
    # "chacha20-poly1305", chooses ChaCha20-Poly1305 (0x01)
    offered, chosen = 0x03, 0x01
    transcript = PATH_ID.to_bytes(4, "big") + i_pub + r_pub + bytes([offered, chosen])
    i2r = kdf(b"cyphonic end key i2r", shared, MN_CN_KEY, transcript)
    r2i = kdf(b"cyphonic end key r2i", shared, MN_CN_KEY, transcript)
    p.inputs = {
        "mn_cn_key": MN_CN_KEY,
        "path_id": PATH_ID,
        "initiator": "cn",
        "initiator_ephemeral_secret": i_eph,
        "responder_ephemeral_secret": r_eph,
        "initiator_index": i_index,
        "responder_index": r_index,
    }
    p.derived = {
        "shared": shared,
        "transcript": transcript,
        "end_key_i2r": i2r,
        "end_key_r2i": r2i,
    }

    hello = p.message(
        "Tunnel Hello (initiator, CN)",
        "tunnel.TunnelHello",
        {"fqdn": CN_FQDN, "vip4": CN_VIP4, "vip6": CN_VIP6, "ephemeral": i_pub, "timestamp": NOW + 1,
         "suites": offered},
    )
    head = {"type": "TunnelRequest", "path_id": PATH_ID, "sender_index": i_index}
    aad = tunnel.TunnelRequest.build(dict(head, sealed=b""))
    p.message(
        "Tunnel Request",
        "tunnel.TunnelRequest",
        dict(head, sealed=xseal(MN_CN_KEY, fixed("tunnel request nonce", 24), hello, aad)),
        sealed_with={"field": "sealed", "key": MN_CN_KEY, "aad": aad, "plaintext": "Tunnel Hello (initiator, CN)"},
    )
    hello = p.message(
        "Tunnel Hello (responder, MN)",
        "tunnel.TunnelHello",
        {"fqdn": MN_FQDN, "vip4": MN_VIP4, "vip6": MN_VIP6, "ephemeral": r_pub, "timestamp": NOW + 1,
         "suites": chosen},
    )
    head = {"type": "TunnelResponse", "path_id": PATH_ID, "sender_index": r_index, "receiver_index": i_index}
    aad = tunnel.TunnelResponse.build(dict(head, sealed=b""))
    p.message(
        "Tunnel Response",
        "tunnel.TunnelResponse",
        dict(head, sealed=xseal(MN_CN_KEY, fixed("tunnel response nonce", 24), hello, aad)),
        sealed_with={"field": "sealed", "key": MN_CN_KEY, "aad": aad, "plaintext": "Tunnel Hello (responder, MN)"},
    )

    capsule(p, "Capsule Message (CN to MN, counter 0)", "CapsuleMessage", r_index, 0, i2r,
            icmp_echo(CN_VIP4, MN_VIP4))
    capsule(p, "Keep Alive (MN to CN, counter 0)", "KeepAlive", i_index, 0, r2i, b"")
    capsule(p, "Keep Alive Ack (CN to MN, counter 1)", "KeepAliveAck", r_index, 1, i2r, b"")
    nonce = fixed("tunnel update nonce", 8)
    update = p.message(
        "Tunnel Update Body", "tunnel.TunnelUpdateBody", {"locator": loc("198.51.100.77", 40000), "nonce": nonce}
    )
    capsule(p, "Tunnel Update (MN to CN, counter 1)", "TunnelUpdate", i_index, 1, r2i, update,
            "Tunnel Update Body")
    ack = p.message("Tunnel Update Ack Body", "tunnel.TunnelUpdateAckBody", {"nonce": nonce})
    capsule(p, "Tunnel Update Ack (CN to MN, counter 2)", "TunnelUpdateAck", r_index, 2, i2r, ack,
            "Tunnel Update Ack Body")

    # The same handshake with an MN that runs AES-256-GCM and chooses it
    # (0x02): the choice is in the transcript, so the End Keys differ.
    aes_transcript = PATH_ID.to_bytes(4, "big") + i_pub + r_pub + bytes([offered, 0x02])
    aes_i2r = kdf(b"cyphonic end key i2r", shared, MN_CN_KEY, aes_transcript)
    p.derived.update(aes_transcript=aes_transcript, aes_end_key_i2r=aes_i2r,
                     aes_end_key_r2i=kdf(b"cyphonic end key r2i", shared, MN_CN_KEY, aes_transcript))
    p.message(
        "Tunnel Hello (responder, MN, choosing AES-256-GCM)",
        "tunnel.TunnelHello",
        {"fqdn": MN_FQDN, "vip4": MN_VIP4, "vip6": MN_VIP6, "ephemeral": r_pub, "timestamp": NOW + 1,
         "suites": 0x02},
    )
    capsule(p, "Capsule Message (CN to MN, counter 0, AES-256-GCM)", "CapsuleMessage", r_index, 0, aes_i2r,
            icmp_echo(CN_VIP4, MN_VIP4), suite="aes-256-gcm")
    return p


def tunnel_and_rekey_vectors() -> Protocol:
    """tunnel_vectors, then that tunnel's first rekey and a direct-path probe
    (protocols/tunnel.md#rekeying): CN, the initiator, asks; MN answers."""
    p = tunnel_vectors()
    i_index, r_index = p.inputs["initiator_index"], p.inputs["responder_index"]
    i2r, r2i = p.derived["end_key_i2r"], p.derived["end_key_r2i"]
    i_eph, r_eph = fixed("cn rekey ephemeral"), fixed("mn rekey ephemeral")
    i_pub, r_pub = x25519_public(i_eph), x25519_public(r_eph)
    new_i, new_r = 0x2C3D4E5F, 0x60718293
    shared = x25519(i_eph, r_pub)
    transcript = PATH_ID.to_bytes(4, "big") + new_i.to_bytes(4, "big") + new_r.to_bytes(4, "big") + i_pub + r_pub
    p.inputs.update({
        "rekey_initiator_ephemeral_secret": i_eph,
        "rekey_responder_ephemeral_secret": r_eph,
        "rekey_initiator_index": new_i,
        "rekey_responder_index": new_r,
    })
    p.derived.update({
        "rekey_shared": shared,
        "rekey_transcript": transcript,
        "rekey_end_key_i2r": kdf(b"cyphonic end key i2r", shared, MN_CN_KEY, transcript),
        "rekey_end_key_r2i": kdf(b"cyphonic end key r2i", shared, MN_CN_KEY, transcript),
    })
    body = p.message("Rekey Request Body", "tunnel.RekeyRequestBody", {"sender_index": new_i, "ephemeral": i_pub})
    capsule(p, "Rekey Request (CN to MN, counter 3)", "RekeyRequest", r_index, 3, i2r, body, "Rekey Request Body")
    body = p.message(
        "Rekey Response Body",
        "tunnel.RekeyResponseBody",
        {"sender_index": new_r, "receiver_index": new_i, "ephemeral": r_pub},
    )
    capsule(p, "Rekey Response (MN to CN, counter 2)", "RekeyResponse", i_index, 2, r2i, body, "Rekey Response Body")
    probe = p.message("Probe (Keep Alive plaintext)", "tunnel.Probe", {"challenge": fixed("probe challenge", 8)})
    capsule(p, "Keep Alive probing a direct path (MN to CN, counter 3)", "KeepAlive", i_index, 3, r2i, probe,
            "Probe (Keep Alive plaintext)")
    capsule(p, "Keep Alive Ack echoing the probe (CN to MN, counter 4)", "KeepAliveAck", r_index, 4, i2r, probe,
            "Probe (Keep Alive plaintext)")
    return p


NMS_TRS_KEY = fixed("nms-trs key")
RELAY_PATH_ID = 0x0000A002  # the relay session id is the path id
RELAY_TXID = 0x00000401


def relay_message(p: Protocol, name: str, mtype: str, body_name: str, body: bytes, nonce_label: str) -> bytes:
    """Relay Request / Response: the signaling header, then the body sealed
    under the NMS–TRS key with the 6 header bytes as AAD."""
    header = {"type": mtype, "version": 1, "txid": RELAY_TXID}
    aad = signaling.Header.build(header)
    sealed = xseal(NMS_TRS_KEY, fixed(nonce_label, 24), body, aad)
    return p.message(
        name,
        f"relay.{mtype}",
        {"header": header, "sealed": sealed},
        sealed_with={"field": "sealed", "key": NMS_TRS_KEY, "aad": aad, "plaintext": body_name},
    )


def relayed_header(flags: int) -> bytes:
    """The 6 bytes before `inner`: type, session id (big-endian), flags."""
    return bytes([common.TYPE["Relayed"]]) + RELAY_PATH_ID.to_bytes(4, "big") + bytes([flags])


def relay_vectors() -> Protocol:
    """A relayed path: MN (initiator) and CN (responder) both behind NAPT."""
    p = Protocol("relay", "Tunnel Relay Service (TRS)")
    tunnel_key, temp_key = fixed("tunnel key"), fixed("temp key")
    seal_key = kdf(b"cyphonic relay seal", tunnel_key)
    mac_key = kdf(b"cyphonic relay mac", tunnel_key)
    mn_eph = fixed("mn relayed tunnel ephemeral")
    # a node's relay link starts its sequence at the clock in nanoseconds
    # and counts up before each sealed frame
    sequence = NOW * 10**9 + 1
    p.inputs = {
        "nms_trs_key": NMS_TRS_KEY,
        "session_id": RELAY_PATH_ID,
        "tunnel_key": tunnel_key,
        "temp_key": temp_key,
        "initiator_ephemeral_secret": mn_eph,
    }
    p.derived = {"relay_seal_key": seal_key, "relay_mac_key": mac_key}

    body = p.message(
        "Relay Request Body",
        "relay.RelayRequestBody",
        # lifetime: the NMS's SESSION_LIFETIME (cyphonic/nms/relays.py)
        {"timestamp": NOW, "session_id": RELAY_PATH_ID, "tunnel_key": tunnel_key, "lifetime": 120},
    )
    relay_message(p, "Relay Request", "RelayRequest", "Relay Request Body", body, "relay request nonce")
    body = p.message(
        "Relay Response Body",
        "relay.RelayResponseBody",
        {
            "session_id": RELAY_PATH_ID,
            "accepted": True,
            "locators": [loc("192.0.2.40", 7002), loc("2001:db8:2::40", 7002)],
        },
    )
    relay_message(p, "Relay Response", "RelayResponse", "Relay Response Body", body, "relay response nonce")

    # A sealed frame: MN's Tunnel Request. The TRS can open the frame (it
    # holds the Tunnel Key) but not the hello inside, sealed under the Temp Key.
    hello_name = "Tunnel Hello (initiator, MN, relayed)"
    hello = p.message(
        hello_name,
        "tunnel.TunnelHello",
        {"fqdn": MN_FQDN, "vip4": MN_VIP4, "vip6": MN_VIP6, "ephemeral": x25519_public(mn_eph), "timestamp": NOW + 1,
         "suites": 0x01},
    )
    head = {"type": "TunnelRequest", "path_id": RELAY_PATH_ID, "sender_index": 0x2B3C4D5E}
    aad = tunnel.TunnelRequest.build(dict(head, sealed=b""))
    request = p.message(
        "Tunnel Request (relayed, hello under the Temp Key)",
        "tunnel.TunnelRequest",
        dict(head, sealed=xseal(temp_key, fixed("relayed tunnel request nonce", 24), hello, aad)),
        sealed_with={"field": "sealed", "key": temp_key, "aad": aad, "plaintext": hello_name},
    )
    inner = p.message(
        "Sealed Inner (Tunnel Request)", "relay.SealedInner", {"sequence": sequence, "datagram": request}
    )
    header = relayed_header(relay.SEALED)  # from the initiator
    p.message(
        "Relayed, sealed (Tunnel Request, from the initiator)",
        "relay.Relayed",
        {
            "type": "Relayed",
            "session_id": RELAY_PATH_ID,
            "flags": relay.SEALED,
            "inner": xseal(seal_key, fixed("relayed frame nonce", 24), inner, header),
        },
        sealed_with={"field": "inner", "key": seal_key, "aad": header, "plaintext": "Sealed Inner (Tunnel Request)"},
    )

    # A data frame: CN's Capsule Message, authenticated with the MAC key and
    # otherwise unchanged. Its content is opaque to the TRS; here it is the
    # Capsule Message vector of tunnel.md. The MAC covers the relay head and
    # the capsule header (19 bytes), the capsule's last 16 bytes (its AEAD
    # tag) and the covered length as u16: the body is bound by that tag.
    capsule_name = "Capsule Message (CN to MN, counter 0)"
    datagram = bytes.fromhex(next(m for m in tunnel_vectors().messages if m["name"] == capsule_name)["hex"])
    covered = relayed_header(relay.FROM_RESPONDER) + datagram
    mac_input = covered[:19] + covered[-16:] + len(covered).to_bytes(2, "big")
    tag = hashlib.blake2b(mac_input, key=mac_key, digest_size=relay.RELAY_TAG).digest()
    p.message(
        "Relayed, data (Capsule Message, from the responder)",
        "relay.Relayed",
        {"type": "Relayed", "session_id": RELAY_PATH_ID, "flags": relay.FROM_RESPONDER, "inner": datagram + tag},
        relay_mac={
            "key": mac_key,
            "data": covered,
            "mac_input": mac_input,
            "tag": tag,
            "datagram": datagram,
            "datagram_vector": {"protocol": "tunnel", "name": capsule_name},
        },
    )
    return p


# --- adapter: the LAN side (protocols/adapter.md) ------------------------------------
#
# No cryptography: these are the standard frames and options the adapter
# reads and writes on its LAN port. The test suite parses every vector with
# its schema and fuzzes it by truncation, so a vector's schema must reject
# every cut of it; a whole DHCP message or an ND message with options does
# not (a cut at an option boundary is a shorter valid message), so those are
# quoted option by option.

GN_MAC = bytes.fromhex("02c0ffee0005")  # a general node (a known MAC)
AD_MAC = bytes.fromhex("02c0ffee0001")  # the adapter's LAN port
GN_VIP4, AD_VIP4 = ip("10.96.0.5"), ip("10.96.0.1")  # its address, A4
AD_LINK_LOCAL = ip("fe80::c0:ffff:feee:1")  # modified EUI-64 of AD_MAC
GN_LINK_LOCAL = ip("fe80::c0:ffff:feee:5")
AD_VIP6 = ip("fd7c:1f00::1")  # A6
LEASE_TIME = 3600
MTU = 1400


def arp(operation: int, sender_mac: bytes, sender_ip: bytes, target_mac: bytes, target_ip: bytes) -> dict:
    return {
        "hardware_type": lan.ARPHRD_ETHER,
        "protocol_type": lan.ETH_P_IP,
        "hardware_length": 6,
        "protocol_length": 4,
        "operation": operation,
        "sender_mac": sender_mac,
        "sender_ip": sender_ip,
        "target_mac": target_mac,
        "target_ip": target_ip,
    }


def duid_ll(mac: bytes) -> bytes:
    """RFC 8415 §11.4: DUID type 3 (DUID-LL), hardware type 1, the MAC."""
    return struct.pack("!HH", 3, 1) + mac


def adapter() -> Protocol:
    p = Protocol("adapter", "Adapter: the LAN side")
    p.inputs = {
        "general_node_mac": GN_MAC,
        "adapter_mac": AD_MAC,
        "general_node_vip4": GN_VIP4,
        "adapter_vip4": AD_VIP4,
        "adapter_vip6": AD_VIP6,
        "adapter_link_local": AD_LINK_LOCAL,
        "general_node_link_local": GN_LINK_LOCAL,
        "ipv4_overlay_prefix": "10.96.0.0/16",
        "ipv6_overlay_prefix": "fd7c:1f00::/64",
        "lease_time": LEASE_TIME,
        "mtu": MTU,
    }

    # ARP: a general node asks for A4 (a 42-byte frame padded to ETH_ZLEN),
    # the adapter answers unicast with its MAC, the fields swapped (RFC 826).
    request = arp(lan.ARP_REQUEST, GN_MAC, GN_VIP4, bytes(6), AD_VIP4)
    p.message(
        "ARP request (general node, for A4)",
        "lan.ArpFrame",
        {
            "ethernet": {"dst": lan.BROADCAST, "src": GN_MAC, "ethertype": lan.ETH_P_ARP},
            "arp": request,
            "padding": bytes(lan.ETH_ZLEN - lan.ETH_HLEN - lan.ARP_LEN),
        },
    )
    p.message(
        "ARP reply (adapter)",
        "lan.ArpFrame",
        {
            "ethernet": {"dst": GN_MAC, "src": AD_MAC, "ethertype": lan.ETH_P_ARP},
            "arp": arp(lan.ARP_REPLY, AD_MAC, AD_VIP4, GN_MAC, GN_VIP4),
            "padding": b"",
        },
    )
    p.message(
        "ARP reply to a probe (sender IP 0.0.0.0)",
        "lan.Arp",
        arp(lan.ARP_REPLY, AD_MAC, ip("10.96.0.9"), GN_MAC, ip("0.0.0.0")),
    )

    # DHCPv4 (RFC 2132): the options of a DHCPDISCOVER and of the DHCPOFFER.
    p.message("DHCPDISCOVER option 53 (Message Type)", "dhcp.Option", {"code": 53, "data": bytes([1])})
    p.message("DHCPOFFER option 53 (Message Type)", "dhcp.Option", {"code": 53, "data": bytes([2])})
    p.message("DHCPOFFER option 54 (Server Identifier = A4)", "dhcp.Option", {"code": 54, "data": AD_VIP4})
    p.message(
        "DHCPOFFER option 51 (Lease Time)", "dhcp.Option", {"code": 51, "data": LEASE_TIME.to_bytes(4, "big")}
    )
    p.message(
        "DHCPOFFER option 1 (Subnet Mask)", "dhcp.Option", {"code": 1, "data": ip("255.255.0.0")}
    )
    p.message("DHCPOFFER option 26 (Interface MTU)", "dhcp.Option", {"code": 26, "data": MTU.to_bytes(2, "big")})

    # DHCPv6 (RFC 8415): the options of a Solicit, and the server's DUID.
    # (Not as dhcp6.DuidLinkLayer: a top-level `type` field is taken for a
    # CYPHONIC message type by the tests.)
    p.message(
        "Solicit option 1 (Client Identifier, DUID-LL)", "dhcp6.Option", {"code": 1, "data": duid_ll(GN_MAC)}
    )
    p.message("Solicit option 8 (Elapsed Time, 0)", "dhcp6.Option", {"code": 8, "data": bytes(2)})
    p.message(
        "Solicit option 3 (IA_NA, IAID 1, no addresses)",
        "dhcp6.Option",
        {"code": 3, "data": struct.pack("!III", 1, 0, 0)},
    )
    p.message(
        "Advertise option 2 (Server Identifier, DUID-LL of the LAN port)",
        "dhcp6.Option",
        {"code": 2, "data": duid_ll(AD_MAC)},
    )

    # Neighbor Discovery (RFC 4861): the adapter's advertisement's IPv6
    # header, and the Prefix Information and MTU options of its RA.
    p.message(
        "Neighbor Advertisement, IPv6 header (link-local to the solicitor)",
        "lan.IPv6Header",
        {
            "first_word": {"version": 6, "traffic_class": 0, "flow_label": 0},
            "payload_length": 32,  # 24-byte NA + target link-layer address option
            "next_header": lan.PROTO_ICMPV6,
            "hop_limit": lan.ND_HOP_LIMIT,
            "src": AD_LINK_LOCAL,
            "dst": GN_LINK_LOCAL,
        },
    )
    p.message(
        "Router Advertisement, Prefix Information option body (L=1, A=0)",
        "lan.PrefixInformation",
        {
            "prefix_length": 64,
            "flags": {"on_link": True, "autonomous": False, "reserved": 0},
            "valid_lifetime": 2592000,
            "preferred_lifetime": 604800,
            "reserved": 0,
            "prefix": ip("fd7c:1f00::"),
        },
    )
    p.message("Router Advertisement, MTU option body", "lan.MtuOption", {"reserved": 0, "mtu": MTU})
    return p


def mobility() -> Protocol:
    """What a move or a failed path puts on the wire of its own: the NMS's
    answer to the second of two ends that ask for a route to each other at
    once (mobility.md, "A path that fails")."""
    p = Protocol("mobility", "Mobility and failover")
    p.inputs = {"mn_session_key": MN_SESSION}
    detail = "the peer is selecting a route to you"
    body = p.message(
        "Signaling Error Body (in_progress)", "signaling.SignalingErrorBody", {"code": "in_progress", "detail": detail}
    )
    nms_reply(p, "Signaling Error (in_progress)", "SignalingError", 0x00000601, MN_SESSION,
              "Signaling Error Body (in_progress)", body, "in progress nonce")
    return p


# One function per protocol document; add new ones here.
GENERATORS = (
    certificates,
    authentication,
    registration,
    route_selection,
    tunnel_and_rekey_vectors,
    relay_vectors,
    adapter,
    mobility,
)


def build_all() -> list[Protocol]:
    return [generate() for generate in GENERATORS]


# --- Markdown --------------------------------------------------------------

BEGIN, END = "<!-- vectors:begin -->", "<!-- vectors:end -->"


def wrap(hexstr: str, width: int = 64) -> list[str]:
    return [hexstr[i : i + width] for i in range(0, len(hexstr), width)] or [""]


def render(p: Protocol) -> str:
    lines = [
        BEGIN,
        "",
        f"Generated by `protocols/vectors/generate.py` into `protocols/vectors/{p.name}.json`;",
        "do not edit by hand. Fixed inputs are listed in the JSON file.",
        "",
    ]
    for m in p.messages:
        lines.append(f"#### {m['name']}")
        lines.append("")
        lines.append(f"`{m['schema']}`, {len(m['hex']) // 2} bytes:")
        lines.append("")
        lines.append("```hex")
        lines.extend(wrap(m["hex"]))
        lines.append("```")
        lines.append("")
        lines.append("| offset | field | bytes |")
        lines.append("|---:|---|---|")
        for part in m["layout"]:
            shown = part["hex"] if len(part["hex"]) <= 48 else part["hex"][:40] + f"… ({len(part['hex']) // 2} B)"
            lines.append(f"| {part['offset']} | `{part['field']}` | `{shown}` |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def splice(text: str, block: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0:
        return text.rstrip("\n") + "\n\n## Golden vectors\n\n" + block + "\n"
    return text[:start] + block + text[end + len(END) :]


def outputs() -> dict[Path, str]:
    files: dict[Path, str] = {}
    for p in build_all():
        files[HERE / f"{p.name}.json"] = json.dumps(p.doc(), indent=2) + "\n"
        md = PROTOCOLS / f"{p.name}.md"
        current = md.read_text() if md.exists() else f"# {p.title}\n"
        files[md] = splice(current, render(p))
    return files


def without_vectors(files: dict[Path, str]) -> list[Path]:
    """Protocol documents no generator writes vectors for."""
    return [md for md in sorted(PROTOCOLS.glob("*.md")) if md.name != "README.md" and md not in files]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a file is out of date")
    args = parser.parse_args()
    files = outputs()
    stale = []
    for path, text in files.items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.write_text(text)
    for path in stale:
        print(("stale: " if args.check else "wrote: ") + str(path.relative_to(PROTOCOLS.parent)))
    missing = without_vectors(files)
    for path in missing:
        print("no vectors (add a generator to GENERATORS): " + str(path.relative_to(PROTOCOLS.parent)))
    return 1 if (args.check and stale) or missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
