"""NAPT <-> NAPT and IPv6-only <-> IPv4-behind-NAPT: through the TRS."""

from __future__ import annotations

import hashlib
import os

import pytest

from cyphonic.lab import Lab, apps

pytestmark = pytest.mark.system

# (client, server): both behind NAPT; IPv6-only to IPv4 behind NAPT
PAIRS = [("a1", "b1"), ("v6", "cn")]


@pytest.mark.parametrize("client, server", PAIRS)
def test_ping_by_name_crosses_the_relay(lab: Lab, client: str, server: str) -> None:
    done = lab.run(client, ["ping", "-c", "3", "-W", "3", f"{server}.cyphonic.test"], timeout=40)
    assert done.returncode == 0, done.stdout + done.stderr
    assert apps.ping_summary(done.stdout)[:2] == (3, 3)
    [peer] = [p for p in lab.status(client)["peers"] if p["fqdn"] == f"{server}.cyphonic.test"]
    assert peer["path"] == "relay" and peer["rx_bytes"] > 0
    trs = lab.status("trs")
    assert any(
        s["sides"]["initiator"]["packets"] and s["sides"]["responder"]["packets"] for s in trs["sessions"]
    ), trs


@pytest.mark.parametrize("client, server", PAIRS)
def test_curl_and_iperf3_through_the_relay(lab: Lab, client: str, server: str, tmp_path) -> None:
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
    finally:
        apps.stop(http)
        apps.stop(iperf)
