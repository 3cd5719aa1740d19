"""The [nms] section of cloud.toml and the NMS built from it."""

from __future__ import annotations

from typing import Any

from cyphonic import config as c
from cyphonic.keys import RevocationList, read_secret
from cyphonic.nms.service import NodeManagementService

SECTION: c.Schema = {
    "listen": c.Key(c.addresses, [("0.0.0.0", 7001), ("::", 7001)], doc="the NMS's UDP addresses"),
    "nms_key": c.Key(c.path, doc="the AS–NMS key the tickets are sealed under (shared with [auth] nms_key)"),
    "refresh": c.Key(
        c.integer(1, 3600), 10, doc="seconds between a node's registrations; one is forgotten after three missed"
    ),
    "trs": c.Key(c.addresses, [], doc="the Tunnel Relay Services the NMS may assign (their public addresses)"),
    "trs_key": c.Key(c.path, None, doc="the NMS–TRS key, shared with every TRS (unset: no relay)"),
}


def build(cfg: dict[str, Any]) -> NodeManagementService:
    """The NMS of a checked cloud.toml (its [nms] section; the revocation
    list is the AS's, [auth] revoked)."""
    n = cfg["nms"]
    trs_key = read_secret(n["trs_key"]) if n["trs_key"] else None
    return NodeManagementService(
        read_secret(n["nms_key"]),
        refresh=n["refresh"],
        trs=n["trs"],
        trs_key=trs_key,
        revoked=RevocationList(cfg["auth"]["revoked"]),
    )
