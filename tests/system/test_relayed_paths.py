"""NAPT <-> NAPT and IPv6-only <-> IPv4-behind-NAPT, by name.

a1 and b1 sit behind two NAPT routers: their tunnel starts on the TRS and a
hole punch moves it direct. v6 (IPv6 only) and cn (IPv4 behind NAPT) share
no address family: they stay on the TRS. With hole punching off, a1 and b1
stay on the relay too (the last test, which restarts them that way)."""

from __future__ import annotations

import hashlib
import os
import time
import tomllib

import pytest

from cyphonic.lab import Lab, apps
from cyphonic.lab.enrollment import derive_node_config
from cyphonic.lab.handover import Pinger

pytestmark = pytest.mark.system

PAIRS = [("a1", "b1", "direct"), ("v6", "cn", "relay")]


def _peer(lab: Lab, client: str, server: str) -> dict:
    [peer] = [p for p in lab.status(client)["peers"] if p["fqdn"] == f"{server}.cyphonic.test"]
    return peer


def _ping(lab: Lab, client: str, server: str) -> None:
    done = lab.run(client, ["ping", "-c", "3", "-W", "3", f"{server}.cyphonic.test"], timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr
    assert apps.ping_summary(done.stdout)[:2] == (3, 3)


@pytest.mark.parametrize("client, server, path", PAIRS)
def test_ping_by_name_takes_the_expected_path(lab: Lab, client: str, server: str, path: str) -> None:
    _ping(lab, client, server)
    deadline = time.monotonic() + 5  # a punch settles within a few hundred ms
    while _peer(lab, client, server)["path"] != path and time.monotonic() < deadline:
        time.sleep(0.1)
    peer = _peer(lab, client, server)
    assert peer["path"] == path and peer["rx_bytes"] > 0, peer
    if path == "relay":
        trs = lab.status("trs")
        assert any(s["sides"]["initiator"]["packets"] and s["sides"]["responder"]["packets"]
                   for s in trs["sessions"]), trs


@pytest.mark.parametrize("client, server, path", PAIRS)
def test_curl_and_iperf3(lab: Lab, client: str, server: str, path: str, tmp_path) -> None:
    _curl_and_iperf3(lab, client, server, path, tmp_path)


def _curl_and_iperf3(lab: Lab, client: str, server: str, path: str, tmp_path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    data = os.urandom(512 * 1024)
    (www / "blob.bin").write_bytes(data)
    http = apps.serve_http(lab, server, www, port=8081)
    iperf = apps.serve_iperf3(lab, server, port=5202)
    try:
        done = lab.run(client, ["curl", "-sS", "--max-time", "30", "-o", "-",
                                f"http://{server}.cyphonic.test:8081/blob.bin"], timeout=40, text=False)
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(done.stdout).digest() == hashlib.sha256(data).digest()
        tcp = apps.iperf3(lab, client, f"{server}.cyphonic.test", seconds=3, port=5202)
        assert tcp["end"]["sum_received"]["bytes"] > 0
        udp = apps.iperf3(lab, client, f"{server}.cyphonic.test", seconds=3, port=5202,
                          udp_rate="50M", extra=("-l", "1200"))
        assert udp["end"]["sum"]["lost_percent"] < 10
        assert _peer(lab, client, server)["path"] == path
    finally:
        apps.stop(http)
        apps.stop(iperf)


def _without_punching(lab: Lab) -> None:
    """a1 and b1 restarted with hole punching off (once: they stay so)."""
    if all(tomllib.loads(lab.config(h).read_text()).get("hole_punching") is False for h in ("a1", "b1")):
        return
    for host in ("a1", "b1"):
        config = lab.config(host)
        derive_node_config(config, config, {"hole_punching": False})
        lab.kill(host)
        lab.start(host)
    lab.wait_registered(["a1", "b1"], time.monotonic() + 20)


@pytest.mark.control_plane
@pytest.mark.disruptive
def test_without_hole_punching_napt_to_napt_stays_on_the_relay(lab: Lab, tmp_path) -> None:
    _without_punching(lab)
    _ping(lab, "a1", "b1")
    time.sleep(1)  # time enough for a punch, were one tried
    assert _peer(lab, "a1", "b1")["path"] == "relay"
    assert _peer(lab, "b1", "a1")["path"] == "relay"
    _curl_and_iperf3(lab, "a1", "b1", "relay", tmp_path)


@pytest.mark.disruptive
@pytest.mark.control_plane
def test_a_nat_that_rebinds_under_a_napt_to_napt_relay_costs_less_than_a_keepalive(lab: Lab) -> None:
    _without_punching(lab)
    _ping(lab, "a1", "b1")
    assert _peer(lab, "a1", "b1")["path"] == "relay"
    pinger = Pinger(lab, "a1", lab.status("b1")["vip4"])
    time.sleep(1)
    start = time.time()
    rebound = lab.rebind("nat-b")
    time.sleep(4)
    pinger.stop()
    [gap] = pinger.gaps([start])
    print(f"nat-b rebinding ({rebound}): {gap.line()}")
    keepalive = 10
    assert gap.gap_ms is not None and gap.gap_ms < keepalive * 1000, gap
    assert _peer(lab, "a1", "b1")["path"] == "relay"


@pytest.mark.disruptive
@pytest.mark.control_plane
def test_a_dead_trs_is_never_assigned_new_routes_go_to_the_other(lab: Lab) -> None:
    lab.kill("trs")
    try:
        time.sleep(11)  # the NMS probes every 5 s: two missed probes at most
        # v6 (IPv6 only) and b1 (IPv4 behind NAPT) have no tunnel yet: a new relayed route
        _ping(lab, "v6", "b1")
        assert _peer(lab, "v6", "b1")["path"] == "relay"
        trs2 = lab.status("trs2")
        assert any(s["sides"]["initiator"]["packets"] and s["sides"]["responder"]["packets"]
                   for s in trs2["sessions"]), trs2
    finally:  # the tests after this one find both TRSs again
        lab.start("trs")
        lab.wait_trs(time.monotonic() + 20)
