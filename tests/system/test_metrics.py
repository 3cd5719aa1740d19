"""Every lab daemon serves Prometheus metrics; a ping from mn to cn moves
mn's per-peer counters, and the cloud counts logins, registrations and
route selections (issue 18)."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cyphonic.lab import Lab

# read from the daemons' counters, which both packet loops keep alike: once
pytestmark = [pytest.mark.system, pytest.mark.control_plane]

CN = "cn.cyphonic.test"


def scrape(lab: Lab, host: str) -> dict[tuple[str, tuple], float]:
    """GET /metrics of the host's daemon, from inside its namespace (the
    address `lab show` gives is on that namespace's loopback)."""
    address = lab.show()["hosts"][host]["metrics"]
    done = lab.run(host, ["curl", "-sf", "--max-time", "10", f"http://{address}/metrics"], timeout=20)
    assert done.returncode == 0, f"curl exited {done.returncode}: {done.stderr}"
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(done.stdout)
        for s in family.samples
    }


def test_lab_show_gives_every_daemon_a_metrics_address(lab: Lab) -> None:
    hosts = lab.show()["hosts"]
    for name in ("cloud", "mn", "cn", "trs", "adapter"):
        assert hosts[name]["metrics"] == "127.0.0.1:9101", name
    assert hosts["gn1"]["metrics"] is None  # a stock device runs nothing of ours


def test_node_counters_grow_with_a_ping(lab: Lab) -> None:
    tx = ("cyphonic_tunnel_bytes_total", (("direction", "tx"), ("peer", CN)))
    rx = ("cyphonic_tunnel_bytes_total", (("direction", "rx"), ("peer", CN)))
    assert lab.run("mn", ["ping", "-c", "1", "-W", "2", CN], timeout=30).returncode == 0  # the tunnel is up
    before = scrape(lab, "mn")
    done = lab.run("mn", ["ping", "-c", "5", "-i", "0.2", "-s", "1000", "-W", "2", CN], timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    after = scrape(lab, "mn")
    for key in (tx, rx):
        # a tunnel replaced between the scrapes starts again from zero (a counter reset)
        grown = after[key] - before.get(key, 0) if after[key] >= before.get(key, 0) else after[key]
        assert grown >= 5 * 1000, (key, before.get(key), after[key])
    assert after[("cyphonic_route_selection_seconds_count", ())] >= 1
    assert sum(v for (name, _), v in after.items() if name == "cyphonic_tunnels") >= 1


def test_the_cloud_counts_logins_registrations_and_route_selections(lab: Lab) -> None:
    cloud = scrape(lab, "cloud")
    assert cloud[("cyphonic_as_logins_total", (("result", "granted"),))] >= 4
    assert cloud[("cyphonic_nms_registrations_total", (("result", "accepted"),))] >= 4
    routes = sum(v for (name, _), v in cloud.items() if name == "cyphonic_nms_route_selections_total")
    assert routes >= 1
    assert cloud[("cyphonic_nms_nodes", ())] >= 4


def test_a_relay_counts_its_sessions(lab: Lab) -> None:
    trs = scrape(lab, "trs")
    assert ("cyphonic_trs_sessions", ()) in trs
    assert ("cyphonic_trs_relayed_bytes_total", (("side", "initiator"),)) in trs
