"""The AS's Trio driver: its UDP port(s), and its part of the cloud's
status. Shared by `python -m cyphonic.auth` and the cloud."""

from __future__ import annotations

import sqlite3

import trio

from cyphonic.auth.service import AuthenticationService
from cyphonic.program import serve_one


def status(service: AuthenticationService) -> dict:
    """The AS's keys of the cloud's status document."""
    try:
        rows = service.store.enrollments()
    except sqlite3.Error as exc:  # a locked database must not cost the cloud its status
        enrollments: list[dict] | str = f"database unavailable: {exc}"
    else:
        enrollments = [{"fqdn": e.fqdn, "vip4": str(e.vip4), "vip6": str(e.vip6)} for e in rows]
    return {"enrollments": enrollments, "drops": dict(service.drops.counts)}


async def serve(
    cfg: dict,
    service: AuthenticationService,
    control_name: str | None = "cloud",
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """The AS of a checked cloud.toml; alone, it answers `cyphonic status`
    as the cloud (without nodes) on `control_name`."""
    await serve_one(
        cfg, service, cfg["auth"]["listen"], "AS", lambda now: status(service), control_name, task_status=task_status
    )
