"""The key hierarchy (DESIGN section 2). Nothing else imports nacl.

- CA and node identities: Ed25519 (signing) + X25519 (agreement).
- Certificates: `wire.certificate` bodies signed by the CA.
- Signaling: XChaCha20-Poly1305 with a random 24-byte nonce (login grant,
  tickets, NMS messages, tunnel hellos): rare, so a random nonce is safe.
- Data: ChaCha20-Poly1305-IETF (or AES-256-GCM where both ends' CPUs run
  it) under the End Key with a 64-bit counter nonce, called through
  libsodium's cffi binding with no per-call Python wrapper.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.public
import nacl.signing
from construct import Construct
from nacl._sodium import ffi, lib

from cyphonic.errors import AuthenticationError
from cyphonic.wire import certificate as wire_cert
from cyphonic.wire.common import build, parse

KEY_SIZE = 32
XNONCE = 24
TAG = 16


def random_key() -> bytes:
    return secrets.token_bytes(KEY_SIZE)


def kdf(label: bytes, *parts: bytes) -> bytes:
    """A 32-byte key bound to `label` and every part (BLAKE2b, keyed by label)."""
    material = b"".join(len(p).to_bytes(2, "big") + p for p in parts)
    return nacl.hash.blake2b(material, key=label[:64], digest_size=32, encoder=nacl.encoding.RawEncoder)


# --- identities -------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """An Ed25519 signing key and an X25519 agreement key."""

    sign_key: nacl.signing.SigningKey
    dh_key: nacl.public.PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())

    @property
    def sign_public(self) -> bytes:
        return bytes(self.sign_key.verify_key)

    @property
    def dh_public(self) -> bytes:
        return bytes(self.dh_key.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.sign_key.sign(data).signature

    def save(self, path: Path) -> None:
        doc = {
            "sign_seed": base64.b64encode(bytes(self.sign_key)).decode(),
            "dh_secret": base64.b64encode(bytes(self.dh_key)).decode(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
            f.write("\n")

    @classmethod
    def load(cls, path: Path) -> Identity:
        doc = json.loads(Path(path).read_text())
        return cls(
            nacl.signing.SigningKey(base64.b64decode(doc["sign_seed"])),
            nacl.public.PrivateKey(base64.b64decode(doc["dh_secret"])),
        )


def verify_signature(public: bytes, data: bytes, signature: bytes) -> None:
    try:
        nacl.signing.VerifyKey(public).verify(data, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        raise AuthenticationError("bad signature") from None


# --- certificates (file format: cyphonic.keys) -------------------------------


def issue_certificate(
    ca: Identity,
    *,
    serial: int,
    role: str,
    fqdn: str,
    sign_key: bytes,
    dh_key: bytes,
    not_before: int,
    not_after: int,
) -> bytes:
    body = build(
        wire_cert.CertificateBody,
        dict(
            serial=serial,
            role=role,
            fqdn=fqdn,
            sign_key=sign_key,
            dh_key=dh_key,
            not_before=not_before,
            not_after=not_after,
            issuer=ca.sign_public,
        ),
    )
    return body + ca.sign(body)


def verify_certificate(
    data: bytes,
    ca_public: bytes,
    now: float,
    revoked: frozenset[int] | set[int] = frozenset(),
    role: str | None = None,
):
    """The parsed certificate body, or AuthenticationError with the reason."""
    cert = parse(wire_cert.Certificate, data)
    body = cert.body.value
    if bytes(body.issuer) != ca_public:
        raise AuthenticationError("unknown CA")
    verify_signature(ca_public, cert.body.data, cert.signature)
    if now < body.not_before:
        raise AuthenticationError("not yet valid")
    if now > body.not_after:
        raise AuthenticationError("expired")
    if body.serial in revoked:
        raise AuthenticationError("revoked")
    if role is not None and str(body.role) != role:
        raise AuthenticationError("wrong role")
    return body


# --- signaling seal (XChaCha20-Poly1305, random nonce) ------------------------


def seal(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    nonce = secrets.token_bytes(XNONCE)
    return nonce + sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, nonce, key)


def open_sealed(key: bytes, data: bytes, aad: bytes = b"") -> bytes:
    if len(data) < XNONCE + TAG:
        raise AuthenticationError("sealed box too short")
    try:
        return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(bytes(data[XNONCE:]), aad, bytes(data[:XNONCE]), key)
    except nacl.exceptions.CryptoError:
        raise AuthenticationError("does not open under the key") from None


# --- sealed messages: the header is the AAD of the sealed tail ----------------
# Every signaling and relay message that carries a sealed body ends in it (a
# GreedyBytes field: `sealed`, or `inner` of a Relayed frame); the bytes
# before it are authenticated as AAD, so no header field can be altered.


def _tail(schema: Construct) -> str:
    return schema.subcons[-1].name


def seal_message(schema: Construct, fields: dict, key: bytes, body: bytes) -> bytes:
    """`schema` built from `fields` with its sealed tail empty, then `body`
    sealed under `key` with those header bytes as AAD."""
    header = build(schema, {**fields, _tail(schema): b""})
    return header + seal(key, body, header)


def open_message(schema: Construct, data: bytes, key: bytes | Callable[[Any], bytes]) -> tuple[Any, bytes]:
    """(parsed message, opened body), or ParseError / AuthenticationError.
    `key` may be a function of the parsed message, for a key it carries
    (the NMS finds the session key in the request's ticket)."""
    msg = parse(schema, data)
    sealed = bytes(msg[_tail(schema)])
    aad = bytes(data[: len(data) - len(sealed)])
    return msg, open_sealed(key(msg) if callable(key) else key, sealed, aad)


# --- ephemeral agreement (forward secrecy) ----------------------------------


class Ephemeral:
    """A one-use X25519 key pair."""

    def __init__(self) -> None:
        self._secret = nacl.public.PrivateKey.generate()
        self.public = bytes(self._secret.public_key)

    def agree(self, peer_public: bytes) -> bytes:
        try:
            shared = sodium.crypto_scalarmult(bytes(self._secret), peer_public)
        except (nacl.exceptions.RuntimeError, nacl.exceptions.TypeError, nacl.exceptions.CryptoError):
            raise AuthenticationError("invalid ephemeral key") from None
        return shared


def login_key(shared: bytes, nonce: bytes) -> bytes:
    return kdf(b"cyphonic login", shared, nonce)


def end_keys(shared: bytes, tunnel_key: bytes, transcript: bytes, initiator: bool) -> tuple[bytes, bytes]:
    """(send, receive) End Keys: the ephemeral agreement bound to the key the
    NMS gave both ends, so neither a passive TRS nor the NMS alone learns them."""
    i2r = kdf(b"cyphonic end key i2r", shared, tunnel_key, transcript)
    r2i = kdf(b"cyphonic end key r2i", shared, tunnel_key, transcript)
    return (i2r, r2i) if initiator else (r2i, i2r)


# --- data plane AEAD ----------------------------------------------------------

_NONCE_PAD = b"\0\0\0\0"

# The data plane's cipher suites (protocols/tunnel.md#cipher-suites): one
# bit each in the hellos' `suites`. ChaCha20-Poly1305 is the default and the
# only one a CPU without AES instructions offers; AES-256-GCM (libsodium's,
# only where the CPU has AES-NI and PCLMUL) is several times faster where it
# exists. Both take the same 12-byte counter nonce and 16-byte tag.
CHACHA20_POLY1305 = "chacha20-poly1305"
AES256_GCM = "aes-256-gcm"
SUITE_BITS = {CHACHA20_POLY1305: 0x01, AES256_GCM: 0x02}
SUITES = {bit: name for name, bit in SUITE_BITS.items()}
lib.sodium_init()  # libsodium looks at the CPU here: aes256gcm_is_available needs it


def aes_available() -> bool:
    """Can this CPU run libsodium's AES-256-GCM (AES-NI and PCLMUL)?"""
    return bool(lib.crypto_aead_aes256gcm_is_available())


def suites_offered(choice: str) -> int:
    """The `suites` bits this node offers for a config's `cipher`:
    "auto" = every suite this CPU runs fast, else the one named."""
    if choice == "auto":
        return SUITE_BITS[CHACHA20_POLY1305] | (SUITE_BITS[AES256_GCM] if aes_available() else 0)
    return SUITE_BITS[choice]


def choose_suite(offered: int, allowed: int) -> str:
    """The responder's pick among the initiator's offer: AES-256-GCM when
    both run it, else ChaCha20-Poly1305 (AuthenticationError if none)."""
    common = offered & allowed
    for name in (AES256_GCM, CHACHA20_POLY1305):
        if common & SUITE_BITS[name]:
            return name
    raise AuthenticationError("no cipher suite in common")


_ENCRYPT = {
    CHACHA20_POLY1305: lib.crypto_aead_chacha20poly1305_ietf_encrypt,
    AES256_GCM: lib.crypto_aead_aes256gcm_encrypt,
}
_DECRYPT = {
    CHACHA20_POLY1305: lib.crypto_aead_chacha20poly1305_ietf_decrypt,
    AES256_GCM: lib.crypto_aead_aes256gcm_decrypt,
}


def native_functions(suite: str) -> tuple[int, int, int]:
    """Addresses of libsodium's AEAD encrypt and decrypt for `suite` and of
    the relay MAC's BLAKE2b, for the compiled loops (cyphonic.fastpath):
    they call the very libsodium everything else here does."""
    names = (_ENCRYPT[suite], _DECRYPT[suite], _blake2b)
    return tuple(int(ffi.cast("uintptr_t", f)) for f in names)  # type: ignore[return-value]


class DataCipher:
    """The tunnel's AEAD (ChaCha20-Poly1305-IETF, or AES-256-GCM where both
    ends run it) with the counter nonce, for one tunnel.

    The nonce is 4 zero bytes + the 8-byte little-endian counter that the
    capsule header carries, so building the nonce is one concatenation.
    Buffers are allocated once per tunnel, not per packet: a rekey's new
    keys are made without them (`buffers=False`; the in-place `seal_at` /
    `open_at` need none) and take the retired keys' with `take_buffers`.
    """

    BUFFER = 65536 + 64

    def __init__(self, send_key: bytes, recv_key: bytes, buffers: bool = True, suite: str = CHACHA20_POLY1305) -> None:
        if suite == AES256_GCM and not aes_available():
            raise ValueError("AES-256-GCM needs a CPU with AES-NI and PCLMUL")
        self.suite = suite
        self._encrypt, self._decrypt = _ENCRYPT[suite], _DECRYPT[suite]
        self._send_key = ffi.from_buffer(bytes(send_key))
        self._recv_key = ffi.from_buffer(bytes(recv_key))
        self._out = self._out_c = self._in = self._in_c = self._len = None
        if buffers:
            self._out = bytearray(self.BUFFER)
            self._out_c = ffi.from_buffer(self._out)
            self._in = bytearray(self.BUFFER)
            self._in_c = ffi.from_buffer(self._in)
            self._len = ffi.new("unsigned long long *")

    def native_keys(self) -> tuple[int, int]:
        """Addresses of the (send, receive) keys, valid while this object lives."""
        return int(ffi.cast("uintptr_t", self._send_key)), int(ffi.cast("uintptr_t", self._recv_key))

    def take_buffers(self, other: DataCipher) -> None:
        """Use `other`'s buffers from now on (`other` keeps only `open_at`)."""
        if self._out is None:
            self._out, self._out_c, self._in, self._in_c, self._len = (
                other._out,
                other._out_c,
                other._in,
                other._in_c,
                other._len,
            )
            other._out = other._out_c = other._in = other._in_c = other._len = None

    def seal(self, header: bytes, plaintext: bytes | memoryview) -> bytes:
        """header (13 bytes, ending in the counter) + ciphertext + tag."""
        n = len(header)
        if n + len(plaintext) + TAG > self.BUFFER:
            raise ValueError("capsule too large")
        out, out_c, out_len = self._out, self._out_c, self._len
        # only the current keys seal or open out of place, and they hold the
        # buffers (Tunnel.rotate hands them over: take_buffers)
        assert out is not None and out_c is not None and out_len is not None, "keys without buffers"
        out[:n] = header
        self._encrypt(
            out_c + n,
            out_len,
            ffi.from_buffer(plaintext),
            len(plaintext),
            header,
            n,
            ffi.NULL,
            _NONCE_PAD + header[n - 8 :],
            self._send_key,
        )
        return bytes(out[: n + out_len[0]])

    def open(self, datagram: bytes | memoryview, header_len: int) -> bytes:
        """The plaintext of a capsule, or AuthenticationError."""
        if len(datagram) < header_len + TAG:
            raise AuthenticationError("capsule too short")
        if len(datagram) - header_len > self.BUFFER:
            raise AuthenticationError("capsule too long")
        in_, in_c, in_len = self._in, self._in_c, self._len
        assert in_ is not None and in_c is not None and in_len is not None, "keys without buffers"  # as in seal
        header = bytes(datagram[:header_len])
        body = ffi.from_buffer(datagram)
        rc = self._decrypt(
            in_c,
            in_len,
            ffi.NULL,
            body + header_len,
            len(datagram) - header_len,
            header,
            header_len,
            _NONCE_PAD + header[header_len - 8 :],
            self._recv_key,
        )
        if rc != 0:
            raise AuthenticationError("capsule does not open under the End Key")
        return bytes(in_[: in_len[0]])

    # In-place variants for the batch data path: the datagram is built (or
    # received) in a PacketBuffer and sealed (opened) where it lies, so no
    # plaintext or ciphertext is copied or allocated per packet.

    def seal_at(self, buf: PacketBuffer, pos: int, header_len: int, plain_len: int) -> int:
        """Seal buf[pos+header_len:][:plain_len] in place (header = AAD, nonce
        = its last 8 bytes); returns the datagram's length."""
        p = buf.ptr + pos
        nonce = _NONCE_PAD + bytes(buf.view[pos + header_len - 8 : pos + header_len])
        self._encrypt(
            p + header_len, ffi.NULL, p + header_len, plain_len, p, header_len, ffi.NULL, nonce, self._send_key
        )
        return header_len + plain_len + TAG

    def open_at(self, buf: PacketBuffer, pos: int, length: int, header_len: int) -> int:
        """Open the capsule buf[pos:pos+length] in place; returns the
        plaintext length (plaintext at pos+header_len) or AuthenticationError."""
        if length < header_len + TAG:
            raise AuthenticationError("capsule too short")
        p = buf.ptr + pos
        nonce = _NONCE_PAD + bytes(buf.view[pos + header_len - 8 : pos + header_len])
        rc = self._decrypt(
            p + header_len,
            ffi.NULL,
            ffi.NULL,
            p + header_len,
            length - header_len,
            p,
            header_len,
            nonce,
            self._recv_key,
        )
        if rc != 0:
            raise AuthenticationError("capsule does not open under the End Key")
        return length - header_len - TAG


class PacketBuffer:
    """A preallocated buffer that datagrams are built, sealed and opened in."""

    def __init__(self, size: int = 2 * 65536, data: bytearray | None = None) -> None:
        self.data = data if data is not None else bytearray(size)
        self.view = memoryview(self.data)
        self.ptr = ffi.from_buffer(self.data)


def ca_public_key(certificate: bytes) -> bytes:
    """The signing key of a self-signed CA certificate (checked)."""
    cert = parse(wire_cert.Certificate, certificate)
    body = cert.body.value
    if str(body.role) != "ca" or bytes(body.issuer) != bytes(body.sign_key):
        raise AuthenticationError("not a CA certificate")
    verify_signature(bytes(body.sign_key), cert.body.data, cert.signature)
    return bytes(body.sign_key)


# --- relay (TRS) ------------------------------------------------------------------


def relay_keys(tunnel_key: bytes) -> tuple[bytes, bytes]:
    """(seal key, MAC key) of a relay session, both from its Tunnel Key."""
    return kdf(b"cyphonic relay seal", tunnel_key), kdf(b"cyphonic relay mac", tunnel_key)


RELAY_TAG = 16
_blake2b = lib.crypto_generichash_blake2b_salt_personal
_mac_scratch = ffi.new("unsigned char[16]")  # one frame at a time: the data path is one task


# What a data frame's relay MAC covers (protocols/relay.md#data-frames): the
# relay head and the capsule header (bytes 0-18), the inner datagram's last
# 16 bytes (the capsule's AEAD tag) and the covered length (u16). The TRS
# forwards only session members' frames, and the body it cannot check
# anyway is bound by the AEAD tag the peer checks: hashing 37 bytes instead
# of the whole frame made the MAC, not the AEAD, the relay's cost.
RELAY_MAC_HEAD = 19


def relay_mac_input(data: bytes | memoryview) -> bytes:
    """The bytes a frame's relay MAC is computed over (`data`: the frame
    without its tag); a frame too short to hold a capsule: all of it."""
    n = len(data)
    if n < RELAY_MAC_HEAD + RELAY_TAG:
        return bytes(data)
    return bytes(data[:RELAY_MAC_HEAD]) + bytes(data[n - RELAY_TAG :]) + n.to_bytes(2, "big")


def relay_mac(mac_key: bytes, data: bytes | memoryview) -> bytes:
    """16-byte keyed BLAKE2b tag of a data frame (`data` without the tag):
    data frames are authenticated, not encrypted again (the End Key
    already protects them)."""
    covered = relay_mac_input(data)
    _blake2b(_mac_scratch, RELAY_TAG, covered, len(covered), mac_key, len(mac_key), ffi.NULL, ffi.NULL)
    return bytes(ffi.buffer(_mac_scratch, RELAY_TAG))


def relay_mac_ok(mac_key: bytes, data: bytes | memoryview, tag: bytes | memoryview) -> bool:
    return sodium.sodium_memcmp(relay_mac(mac_key, data), bytes(tag))


def relay_mac_into(mac_key: bytes, buf: PacketBuffer, start: int, length: int) -> None:
    """The tag of buf[start:start+length], written right behind it."""
    end = start + length
    buf.data[end : end + RELAY_TAG] = relay_mac(mac_key, buf.view[start:end])


def relay_mac_run(buf: PacketBuffer, start: int, n: int, size: int, head: bytes, mac_key: bytes) -> int:
    """The TRS's batch check: from buf[start], the frames (`size` bytes each
    but the last, up to n) that begin with `head` and carry a good relay
    MAC; returns where they end (fastpath.relay_mac_run is the same in C)."""
    pos = start
    while pos < n:
        length = min(size, n - pos)
        if length < len(head) + RELAY_TAG or buf.data[pos : pos + len(head)] != head:
            break
        if not relay_mac_ok_at(mac_key, buf, pos, length - RELAY_TAG):
            break
        pos += length
    return pos


def relay_mac_ok_at(mac_key: bytes, buf: PacketBuffer, start: int, length: int) -> bool:
    """Does the tag right behind buf[start:start+length] authenticate it?"""
    end = start + length
    return sodium.sodium_memcmp(relay_mac(mac_key, buf.view[start:end]), bytes(buf.view[end : end + RELAY_TAG]))
