"""node.toml: what `cyphonic enroll node` writes, checked strictly."""

from pathlib import Path
from typing import Any

from cyphonic import config as c
from cyphonic import control, crypto, fastpath


def cipher_suite(value: Any, base: Path) -> str:
    if value not in ("auto", crypto.CHACHA20_POLY1305, crypto.AES256_GCM):
        raise ValueError(f'must be "auto", "{crypto.CHACHA20_POLY1305}" or "{crypto.AES256_GCM}"')
    if value == crypto.AES256_GCM and not crypto.aes_available():
        raise ValueError("aes-256-gcm needs a CPU with AES-NI and PCLMUL, which this one lacks")
    return value


# What every daemon with an identity has (the node, the adapter).
DAEMON: c.Schema = {
    "certificate": c.Key(c.path),
    "key": c.Key(c.path),
    "ca": c.Key(c.path),
    "auth": c.Key(c.addresses),
    "nms": c.Key(c.addresses),
    "listen_port": c.Key(c.integer(1, 65535), 4500),
    "keepalive": c.Key(c.integer(1, 600), 10),
    # seconds after which a tunnel's initiator replaces the End Keys
    # (protocols/tunnel.md#rekeying)
    "rekey_after": c.Key(c.integer(1, 86400), 120),
    # offloads (TUN or LAN socket) + UDP GSO/GRO when the kernel has them;
    # false forces the plain one-packet-per-system-call path
    "offload": c.Key(c.boolean, True),
    # when both ends are behind NAPT: try a direct path beside the relay
    "hole_punching": c.Key(c.boolean, True),
    # the data plane's cipher: "auto" offers AES-256-GCM too where this CPU
    # runs it (a tunnel uses it when both ends do), else ChaCha20-Poly1305;
    # naming one suite offers only that one (protocols/tunnel.md#cipher-suites)
    "cipher": c.Key(cipher_suite, "auto"),
    # the offload path's per-packet loops: "compiled" (cyphonic.fastpath,
    # built by the install step), "python" (the reference they match byte
    # for byte), "auto" = compiled where built
    "packet_loops": c.Key(fastpath.config_choice, "auto"),
    "log_level": c.Key(c.text, "INFO"),
    # besides root and the daemon's uid, members of this group (name or
    # gid) may read the status through the control socket
    "control_group": c.Key(control.existing_group, ""),
}

SCHEMA: c.Schema = {
    **DAEMON,
    "tun": c.Key(c.text, "cyph0"),
    "mtu": c.Key(c.integer(576, 65000), 1400),
    # with the compiled loops: the node's data path on a thread of its own
    # instead of Trio tasks (idle latency; node/data_thread.py)
    "data_thread": c.Key(c.boolean, True),
    # name of the control socket (abstract, per network namespace); a second
    # daemon in the same namespace needs its own
    "control": c.Key(c.text, "node"),
    "resolver": {
        "listen": c.Key(c.address, ("127.0.0.1", 53)),
        "upstream": c.Key(c.addresses, []),
        "ttl": c.Key(c.integer(0, 86400), 30),
    },
}
