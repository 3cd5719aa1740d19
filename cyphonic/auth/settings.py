"""The [auth] section of cloud.toml and the AS built from it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from cyphonic import config as c
from cyphonic import crypto
from cyphonic.auth.service import AuthenticationService
from cyphonic.keys import RevocationList, read_certificate, read_secret
from cyphonic.store import Store

DEFAULT_VIP4 = "10.96.0.0/16"
DEFAULT_VIP6 = "fd7c:1f00::/64"

SECTION: c.Schema = {
    "listen": c.Key(c.addresses, [("0.0.0.0", 7000), ("::", 7000)], doc="the AS's UDP addresses"),
    "ca": c.Key(c.path, None, doc="the CA certificate; unset: ca.crt beside `certificate`"),
    "certificate": c.Key(c.path, doc="the AS's own certificate, issued by the CA"),
    "key": c.Key(c.path, doc="the AS's private keys"),
    "nms_key": c.Key(c.path, doc="the AS–NMS key the tickets are sealed under (shared with [nms] nms_key)"),
    "revoked": c.Key(
        c.path, None, doc="revoked certificate serials, one per line; reread when it changes (unset: none)"
    ),
    "database": c.Key(c.path, doc="SQLite file of enrollments and virtual-IP assignments"),
    "vip4_pool": c.Key(c.network(4), None, doc=f"the virtual IPv4 addresses to assign (unset: {DEFAULT_VIP4})"),
    "vip6_pool": c.Key(c.network(6), None, doc=f"the virtual IPv6 addresses to assign (unset: {DEFAULT_VIP6})"),
    "ticket_lifetime": c.Key(
        c.integer(60, 30 * 86400),
        86400,
        doc="seconds an NMS ticket is valid; a ticket never outlives the certificate",
    ),
}


def build(cfg: dict[str, Any]) -> AuthenticationService:
    """The AS of a checked cloud.toml (its [auth] section and `domain`)."""
    a = cfg["auth"]
    certificate = read_certificate(a["certificate"])
    ca_public = crypto.ca_public_key(read_certificate(a["ca"] or Path(a["certificate"]).with_name("ca.crt")))
    store = Store(
        a["database"],
        a["vip4_pool"] or ipaddress.ip_network(DEFAULT_VIP4),
        a["vip6_pool"] or ipaddress.ip_network(DEFAULT_VIP6),
    )
    return AuthenticationService(
        identity=crypto.Identity.load(a["key"]),
        certificate=certificate,
        ca_public=ca_public,
        store=store,
        domain=cfg["domain"],
        nms_key=read_secret(a["nms_key"]),
        revoked=RevocationList(a["revoked"]),
        ticket_lifetime=a["ticket_lifetime"],
    )
