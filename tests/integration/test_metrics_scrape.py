"""Prometheus metrics of a running node and cloud, scraped over HTTP while
traffic crosses the overlay (issue 18)."""

from __future__ import annotations

import socket
import urllib.request

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from cyphonic import metrics
from cyphonic.errors import ConfigError
from tests.integration.conftest import DOMAIN, Overlay, ipv4_udp
from tests.integration.test_overlay import recv_packet, resolve


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_metrics(path, port: int) -> None:
    """`metrics = "127.0.0.1:PORT"` as the file's first (top-level) key."""
    path.write_text(f'metrics = "127.0.0.1:{port}"\n' + path.read_text())


async def scrape(address: tuple[str, int]) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of GET /metrics."""
    url = f"http://{address[0]}:{address[1]}/metrics"

    def get() -> str:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    text = await trio.to_thread.run_sync(get)
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_node_metrics_move_with_traffic(tmp_path, nursery):
    overlay = Overlay(tmp_path, nursery)
    with_metrics(overlay.ca / "cloud.toml", free_tcp_port())
    await overlay.start_cloud()
    bundle = overlay.enroll("mn")
    with_metrics(bundle / "node.toml", free_tcp_port())
    mn = await overlay.start_node("mn", bundle=bundle)
    cn = await overlay.start_node("cn")
    address = mn.daemon.metrics_address
    assert address is not None

    before = await scrape(address)
    assert before[("cyphonic_route_selection_seconds_count", ())] == 0
    assert before[("cyphonic_tunnels", (("path", "direct"),))] == 0
    assert ("process_cpu_seconds_total", ()) in before

    peer = f"cn.{DOMAIN}"
    await resolve(mn, peer)  # route selection and tunnel
    sizes = []
    for i in range(3):
        packet = ipv4_udp(mn.vip4, cn.vip4, b"x" * (100 + i))
        await mn.tun.app.send(packet)
        assert await recv_packet(cn) == packet
        sizes.append(len(packet))
    back = ipv4_udp(cn.vip4, mn.vip4, b"back")
    await cn.tun.app.send(back)
    assert await recv_packet(mn) == back

    after = await scrape(address)
    tx = (("direction", "tx"), ("peer", peer))
    rx = (("direction", "rx"), ("peer", peer))
    assert after[("cyphonic_tunnel_bytes_total", tx)] == sum(sizes)
    assert after[("cyphonic_tunnel_packets_total", tx)] >= 3  # and control messages (keepalives)
    assert after[("cyphonic_tunnel_bytes_total", rx)] == len(back)
    assert after[("cyphonic_tunnel_packets_total", rx)] >= 1
    assert after[("cyphonic_tunnels", (("path", "direct"),))] == 1
    assert after[("cyphonic_route_selection_seconds_count", ())] == 1
    assert after[("cyphonic_route_selection_seconds_bucket", (("le", "+Inf"),))] == 1
    assert after[("cyphonic_tunnel_establishment_seconds_count", ())] == 1
    assert after[("cyphonic_tunnel_handshakes_total", (("result", "established"), ("role", "initiator")))] == 1

    cloud = await scrape(overlay.services.metrics_address)
    assert cloud[("cyphonic_as_logins_total", (("result", "granted"),))] == 2
    assert cloud[("cyphonic_nms_route_selections_total", (("result", "direct"),))] == 1
    assert cloud[("cyphonic_nms_registrations_total", (("result", "accepted"),))] >= 2
    assert cloud[("cyphonic_nms_nodes", ())] == 2


async def test_metrics_address_in_use_is_a_config_error_naming_the_key():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        errors = []
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(metrics.serve, taken.getsockname(), lambda: [])
        except* ConfigError as group:
            errors = [str(e) for e in group.exceptions]
    assert len(errors) == 1 and errors[0].startswith("metrics: cannot listen on 127.0.0.1:")


async def test_the_endpoint_stops_with_its_nursery():
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            address = await nursery.start(metrics.serve, ("127.0.0.1", 0), lambda: [])
            assert ("process_cpu_seconds_total", ()) in await scrape(address)
            scope.cancel()
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):  # the server socket is closed
        probe.connect(address)
