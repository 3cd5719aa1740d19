"""N CYPHONIC node identities in one Trio process, all selecting a route to
one target at the same moment: the load side of the scaling stage.

    python -m bench.swarm --ca CA_DIR --out DIR --cloud 203.0.113.10 --count 100 \
        [--first 1] [--target cn.cyphonic.test] [--port-base 21000] [--hold 10]

Run inside a lab namespace (`lab.popen("mn", ...)`). Each identity is a real
`NodeDaemon` (own UDP port, own resolver port, an in-memory TUN, no control
socket, Python packet loops, no data thread): the same login, registration,
route selection and tunnel code as the lab's daemons, without N processes.

Identities `s001.<domain>`, `s002.<domain>`, ... are enrolled with the CLI's
own `cyphonic enroll node` (`cli.main` in process: a subprocess per identity
would cost ~0.4 s each). The AS needs no telling: it checks the certificate
against the CA and assigns the virtual IPs at the first login
(`Store.enroll`).

Measured per identity, with the daemon's own timers (the ones `cyphonic
status` reports as `timers`, so the numbers compare with the bench's restart
timers): route selection (route_to until the NMS's Route Direction) and
tunnel establishment (Route Direction until the tunnel is up); besides them
the login + registration time (daemon start until ready) and the whole
route_to as seen from outside. All identities are logged in first; then one
trio Event starts every route selection at once.

One JSON object goes to stdout (one line, flushed) as soon as the round is
done; with `--hold S` the tunnels then stay up S more seconds (keepalives
flowing) so the target can be metered, and a summary line goes to stderr.
Every identity shares this one thread: with many of them the swarm's own
queueing is part of what is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import trio

from cyphonic import cli, config
from cyphonic.kernel.netlink import global_addresses
from cyphonic.lab.enrollment import derive_node_config
from cyphonic.node.daemon import NodeDaemon
from cyphonic.node.errors import RouteError, UnknownPeer
from cyphonic.node.settings import SCHEMA

DNS_OFFSET = 20000  # an identity's resolver listens on 127.0.0.1:(its UDP port + this)


class MemoryTun:
    """A TUN stand-in: one end of a datagram socketpair is the daemon's
    'kernel' side; nothing is written to the other (no data traffic here),
    which only keeps the pair alive."""

    def __init__(self, name: str, offload: bool = False) -> None:
        self._kernel, self._app = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._kernel.setblocking(False)
        self.fd = self._kernel.fileno()
        self.name = name

    def configure(self, mtu, vip4, prefix4, vip6, prefix6) -> None:
        pass  # no kernel interface: the virtual IPs exist only in the grant

    def close(self) -> None:
        self._kernel.close()
        self._app.close()


@dataclass
class Identity:
    name: str
    fqdn: str
    daemon: NodeDaemon | None = field(default=None, repr=False)
    login_ms: float | None = None
    route_selection_ms: float | None = None
    tunnel_establishment_ms: float | None = None
    total_ms: float | None = None
    path: str | None = None
    error: str | None = None

    def report(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "daemon"}


def describe(exc: BaseException) -> str:
    """One line for an exception, the leaves of a group joined."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def enroll(names: list[str], ca: Path, out: Path, clouds: list[str]) -> list[Path]:
    """`cyphonic enroll node NAME --ca CA --out OUT/NAME --cloud ...` per name; their node.toml."""
    configs = []
    for name in names:
        argv = ["enroll", "node", name, "--ca", str(ca), "--out", str(out / name)]
        for address in clouds:
            argv += ["--cloud", address]
        with contextlib.redirect_stdout(io.StringIO()):  # stdout carries only the JSON
            if cli.main(argv) != 0:
                raise SystemExit(f"swarm: cyphonic enroll node {name} failed")
        configs.append(out / name / "node.toml")
    return configs


def build(ident: Identity, toml: Path, port: int, keepalive: int | None, locators: list[str]) -> None:
    """The identity's NodeDaemon: its own UDP and resolver ports, the light data path."""
    changes: dict[str, object] = {
        "listen_port": port,
        "resolver.listen": f"127.0.0.1:{port + DNS_OFFSET}",
        "tun": ident.name[:15],
        "packet_loops": "python",
        "data_thread": False,
        "offload": False,  # no TUN offloads on a memory TUN, and no GRO buffers per identity
    }
    if keepalive is not None:
        changes["keepalive"] = keepalive
    derive_node_config(toml, toml, changes)
    cfg = config.load(toml, SCHEMA)
    # locators read once for all: the daemon's default asks netlink at every registration
    ident.daemon = NodeDaemon(cfg, tun_factory=MemoryTun, local_addresses=lambda own: locators, control_name=None)


