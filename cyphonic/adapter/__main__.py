"""python -m cyphonic.adapter --config adapter.toml"""

import argparse
import logging
import sys
from pathlib import Path

import trio
from pyroute2.netlink.exceptions import NetlinkError

from cyphonic import config, logs
from cyphonic.adapter.daemon import AdapterDaemon
from cyphonic.adapter.settings import SCHEMA
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.node.signaling import Fatal

log = logging.getLogger("cyphonic.adapter")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cyphonic.adapter")
    parser.add_argument("--config", required=True, type=Path, help="adapter.toml")
    args = parser.parse_args()
    cfg = config.load_or_exit("cyphonic.adapter", args.config, SCHEMA)
    logs.setup(cfg["log_level"])
    try:
        daemon = AdapterDaemon(cfg)
    except (OSError, ValueError, KeyError, ParseError, AuthenticationError, NetlinkError) as exc:
        print(f"cyphonic.adapter: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    fatal = None
    try:
        trio.run(daemon.run)
    except* Fatal as group:
        fatal = group.exceptions[0]
    except* KeyboardInterrupt:
        pass
    if fatal is not None:
        log.error("%s", fatal)
        sys.exit(1)


main()
