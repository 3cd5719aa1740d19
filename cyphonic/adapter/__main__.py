"""python -m cyphonic.adapter --config adapter.toml"""

from cyphonic.adapter.daemon import AdapterDaemon
from cyphonic.adapter.settings import SCHEMA
from cyphonic.program import run_daemon

run_daemon("cyphonic.adapter", "adapter.toml", SCHEMA, AdapterDaemon)
