"""Trio drivers for the AS and the NMS, alone or together."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import time
from pathlib import Path

import trio

from cyphonic import config as c
from cyphonic import control, logs
from cyphonic.cloud import settings
from cyphonic.udp import UdpServer

log = logging.getLogger("cyphonic.cloud")


def main(program: str, with_auth: bool, with_nms: bool) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {program}")
    parser.add_argument("--config", required=True, type=Path, help="cloud.toml")
    args = parser.parse_args()
    cfg = c.load_or_exit(program, args.config, settings.SCHEMA)
    logs.setup(cfg["log_level"])
    try:
        auth = settings.build_auth(cfg) if with_auth else None
        nms = settings.build_nms(cfg) if with_nms else None
        relay = settings.build_trs(cfg) if with_auth and with_nms and cfg["trs"]["enabled"] else None
    except (OSError, ValueError, KeyError) as exc:
        print(f"{program}: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        trio.run(serve, cfg, auth, nms, "cloud", relay)
    except KeyboardInterrupt:
        pass


async def serve(
    cfg, auth, nms, control_name: str | None = "cloud", relay=None, *, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    started = time.time()

    def enrollments() -> list[dict] | str:
        if auth is None:
            return []
        try:
            rows = auth.store.enrollments()
        except sqlite3.Error as exc:  # a locked database must not cost the cloud its status
            return f"database unavailable: {exc}"
        return [{"fqdn": e.fqdn, "vip4": str(e.vip4), "vip6": str(e.vip6)} for e in rows]

    def status(_request: dict) -> dict:
        return {
            "role": "cloud",
            "domain": cfg["domain"],
            "uptime": round(time.time() - started, 1),
            "nodes": nms.status(time.time()) if nms else [],
            "enrollments": enrollments(),
            "drops": {
                **(dict(auth.drops.counts) if auth else {}),
                **(dict(nms.drops.counts) if nms else {}),
            },
        }

    async with trio.open_nursery() as nursery:
        if auth is not None:
            await nursery.start(UdpServer(_Replier(auth), cfg["auth"]["listen"], "AS").run)
        if nms is not None:
            await nursery.start(UdpServer(nms, cfg["nms"]["listen"], "NMS").run)
        if relay is not None:
            from cyphonic.trs.serve import serve as serve_trs

            await nursery.start(serve_trs, cfg["trs"], relay, cfg["control_group"])
        if control_name:
            await nursery.start(control.serve, control_name, status, cfg["control_group"])
        log.info("cloud ready (domain %s)", cfg["domain"])
        task_status.started()


class _Replier:
    """Adapts the AS's one-reply interface to the datagram-service one."""

    def __init__(self, service) -> None:
        self.service = service

    def receive(self, data, source, now):
        reply = self.service.receive(data, source, now)
        return [(reply, source)] if reply else []
