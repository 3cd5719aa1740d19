"""The `main` of the service programs (AS, NMS, TRS, cloud): one config
file in, checked, services built from it, then one Trio run.

Every way the operator can get it wrong ends in one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from pyroute2.netlink.exceptions import NetlinkError

from cyphonic import config, control, logs, metrics, notify
from cyphonic.errors import AuthenticationError, ConfigError, ParseError
from cyphonic.node.signaling import Fatal
from cyphonic.udp import DatagramService, UdpServer


def main(
    program: str,
    file: str,
    schema: config.Schema,
    build: Callable[[dict[str, Any]], Any],
    serve: Callable[[dict[str, Any], Any], Awaitable[None]],
) -> None:
    """`python -m program --config FILE`: serve(cfg, build(cfg)) until killed."""
    cfg = _configured(program, file, schema)
    try:
        built = build(cfg)
    except ConfigError as exc:  # a rule the schema cannot state (e.g. a list that must not be empty)
        print(f"{program}: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (OSError, ValueError, KeyError) as exc:  # a key file missing or unreadable
        print(f"{program}: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(serve, cfg, built)
    except* ConfigError as group:  # found only on binding (the `metrics` address)
        print(f"{program}: config error: {group.exceptions[0]}", file=sys.stderr)
        sys.exit(2)


def run_daemon(program: str, file: str, schema: config.Schema, make: Callable[[dict[str, Any]], Any]) -> None:
    """`python -m program --config FILE` of a daemon (node, adapter):
    make(cfg).run() until killed. A bad config or a key it cannot read is
    one line and exit 2; a Fatal (e.g. the AS refused the certificate) one
    line and exit 1."""
    cfg = _configured(program, file, schema)
    try:
        daemon = make(cfg)
    except (OSError, ValueError, KeyError, ParseError, AuthenticationError, NetlinkError) as exc:
        print(f"{program}: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    fatal = None
    try:
        trio.run(daemon.run)
    except* Fatal as group:
        fatal = group.exceptions[0]
    except* ConfigError as group:  # found only on binding (the `metrics` address)
        print(f"{program}: config error: {group.exceptions[0]}", file=sys.stderr)
        sys.exit(2)
    except* KeyboardInterrupt:
        pass
    if fatal is not None:  # one line, not a traceback: it is the operator's to fix
        logging.getLogger(program).error("%s", fatal)
        sys.exit(1)


def cloud_status(cfg: dict[str, Any], started: float, now: float, *parts: dict[str, Any]) -> dict[str, Any]:
    """`cyphonic status` of a cloud: the keys each service gives (`nodes`
    from the NMS, `enrollments` from the AS), drops merged; empty for a
    service this process does not run."""
    document: dict[str, Any] = {
        "role": "cloud",
        "domain": cfg["domain"],
        "uptime": round(now - started, 1),
        "nodes": [],
        "enrollments": [],
        "drops": {},
    }
    for part in parts:
        document.update({k: v for k, v in part.items() if k != "drops"})
        document["drops"].update(part.get("drops", {}))
    return document


async def serve_one(
    cfg: dict[str, Any],
    service: DatagramService,
    listen: list,
    name: str,
    status: Callable[[float], dict[str, Any]],
    control_name: str | None,
    *,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """One cloud service on its UDP port(s); alone (`control_name` set), it
    answers `cyphonic status` as the cloud with just its own part."""
    started = time.time()

    def document(_request: dict) -> dict:
        now = time.time()
        return cloud_status(cfg, started, now, status(now))

    async with trio.open_nursery() as nursery:
        await nursery.start(UdpServer(service, listen, name).run)
        # alone (control_name set) it answers status and metrics itself; in the
        # cloud process, cloud.run serves both for the AS, the NMS and the TRS
        if control_name:
            await nursery.start(control.serve, control_name, document, cfg["control_group"])
            if cfg["metrics"]:
                part = {"AS": "auth", "NMS": "nms"}[name]
                await nursery.start(metrics.serve, cfg["metrics"], lambda: metrics.cloud_families(**{part: service}))
        task_status.started()


def _configured(program: str, file: str, schema: config.Schema) -> dict[str, Any]:
    """The checked config named by `--config` (one line and exit 2 if bad), logging set up."""
    parser = argparse.ArgumentParser(prog=f"python -m {program}")
    parser.add_argument("--config", required=True, type=Path, help=file)
    args = parser.parse_args()
    cfg = config.load_or_exit(program, args.config, schema)
    logs.setup(cfg["log_level"])
    notify.stopping_on_sigterm()
    return cfg
