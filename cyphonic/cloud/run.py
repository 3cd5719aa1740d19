"""The cloud: the AS, the NMS and optionally a TRS in one process, each
served by its own package; this module only composes them and answers
`cyphonic status` for all of them."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import trio

from cyphonic import control, metrics, notify
from cyphonic.auth import serve as auth_serve
from cyphonic.auth import settings as auth_settings
from cyphonic.auth.service import AuthenticationService
from cyphonic.core.relay import RelayService
from cyphonic.nms import serve as nms_serve
from cyphonic.nms import settings as nms_settings
from cyphonic.nms.service import NodeManagementService
from cyphonic.program import cloud_status
from cyphonic.trs import serve as trs_serve
from cyphonic.trs import settings as trs_settings

log = logging.getLogger("cyphonic.cloud")


@dataclass
class Services:
    auth: AuthenticationService
    nms: NodeManagementService
    relay: RelayService | None
    metrics_address: tuple[str, int] | None = None  # where GET /metrics answers, once bound


def build(cfg: dict[str, Any]) -> Services:
    """The services of a checked cloud.toml."""
    return Services(auth_settings.build(cfg), nms_settings.build(cfg), trs_settings.build_embedded(cfg))


async def serve(
    cfg: dict[str, Any],
    services: Services,
    control_name: str | None = "cloud",
    *,
    task_status=trio.TASK_STATUS_IGNORED,
) -> None:
    """The services of a checked cloud.toml; `cyphonic status` of all of
    them on `control_name`."""
    auth, nms = services.auth, services.nms
    started = time.time()

    def status(_request: dict) -> dict:
        now = time.time()
        return cloud_status(cfg, started, now, auth_serve.status(auth), nms_serve.status(nms, now))

    async with trio.open_nursery() as nursery:
        await nursery.start(auth_serve.serve, cfg, auth, None)
        await nursery.start(nms_serve.serve, cfg, nms, None)
        if services.relay is not None:
            await nursery.start(trs_serve.serve, cfg["trs"], services.relay, cfg["control_group"])
        if control_name:
            await nursery.start(control.serve, control_name, status, cfg["control_group"])
        if cfg["metrics"]:  # one endpoint for the AS, the NMS and the embedded TRS
            build = lambda: metrics.cloud_families(auth, nms, services.relay)  # noqa: E731
            services.metrics_address = await nursery.start(metrics.serve, cfg["metrics"], build)
        log.info("cloud ready (domain %s)", cfg["domain"])
        notify.ready(f"cloud ready (domain {cfg['domain']})")  # every socket bound: systemd's `Type=notify`
        task_status.started()
