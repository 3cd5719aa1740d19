"""trs.toml, the [trs] section of cloud.toml (a TRS in the cloud's process),
and the relay service built from either."""

from __future__ import annotations

import logging
from typing import Any

from cyphonic import config as c
from cyphonic import control, crypto, fastpath
from cyphonic.core.relay import MacRun, RelayService
from cyphonic.errors import ConfigError
from cyphonic.keys import read_secret

log = logging.getLogger("cyphonic.trs")

SCHEMA: c.Schema = {  # trs.toml
    "listen": c.Key(c.addresses, [("0.0.0.0", 7002), ("::", 7002)], doc="the TRS's UDP addresses"),
    "public": c.Key(c.addresses, doc="where nodes reach this TRS, one address per family (list the same in [nms] trs)"),
    "nms_key": c.Key(c.path, doc="the NMS–TRS key ([nms] trs_key of cloud.toml)"),
    "log_level": c.Key(c.text, "INFO", doc="Python logging level (DEBUG, INFO, WARNING, ERROR)"),
    "metrics": c.Key(
        c.optional_address,
        None,
        doc="ADDRESS:PORT where the TRS serves Prometheus metrics (GET /metrics); empty: off",
    ),
    "control_group": c.Key(
        control.existing_group, "", doc="besides root and the TRS's uid, members of this group may read its status"
    ),
    "packet_loops": c.Key(
        fastpath.config_choice,
        "auto",
        doc='the relay\'s per-frame MAC check: "compiled" (cyphonic.fastpath, built by the install step),'
        ' "python" (the reference), "auto": compiled where built',
    ),
}

# [trs] of cloud.toml: `python -m cyphonic.cloud` can run a TRS in the same
# process (list its public addresses in [nms] trs too)
EMBEDDED: c.Schema = {
    "enabled": c.Key(c.boolean, False, doc="run a TRS in the cloud's process"),
    "listen": c.Key(c.addresses, [("0.0.0.0", 7002), ("::", 7002)], doc="the embedded TRS's UDP addresses"),
    "public": c.Key(c.addresses, [], doc="where nodes reach it (needed when enabled; list them in [nms] trs too)"),
    "nms_key": c.Key(c.path, None, doc="the NMS–TRS key (unset: [nms] trs_key)"),
}


def mac_run(choice: str) -> MacRun:
    """How the relay checks a run of frames' MACs, for `packet_loops`."""
    return fastpath.relay_mac_run if fastpath.chosen(choice) else crypto.relay_mac_run


def build(cfg: dict[str, Any]) -> RelayService:
    """The TRS of a checked trs.toml."""
    if not cfg["public"]:
        raise ConfigError("public", "must list where nodes reach this TRS")
    return RelayService(read_secret(cfg["nms_key"]), cfg["public"], mac_run(cfg["packet_loops"]))


def build_embedded(cfg: dict[str, Any]) -> RelayService | None:
    """The TRS of a checked cloud.toml: None unless [trs] enabled. Its key
    defaults to the NMS's ([nms] trs_key)."""
    t = cfg["trs"]
    if not t["enabled"]:
        return None
    if not t["public"]:
        raise ValueError("trs.public: must list where nodes reach the TRS")
    key_path = t["nms_key"] or cfg["nms"]["trs_key"]
    if key_path is None:
        raise ValueError("trs.nms_key: the NMS–TRS key is needed")
    return RelayService(read_secret(key_path), t["public"], mac_run("auto"))
