"""Cipher suite negotiation in the tunnel handshake (protocols/tunnel.md,
cipher suites): AES-256-GCM where both ends run it, ChaCha20-Poly1305
otherwise, the choice bound into the End Keys."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

from cyphonic import crypto
from cyphonic.config import ConfigError, load
from cyphonic.core import rekey
from cyphonic.core import handshake
from cyphonic.core import tunnel as core
from cyphonic.errors import AuthenticationError
from cyphonic.node.settings import SCHEMA

MN = core.PeerInfo("mn.x", ipaddress.IPv4Address("10.0.0.2"), ipaddress.IPv6Address("fd00::2"))
CN = core.PeerInfo("cn.x", ipaddress.IPv4Address("10.0.0.3"), ipaddress.IPv6Address("fd00::3"))
CHACHA, AES = crypto.SUITE_BITS[crypto.CHACHA20_POLY1305], crypto.SUITE_BITS[crypto.AES256_GCM]
needs_aes = pytest.mark.skipif(not crypto.aes_available(), reason="this CPU has no AES-NI: it never offers AES")


def negotiate(offer: int, allow: int) -> tuple[core.Tunnel, core.Tunnel]:
    key, now = crypto.random_key(), time.time()
    initiator = handshake.Initiator(core.Path(7, "TunnelRequestToCN", True, CN, ("192.0.2.3", 4500), key), MN, now, offer)
    path = core.Path(7, "TunnelRequestToCN", False, MN, ("192.0.2.2", 4500), key)
    cn, response = handshake.respond(path, CN, initiator.request, ("192.0.2.2", 4500), now, allow)
    return initiator.accept_response(response, ("192.0.2.3", 4500), now), cn


def carries(a: core.Tunnel, b: core.Tunnel) -> bool:
    datagram = a.seal(core.CAPSULE, b"hello")
    return b.open(datagram, ("192.0.2.2", 4500), time.time()) == b"hello"


@needs_aes
def test_both_ends_with_aes_use_aes_and_data_flows():
    mn, cn = negotiate(CHACHA | AES, CHACHA | AES)
    assert mn.cipher.suite == cn.cipher.suite == crypto.AES256_GCM
    assert carries(mn, cn) and carries(cn, mn)


@pytest.mark.parametrize("offer, allow", [(CHACHA, CHACHA | AES), (CHACHA | AES, CHACHA), (CHACHA, CHACHA)])
def test_an_end_without_aes_gets_chacha20_poly1305(offer, allow):
    if (offer | allow) & AES and not crypto.aes_available():
        pytest.skip("this CPU has no AES-NI")
    mn, cn = negotiate(offer, allow)
    assert mn.cipher.suite == cn.cipher.suite == crypto.CHACHA20_POLY1305
    assert carries(mn, cn) and carries(cn, mn)


@needs_aes
def test_no_suite_in_common_is_refused():
    with pytest.raises(AuthenticationError, match="no cipher suite in common"):
        negotiate(CHACHA, AES)


@needs_aes
def test_an_answer_naming_a_suite_not_offered_is_refused(monkeypatch):
    monkeypatch.setattr(crypto, "choose_suite", lambda offered, allowed: crypto.AES256_GCM)
    with pytest.raises(AuthenticationError, match="did not offer"):
        negotiate(CHACHA, CHACHA | AES)


def test_the_choice_is_bound_into_the_end_keys():
    # the same agreement, another choice: other End Keys (no downgrade can pass unnoticed)
    shared, key = crypto.random_key(), crypto.random_key()
    keys = {
        chosen: crypto.end_keys(shared, key, handshake._transcript(7, b"i" * 32, b"r" * 32, CHACHA | AES, chosen), True)
        for chosen in (CHACHA, AES)
    }
    assert keys[CHACHA] != keys[AES]


@needs_aes
def test_a_rekey_keeps_the_suite():
    mn, cn = negotiate(CHACHA | AES, CHACHA | AES)
    now = time.time()
    request = rekey.start(mn, now, 1234)
    response = rekey.accept_request(cn, request, now, 5678)
    assert rekey.accept_response(mn, response, now)
    assert mn.cipher.suite == crypto.AES256_GCM and cn.next is not None
    assert cn.next.cipher.suite == crypto.AES256_GCM


def test_the_cipher_config_key_names_a_suite_or_auto(tmp_path: Path, monkeypatch):
    base = 'certificate = "c"\nkey = "k"\nca = "a"\nauth = ["192.0.2.1:7000"]\nnms = ["192.0.2.1:7001"]\n'
    config = tmp_path / "node.toml"
    config.write_text(base)
    assert load(config, SCHEMA)["cipher"] == "auto"
    config.write_text(base + 'cipher = "chacha20-poly1305"\n')
    assert crypto.suites_offered(load(config, SCHEMA)["cipher"]) == CHACHA
    config.write_text(base + 'cipher = "rot13"\n')
    with pytest.raises(ConfigError, match="cipher"):
        load(config, SCHEMA)
    monkeypatch.setattr(crypto, "aes_available", lambda: False)
    config.write_text(base + 'cipher = "aes-256-gcm"\n')
    with pytest.raises(ConfigError, match="AES-NI"):
        load(config, SCHEMA)
    assert crypto.suites_offered("auto") == CHACHA  # a CPU without AES offers ChaCha20-Poly1305 only
