"""node.toml: what `cyphonic enroll node` writes, checked strictly."""

from pathlib import Path
from typing import Any

from cyphonic import config as c
from cyphonic import control, crypto, fastpath


@c.kind('"auto", "chacha20-poly1305" or "aes-256-gcm"')
def cipher_suite(value: Any, base: Path) -> str:
    if value not in ("auto", crypto.CHACHA20_POLY1305, crypto.AES256_GCM):
        raise ValueError(f'must be "auto", "{crypto.CHACHA20_POLY1305}" or "{crypto.AES256_GCM}"')
    if value == crypto.AES256_GCM and not crypto.aes_available():
        raise ValueError("aes-256-gcm needs a CPU with AES-NI and PCLMUL, which this one lacks")
    return value


# What every daemon with an identity has (the node, the adapter).
DAEMON: c.Schema = {
    "certificate": c.Key(c.path, doc="this identity's certificate (PEM), issued by `cyphonic enroll`"),
    "key": c.Key(c.path, doc="this identity's private keys (Ed25519 signing, X25519 agreement)"),
    "ca": c.Key(c.path, doc="the CA certificate the AS's and the peers' certificates must chain to"),
    "auth": c.Key(c.addresses, doc="the AS, one address per family (the daemon logs in over each family it has)"),
    "nms": c.Key(c.addresses, doc="the NMS, one address per family (registration, route selection)"),
    "listen_port": c.Key(
        c.integer(1, 65535), 4500, doc="the UDP port of the one socket per family: signaling and tunnels alike"
    ),
    "keepalive": c.Key(c.integer(1, 600), 10, doc="seconds between keepalives on an idle tunnel"),
    "rekey_after": c.Key(
        c.integer(1, 86400),
        120,
        doc="seconds after which a tunnel's initiator replaces the End Keys, also after 2^32 packets"
        " (protocols/tunnel.md#rekeying)",
    ),
    "offload": c.Key(
        c.boolean,
        True,
        doc="offloads (TUN or LAN socket) and UDP GSO/GRO where the kernel has them;"
        " false forces the plain one-packet-per-system-call path",
    ),
    "hole_punching": c.Key(
        c.boolean, True, doc="when both ends are behind NAPT: punch a direct path beside the relayed tunnel"
    ),
    "cipher": c.Key(
        cipher_suite,
        "auto",
        doc='the data plane\'s AEAD: "auto" offers AES-256-GCM too where this CPU runs it (a tunnel uses it when'
        " both ends do), else ChaCha20-Poly1305; naming one suite offers only that one"
        " (protocols/tunnel.md#cipher-suites)",
    ),
    "packet_loops": c.Key(
        fastpath.config_choice,
        "auto",
        doc='the offload path\'s per-packet loops: "compiled" (cyphonic.fastpath, built by the install step),'
        ' "python" (the reference, byte for byte the same), "auto": compiled where built, else Python with a warning',
    ),
    "log_level": c.Key(c.text, "INFO", doc="Python logging level (DEBUG, INFO, WARNING, ERROR)"),
    "metrics": c.Key(
        c.optional_address,
        None,
        doc="ADDRESS:PORT where the node or adapter serves Prometheus metrics (GET /metrics); empty: off",
    ),
    "control_group": c.Key(
        control.existing_group,
        "",
        doc="besides root and the daemon's uid, members of this group may read `cyphonic status`",
    ),
}

SCHEMA: c.Schema = {
    **DAEMON,
    "tun": c.Key(c.text, "cyph0", doc="name of the TUN device"),
    "mtu": c.Key(c.integer(576, 65000), 1400, doc="inner MTU; protocols/README.md lists the overhead"),
    "data_thread": c.Key(
        c.boolean,
        True,
        doc="with the compiled loops: the data path on a thread of its own instead of Trio tasks"
        " (lower idle latency; node/data_thread.py)",
    ),
    "control": c.Key(
        c.text,
        "node",
        doc="name of the control socket (abstract, per network namespace); a second daemon in one namespace"
        " needs its own",
    ),
    "resolver": {
        "listen": c.Key(c.address, ("127.0.0.1", 53), doc="where the DNS resolver listens"),
        "upstream": c.Key(c.addresses, [], doc="DNS servers for names outside the overlay"),
        "ttl": c.Key(c.integer(0, 86400), 30, doc="TTL of the overlay's answers, in seconds"),
    },
}