async def run_daemon(ident: Identity, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """The daemon until cancelled; a failure is recorded, not spread to the others."""
    started = False

    class Status:
        def started(self, value=None) -> None:
            nonlocal started
            started = True
            task_status.started()

    daemon = ident.daemon
    assert daemon is not None
    try:
        await daemon.run(task_status=Status())
    except Exception as exc:  # noqa: BLE001 - reported per identity
        ident.error = f"daemon: {describe(exc)}"
    finally:
        for sock in daemon.sockets.values():
            sock.close()
        if daemon.tun is not None:
            daemon.tun.close()
    if not started:
        task_status.started()


async def bring_up(nursery: trio.Nursery, ident: Identity, timeout: float) -> None:
    """Login + registration (+ TUN and resolver, negligible): daemon start until ready."""
    t0 = time.perf_counter()
    try:
        with trio.fail_after(timeout):
            await nursery.start(run_daemon, ident)
    except trio.TooSlowError:
        ident.error = f"login+register: not ready in {timeout:g} s"
        return
    if ident.error is None:
        ident.login_ms = (time.perf_counter() - t0) * 1000


async def select(ident: Identity, go: trio.Event, target: str, timeout: float, *, task_status) -> None:
    """Wait for the start signal, then route selection + tunnel establishment to `target`."""
    task_status.started()
    await go.wait()
    daemon = ident.daemon
    assert daemon is not None
    signaling = daemon.signaling
    # the timers count every sample ever (cyphonic/timings.py); the last one is this route's
    routes, tunnels = signaling.route_ms.count, signaling.tunnel_ms.count
    t0 = time.perf_counter()
    try:
        with trio.fail_after(timeout):
            await signaling.route_to(target)
    except UnknownPeer:
        ident.error = f"route: {target} unknown to the NMS"
        return
    except RouteError as exc:
        ident.error = f"route: {describe(exc)}"
        return
    except trio.TooSlowError:
        ident.error = f"route: no tunnel in {timeout:g} s"
        return
    ident.total_ms = (time.perf_counter() - t0) * 1000
    if signaling.route_ms.count > routes:
        ident.route_selection_ms = round(signaling.route_ms.recent[-1], 3)
    if signaling.tunnel_ms.count > tunnels:
        ident.tunnel_establishment_ms = round(signaling.tunnel_ms.recent[-1], 3)
    tunnel = daemon.packet.tunnel_to(target)
    if tunnel is not None:
        ident.path = tunnel.path_name


def summary(idents: list[Identity]) -> tuple[int, list[str]]:
    """How many failed, and up to 5 distinct reasons with their counts."""
    reasons = Counter(i.error for i in idents if i.error is not None)
    failed = sum(1 for i in idents if i.error is not None or i.route_selection_ms is None)
    return failed, [f"{n}x {reason}" for reason, n in reasons.most_common(5)]


async def swarm(args: argparse.Namespace, idents: list[Identity], report: dict) -> None:
    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        # all identities log in and register together (that is load too: the AS sees N logins at once)
        async with trio.open_nursery() as starting:
            for ident in idents:
                starting.start_soon(bring_up, nursery, ident, args.login_timeout)
        report["setup_s"] = round(time.perf_counter() - t0, 3)
        live = [i for i in idents if i.error is None]
        go = trio.Event()
        async with trio.open_nursery() as racing:
            for ident in live:  # each is parked on `go` before it is set
                await racing.start(select, ident, go, args.target, args.route_timeout)
            t0, cpu0 = time.perf_counter(), time.process_time()
            go.set()
        report["wall_s"] = round(time.perf_counter() - t0, 3)
        # this one thread runs every identity: when it is busy most of the round,
        # the timers include the swarm's own queueing
        report["round_cpu_s"] = round(time.process_time() - cpu0, 3)
        report["failed"], report["errors"] = summary(idents)
        report["identities"] = [i.report() for i in idents]
        print(json.dumps(report), flush=True)
        if args.hold > 0:
            await trio.sleep(args.hold)
            up = sum(1 for i in live if i.daemon and i.daemon.packet.tunnel_to(args.target) is not None)
            print(f"swarm: {up}/{len(live)} tunnels to {args.target} still up after {args.hold:g} s", file=sys.stderr)
        nursery.cancel_scope.cancel()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.swarm", description=__doc__.splitlines()[0])
    ap.add_argument("--ca", type=Path, required=True, help="the lab's CA directory (ca.key, cloud.toml)")
    ap.add_argument("--out", type=Path, required=True, help="where the identities' bundles go")
    ap.add_argument("--cloud", action="append", required=True, help="AS/NMS address (repeatable)")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--first", type=int, default=1, help="number of the first identity (s001 = 1)")
    ap.add_argument("--name-prefix", default="s")
    ap.add_argument("--target", default="cn.cyphonic.test")
    ap.add_argument("--port-base", type=int, default=21000, help="identity i listens on UDP port base + i")
    ap.add_argument("--keepalive", type=int, help="seconds (default: node.toml's default)")
    ap.add_argument("--hold", type=float, default=0.0, help="seconds to keep the tunnels up after the round")
    ap.add_argument("--login-timeout", type=float, default=20.0)
    ap.add_argument("--route-timeout", type=float, default=15.0)
    ap.add_argument("--log-level", default="WARNING")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.port_base + args.count + DNS_OFFSET > 65535:
        raise SystemExit("swarm: --port-base too high for --count")
    names = [f"{args.name_prefix}{args.first + i:03d}" for i in range(args.count)]
    t0 = time.perf_counter()
    configs = enroll(names, args.ca, args.out, args.cloud)
    enroll_s = time.perf_counter() - t0
    locators = global_addresses()
    idents = []
    for i, (name, toml) in enumerate(zip(names, configs, strict=True)):
        ident = Identity(name, "")
        build(ident, toml, args.port_base + i, args.keepalive, locators)
        assert ident.daemon is not None
        ident.fqdn = f"{name}.{ident.daemon.domain}"
        idents.append(ident)
    report = {
        "count": args.count,
        "target": args.target,
        "locators": locators,
        "enroll_s": round(enroll_s, 3),
        "hold_s": args.hold,
    }
    trio.run(swarm, args, idents, report)


if __name__ == "__main__":
    main()
