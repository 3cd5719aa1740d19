"""python -m cyphonic.trs --config trs.toml"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from cyphonic import config as c
from cyphonic import control, logs
from cyphonic.cloud.settings import read_secret
from cyphonic.core.relay import RelayService
from cyphonic.trs.serve import serve

log = logging.getLogger("cyphonic.trs")

SCHEMA: c.Schema = {
    "listen": c.Key(c.addresses, [("0.0.0.0", 7002), ("::", 7002)]),
    "public": c.Key(c.addresses),  # where nodes reach this TRS, told to the NMS
    "nms_key": c.Key(c.path),
    "log_level": c.Key(c.text, "INFO"),
    "control_group": c.Key(control.existing_group, ""),  # may read the status, besides root and our uid
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m cyphonic.trs")
    parser.add_argument("--config", required=True, type=Path, help="trs.toml")
    args = parser.parse_args()
    cfg = c.load_or_exit("cyphonic.trs", args.config, SCHEMA)
    if not cfg["public"]:
        print("cyphonic.trs: config error: public: must list where nodes reach this TRS", file=sys.stderr)
        sys.exit(2)
    logs.setup(cfg["log_level"])
    try:
        service = RelayService(read_secret(cfg["nms_key"]), cfg["public"])
    except (OSError, ValueError) as exc:
        print(f"cyphonic.trs: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        trio.run(serve, cfg, service, cfg["control_group"])
    except KeyboardInterrupt:
        pass


main()
