"""Prometheus metrics of every daemon (the `metrics` key: ADDRESS:PORT, off
when empty).

A pull model: nothing is added on the per-packet path. At each scrape the
daemon's own counters (the ones `cyphonic status` shows, and a few kept
for this) are read into metric families on the Trio thread, where every
one of them changes, so a scrape never sees a table in the middle of an
update (and, on a node with a data thread, runs under the overlay lock
like every other Trio step). The HTTP server is prometheus_client's WSGI
server, its `serve_forever` on a worker thread that the daemon's nursery
owns: cancelled, it is shut down and its socket closed.

Only this module imports prometheus_client.
"""

from __future__ import annotations

import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import make_server

import trio
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from cyphonic.config import Address, format_address
from cyphonic.errors import ConfigError
from cyphonic.timings import Timings

Build = Callable[[], Iterable[Metric]]
PATHS = ("direct", "reverse", "relay")


# -- the daemons' figures as metric families ----------------------------------------


def drops(parts: Iterable[tuple[str | None, Any]]) -> Metric:
    """cyphonic_drops_total{reason}: datagrams and frames dropped, summed
    over the daemon's Drops counters; the cloud's are labelled by `service`."""
    counts: Counter[tuple[str | None, str]] = Counter()
    for service, part in parts:
        counts.update({(service, reason): n for reason, n in part.counts.items()})
    labelled = any(service for service, _ in counts)
    family = CounterMetricFamily(
        "cyphonic_drops",
        "Datagrams and frames dropped, by reason",
        labels=["reason", "service"] if labelled else ["reason"],
    )
    for (service, reason), n in sorted(counts.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        family.add_metric([reason, service or ""] if labelled else [reason], n)
    return family


def histogram(name: str, doc: str, timings: Iterable[Timings]) -> Metric:
    """A histogram in seconds of Timings kept in milliseconds, summed."""
    buckets: list[int] = []
    total_ms = 0.0
    for t in timings:
        cumulative = t.cumulative()
        buckets = [a + n for a, (_, n) in zip(buckets or [0] * len(cumulative), cumulative, strict=True)]
        total_ms += t.sum_ms
    bounds = [b for b, _ in Timings().cumulative()]
    buckets = buckets or [0] * len(bounds)
    pairs = [("+Inf" if b == float("inf") else repr(b / 1000), n) for b, n in zip(bounds, buckets, strict=True)]
    family = HistogramMetricFamily(name, doc, unit="seconds")
    family.add_metric([], pairs, total_ms / 1000)
    return family


def tunnels(tunnel_list: Iterable[Any], owner: Callable[[Any], str] | None = None) -> Iterator[Metric]:
    """Bytes, packets and rekeys per tunnel (summed per peer: a re-route
    briefly holds two) and tunnels by path. The counters belong to a tunnel,
    so they start again from zero when it is replaced (a counter reset)."""
    extra = ["general_node"] if owner else []
    labels = ["peer", *extra]
    bytes_ = CounterMetricFamily("cyphonic_tunnel_bytes", "Overlay packet bytes", labels=[*labels, "direction"])
    packets = CounterMetricFamily("cyphonic_tunnel_packets", "Overlay packets", labels=[*labels, "direction"])
    rekeys = CounterMetricFamily("cyphonic_tunnel_rekeys", "End Key replacements", labels=labels)
    by_path: Counter[str] = Counter({p: 0 for p in PATHS})
    sums: dict[tuple[str, ...], list[int]] = {}
    for t in tunnel_list:
        key = (t.peer.fqdn, *([owner(t)] if owner else []))
        row = sums.setdefault(key, [0, 0, 0, 0, 0])
        for i, n in enumerate((t.tx_bytes, t.rx_bytes, t.tx_packets, t.rx_packets, t.rekeys)):
            row[i] += n
        by_path[t.path_name] += 1
    for key, (txb, rxb, txp, rxp, rk) in sorted(sums.items()):
        bytes_.add_metric([*key, "tx"], txb)
        bytes_.add_metric([*key, "rx"], rxb)
        packets.add_metric([*key, "tx"], txp)
        packets.add_metric([*key, "rx"], rxp)
        rekeys.add_metric(list(key), rk)
    paths = GaugeMetricFamily("cyphonic_tunnels", "Tunnels up, by path", labels=["path"])
    for path, n in sorted(by_path.items()):
        paths.add_metric([path], n)
    yield from (bytes_, packets, rekeys, paths)


def signaling(machines: list[Any]) -> Iterator[Metric]:
    """Handshakes and the seed's two timers of one or more signaling machines."""
    shakes: Counter[tuple[str, str]] = Counter()
    for m in machines:
        shakes.update(m.handshakes)
    family = CounterMetricFamily(
        "cyphonic_tunnel_handshakes", "Tunnel handshakes, by our role and result", labels=["role", "result"]
    )
    for (role, result), n in sorted(shakes.items()):
        family.add_metric([role, result], n)
    yield family
    yield histogram(
        "cyphonic_route_selection",
        "From the Direction Request to the NMS's Route Direction",
        [m.route_ms for m in machines],
    )
    yield histogram(
        "cyphonic_tunnel_establishment",
        "From the Route Direction to the tunnel being up",
        [m.tunnel_ms for m in machines],
    )


def node_families(daemon: Any) -> Iterator[Metric]:
    """A node daemon (cyphonic.node.daemon.NodeDaemon)."""
    yield from tunnels(daemon.packet.by_index.values())
    yield from signaling([daemon.signaling.machine])
    yield drops((None, d) for d in (daemon.packet.drops, daemon.signaling.drops, daemon.resolver.drops))
    yield GaugeMetricFamily(
        "cyphonic_registered_families",
        "Address families the node is registered with the NMS in",
        value=len(daemon.signaling.registered),
    )


def adapter_families(daemon: Any, now: float | None = None) -> Iterator[Metric]:
    """An adapter daemon (cyphonic.adapter.daemon.AdapterDaemon)."""
    now = time.time() if now is None else now
    own = daemon.signaling.grant.fqdn if daemon.signaling.grant else daemon.fqdn
    general = list(daemon.general_nodes.by_mac.values())
    yield from tunnels(daemon.packet.by_index.values(), owner=lambda t: getattr(t.owner, "fqdn", own))
    yield from signaling([daemon.signaling.machine] + [gn.signaling.machine for gn in general])
    parts = [daemon.packet.drops, daemon.signaling.drops, daemon.general_nodes.drops, daemon.demux.drops]
    if daemon.interface is not None:
        addresses = daemon.addresses
        parts += [daemon.interface.drops, addresses.drops, addresses.dhcp.drops, addresses.dhcp6.drops]
    for gn in general:
        parts += [gn.signaling.drops, gn.resolver.drops]
    yield drops((None, d) for d in parts)
    states = GaugeMetricFamily("cyphonic_adapter_general_nodes", "General nodes, by state", labels=["state"])
    for state, n in sorted(Counter(gn.state for gn in general).items()):
        states.add_metric([state], n)
    yield states
    leases = GaugeMetricFamily("cyphonic_adapter_leases", "DHCP leases not expired", labels=["family"])
    leases.add_metric(["ipv4"], sum(1 for gn in general if gn.lease4 and gn.lease4 > now))
    leases.add_metric(["ipv6"], sum(1 for gn in general if gn.lease6 and gn.lease6 > now))
    yield leases
    frames = CounterMetricFamily("cyphonic_adapter_lan_frames", "Frames on the LAN port", labels=["direction"])
    frames.add_metric(["in"], daemon.interface.frames_in if daemon.interface else 0)
    frames.add_metric(["out"], daemon.packet.lan_tx_frames)
    yield frames


def auth_families(service: Any) -> Iterator[Metric]:
    """The AS (cyphonic.auth.service.AuthenticationService)."""
    for what, name in (("login", "cyphonic_as_logins"), ("node information", "cyphonic_as_node_information")):
        family = CounterMetricFamily(name, f"AS {what} requests decided, by result", labels=["result"])
        for (kind, result), n in sorted(service.results.items()):
            if kind == what:
                family.add_metric([result], n)
        yield family


def nms_families(service: Any, now: float | None = None) -> Iterator[Metric]:
    """The NMS (cyphonic.nms.service.NodeManagementService)."""
    now = time.time() if now is None else now
    registrations = CounterMetricFamily("cyphonic_nms_registrations", "Registrations, by result", labels=["result"])
    for result, n in sorted(service.registrations.items()):
        registrations.add_metric([result], n)
    yield registrations
    routes = CounterMetricFamily(
        "cyphonic_nms_route_selections",
        "Route selections answered: the path chosen, or the error code",
        labels=["result"],
    )
    for result, n in sorted(service.route_results.items()):
        routes.add_metric([result], n)
    yield routes
    live = sum(1 for fqdn in list(service.registry) if service.locations.live(fqdn, now) is not None)
    yield GaugeMetricFamily("cyphonic_nms_nodes", "Nodes with a live registration", value=live)


def trs_families(service: Any) -> Iterator[Metric]:
    """A TRS (cyphonic.core.relay.RelayService)."""
    yield GaugeMetricFamily("cyphonic_trs_sessions", "Relay sessions open", value=len(service.sessions))
    yield CounterMetricFamily("cyphonic_trs_sessions_opened", "Relay sessions opened", value=service.sessions_opened)
    relayed = service.relayed()
    frames = CounterMetricFamily("cyphonic_trs_relayed_frames", "Frames received, by side", labels=["side"])
    bytes_ = CounterMetricFamily("cyphonic_trs_relayed_bytes", "Frame bytes received, by side", labels=["side"])
    for side_id, side in sorted(relayed.items()):
        name = "responder" if side_id else "initiator"
        frames.add_metric([name], side.packets)
        bytes_.add_metric([name], side.bytes)
    yield from (frames, bytes_)


def cloud_families(auth: Any = None, nms: Any = None, relay: Any = None) -> Iterator[Metric]:
    """The services one cloud process runs (the AS, the NMS, a TRS)."""
    if auth is not None:
        yield from auth_families(auth)
    if nms is not None:
        yield from nms_families(nms)
    if relay is not None:
        yield from trs_families(relay)
    services = (("as", auth), ("nms", nms), ("trs", relay))
    yield drops((name, s.drops) for name, s in services if s is not None)


# -- serving --------------------------------------------------------------------------


class DaemonCollector:
    """Builds the daemon's families on its Trio thread, at each scrape.
    Without a token (unit tests) it builds them where it is called."""

    def __init__(self, build: Build, token: trio.lowlevel.TrioToken | None = None) -> None:
        self.build, self.token = build, token

    def collect(self) -> Iterable[Metric]:
        if self.token is None:
            return list(self.build())
        try:
            return trio.from_thread.run_sync(lambda: list(self.build()), trio_token=self.token)
        except trio.RunFinishedError:  # the daemon is stopping
            return []


def registry(build: Build, token: trio.lowlevel.TrioToken | None = None) -> CollectorRegistry:
    """The daemon's own registry (never the global one): its families, and
    the process's CPU, memory and file descriptors, Python's GC and version."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(DaemonCollector(build, token))
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg


async def serve(address: Address, build: Build, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """GET /metrics on `address` until cancelled. ConfigError (key
    `metrics`) if the address cannot be bound; started() hands back the
    bound address (port 0 picks one)."""
    host, port = address
    token = trio.lowlevel.current_trio_token()

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    try:
        server = make_server(host, port, make_wsgi_app(registry(build, token)), Server, handler_class=_SilentHandler)
    except OSError as exc:
        raise ConfigError("metrics", f"cannot listen on {format_address(address)}: {exc.strerror or exc}") from None
    bound = server.server_address[:2]
    try:
        task_status.started((str(bound[0]), int(bound[1])))
        # abandoned on cancel: the cancellation goes through at once, and
        # the shutdown below waits for the thread (it polls every 0.5 s)
        await trio.to_thread.run_sync(server.serve_forever, abandon_on_cancel=True)
    finally:
        with trio.move_on_after(2) as scope:
            scope.shield = True
            # shutdown() waits for a serve_forever that never started forever: bounded
            await trio.to_thread.run_sync(server.shutdown, abandon_on_cancel=True)
        server.server_close()
