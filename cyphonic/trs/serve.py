"""The TRS's Trio driver, shared by `python -m cyphonic.trs` and the cloud."""

from __future__ import annotations

import logging
import time

import trio

from cyphonic import control
from cyphonic.core.relay import RelayService
from cyphonic.udp import UdpServer

log = logging.getLogger("cyphonic.trs")


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


async def serve(
    cfg: dict, service: RelayService, control_group: str = "", *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
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
        await nursery.start(control.serve, "trs", status, control_group)
        log.info("TRS ready, announced as %s", ", ".join(f"{h}:{p}" for h, p in cfg["public"]))
        task_status.started()
