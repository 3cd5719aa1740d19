"""The NMS's Trio driver: its UDP port(s), and its part of the cloud's
status. Shared by `python -m cyphonic.nms` and the cloud."""

from __future__ import annotations

import time

import trio

from cyphonic import control
from cyphonic.nms.service import NodeManagementService
from cyphonic.udp import UdpServer


def status(service: NodeManagementService, now: float) -> dict:
    """The NMS's keys of the cloud's status document."""
    return {"nodes": service.status(now), "drops": dict(service.drops.counts)}


async def serve(
    cfg: dict,
    service: NodeManagementService,
    control_name: str | None = "cloud",
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """The NMS of a checked cloud.toml; alone, it answers `cyphonic status`
    as the cloud (without enrollments) on `control_name`."""
    started = time.time()

    def document(_request: dict) -> dict:
        now = time.time()
        return {
            "role": "cloud",
            "domain": cfg["domain"],
            "uptime": round(now - started, 1),
            "enrollments": [],
            **status(service, now),
        }

    async with trio.open_nursery() as nursery:
        await nursery.start(UdpServer(service, cfg["nms"]["listen"], "NMS").run)
        if control_name:
            await nursery.start(control.serve, control_name, document, cfg["control_group"])
        task_status.started()
