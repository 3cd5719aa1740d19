"""adapter.toml: what `cyphonic enroll adapter` writes, checked strictly."""

from cyphonic import config as c
from cyphonic.node.settings import DAEMON

SCHEMA: c.Schema = {
    **DAEMON,
    # the LAN port: the kernel keeps no address on it, the adapter owns it
    "lan": c.Key(c.text, "lan0"),
    # the overlay MTU the general nodes get (DHCP option 26, RA MTU); larger
    # DF packets get ICMP "fragmentation needed", TCP SYNs an MSS to fit
    "mtu": c.Key(c.integer(1280, 9000), 1400),
    # directory of <name>.key / <name>.crt, one pair per general node
    "general_nodes": c.Key(c.path, "general"),
    # where leases (and the peers each general node talked to) survive restarts
    "leases": c.Key(c.path, "leases.json"),
    "lease_time": c.Key(c.integer(60, 7 * 86400), 3600),
    # how often the adapter asks the AS for its general nodes again
    "general_node_refresh": c.Key(c.integer(5, 86400), 30),
    "control": c.Key(c.text, "adapter"),
    "resolver": {
        "upstream": c.Key(c.addresses, []),
        "ttl": c.Key(c.integer(0, 86400), 30),
        # a CYPHONIC name whose route selection takes longer is SERVFAIL,
        # inside a stub resolver's usual 5 s timeout
        "route_timeout": c.Key(c.integer(1, 30), 4),
    },
}
