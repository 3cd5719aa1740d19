"""python -m cyphonic.node --config node.toml"""

import argparse
import logging
import sys
from pathlib import Path

import trio

from cyphonic import config, logs
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.node.daemon import NodeDaemon
from cyphonic.node.settings import SCHEMA
from cyphonic.node.signaling import Fatal

log = logging.getLogger("cyphonic.node")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cyphonic.node")
    parser.add_argument("--config", required=True, type=Path, help="node.toml")
    args = parser.parse_args()
    cfg = config.load_or_exit("cyphonic.node", args.config, SCHEMA)
    logs.setup(cfg["log_level"])
    try:
        daemon = NodeDaemon(cfg)
    except (OSError, ValueError, KeyError, ParseError, AuthenticationError) as exc:
        print(f"cyphonic.node: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    fatal = None
    try:
        trio.run(daemon.run)
    except* Fatal as group:
        fatal = group.exceptions[0]
    except* KeyboardInterrupt:
        pass
    if fatal is not None:  # one line, not a traceback: it is the operator's to fix
        log.error("%s", fatal)
        sys.exit(1)


main()
