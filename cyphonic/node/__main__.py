"""python -m cyphonic.node --config node.toml"""

from cyphonic.node.daemon import NodeDaemon
from cyphonic.node.settings import SCHEMA
from cyphonic.program import run_daemon

run_daemon("cyphonic.node", "node.toml", SCHEMA, NodeDaemon)
