"""The TRS's Trio driver, shared by `python -m cyphonic.trs` and the cloud."""

from __future__ import annotations

import logging
import time

import trio

from cyphonic import control, metrics
from cyphonic.core.relay import RelayService
from cyphonic.udp import UdpServer

log = logging.getLogger("cyphonic.trs")


async def serve(
    cfg: dict, service: RelayService, control_group: str = "", *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """`cfg`: a checked trs.toml, or the [trs] section of cloud.toml."""
    started = time.time()

    def status(_request: dict) -> dict:
        return {
            "role": "trs",
            "uptime": round(time.time() - started, 1),
            "sessions": service.status(time.time()),
            "drops": dict(service.drops.counts),
        }

    async with trio.open_nursery() as nursery:
        await nursery.start(UdpServer(service, cfg["listen"], "TRS").run)
        await nursery.start(control.serve, "trs", status, control_group)
        if cfg.get("metrics"):  # trs.toml's; a TRS in the cloud is in the cloud's metrics
            await nursery.start(metrics.serve, cfg["metrics"], lambda: metrics.cloud_families(relay=service))
        log.info("TRS ready, announced as %s", ", ".join(f"{h}:{p}" for h, p in cfg["public"]))
        task_status.started()
