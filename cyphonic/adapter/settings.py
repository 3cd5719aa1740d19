"""adapter.toml: what `cyphonic enroll adapter` writes, checked strictly."""

from cyphonic import config as c
from cyphonic.node.settings import DAEMON

SCHEMA: c.Schema = {
    **DAEMON,
    "lan": c.Key(c.text, "lan0", doc="the LAN port of the general nodes: the kernel keeps no address on it"),
    "mtu": c.Key(
        c.integer(1280, 9000),
        1400,
        doc="the overlay MTU the general nodes get (DHCP option 26, RA MTU); larger DF packets get ICMP"
        ' "fragmentation needed", TCP SYNs an MSS to fit',
    ),
    "general_nodes": c.Key(c.path, "general", doc="directory of NAME.key / NAME.crt, one pair per general node"),
    "leases": c.Key(
        c.path, "leases.json", doc="where leases (and the peers each general node talked to) survive restarts"
    ),
    "lease_time": c.Key(c.integer(60, 7 * 86400), 3600, doc="DHCP lease time in seconds"),
    "general_node_refresh": c.Key(
        c.integer(5, 86400), 30, doc="seconds between the adapter's requests to the AS for its general nodes"
    ),
    "control": c.Key(c.text, "adapter", doc="name of the control socket (abstract, per network namespace)"),
    "resolver": {
        "upstream": c.Key(c.addresses, [], doc="DNS servers for names outside the overlay"),
        "ttl": c.Key(c.integer(0, 86400), 30, doc="TTL of the overlay's answers, in seconds"),
        "route_timeout": c.Key(
            c.integer(1, 30),
            4,
            doc="seconds of route selection after which a CYPHONIC name is SERVFAIL (inside a stub resolver's"
            " usual 5 s timeout)",
        ),
    },
}
