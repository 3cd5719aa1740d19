"""The NMS's Trio driver: its UDP port(s), and its part of the cloud's
status. Shared by `python -m cyphonic.nms` and the cloud."""

from __future__ import annotations

import trio

from cyphonic.nms.service import NodeManagementService
from cyphonic.program import serve_one


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
    await serve_one(
        cfg,
        service,
        cfg["nms"]["listen"],
        "NMS",
        lambda now: status(service, now),
        control_name,
        task_status=task_status,
    )
