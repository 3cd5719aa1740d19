"""python -m cyphonic.trs --config trs.toml"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import trio

from cyphonic import config as c
from cyphonic import control, logs
from cyphonic.cloud.settings import read_secret
from cyphonic.core.relay import RelayService
from cyphonic.udp import UdpServer

log = logging.getLogger("cyphonic.trs")

SCHEMA: c.Schema = {
    "listen": c.Key(c.addresses, [("0.0.0.0", 7002), ("::", 7002)]),
    "public": c.Key(c.addresses),  # where nodes reach this TRS, told to the NMS
    "nms_key": c.Key(c.path),
    "log_level": c.Key(c.text, "INFO"),
}


class _Timed:
    """The relay service with the timer interface UdpServer drives."""

    def __init__(self, service: RelayService) -> None:
        self.service = service

    def receive(self, data, source, now):
        return self.service.receive(data, source, now)

    def next_timer(self) -> float:
        return time.time() + 1.0

    def handle_timer(self, now: float):
        self.service.expire(now)
        return []


async def serve(cfg: dict, service: RelayService) -> None:
    started = time.time()

    def status(_request: dict) -> dict:
        return {
            "role": "trs",
            "uptime": round(time.time() - started, 1),
            "sessions": service.status(time.time()),
            "drops": dict(service.drops.counts),
        }

    async with trio.open_nursery() as nursery:
        await nursery.start(UdpServer(_Timed(service), cfg["listen"], "TRS").run)
        await nursery.start(control.serve, "trs", status)
        log.info("TRS ready, announced as %s", ", ".join(f"{h}:{p}" for h, p in cfg["public"]))


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
        trio.run(serve, cfg, service)
    except KeyboardInterrupt:
        pass


main()
