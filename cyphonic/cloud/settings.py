"""cloud.toml: one file for `cyphonic.auth`, `cyphonic.nms` and
`cyphonic.cloud`. Each section belongs to its program's package; this
module only puts them together, with the keys every program shares."""

from __future__ import annotations

from cyphonic import config as c
from cyphonic import control
from cyphonic.auth import settings as auth
from cyphonic.nms import settings as nms
from cyphonic.trs import settings as trs

SCHEMA: c.Schema = {
    "domain": c.Key(c.text, doc="the overlay's DNS domain: a node's FQDN is NAME.DOMAIN"),
    "log_level": c.Key(c.text, "INFO", doc="Python logging level (DEBUG, INFO, WARNING, ERROR)"),
    "metrics": c.Key(
        c.optional_address,
        None,
        doc="ADDRESS:PORT where the cloud (or the AS or NMS run alone) serves Prometheus metrics"
        " (GET /metrics); empty: off",
    ),
    "auth": auth.SECTION,
    "nms": nms.SECTION,
    "trs": trs.EMBEDDED,
    "control_group": c.Key(
        control.existing_group,
        "",
        doc="besides root and the daemon's uid, members of this group may read the status of the cloud and its"
        " embedded TRS",
    ),
}
