"""The data plane does not need the cloud once a tunnel is up (design section 7)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from cyphonic.lab import Lab, apps

pytestmark = [pytest.mark.system, pytest.mark.disruptive, pytest.mark.control_plane]

CN = "cn.cyphonic.test"
RUN = 8  # seconds of iperf3
KILL_AT = 2.5  # seconds into the run


def _vips(lab: Lab, host: str) -> tuple[str, str]:
    status = lab.status(host)
    assert status is not None, f"{host} does not answer `cyphonic status`"
    return status["vip4"], status["vip6"]


def _wait_cloud_sees(lab: Lab, fqdns: set[str], timeout: float) -> set[str]:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        cloud = lab.status("cloud")
        seen = {n["fqdn"] for n in (cloud or {}).get("nodes", [])}
        if fqdns <= seen:
            break
        time.sleep(0.5)
    return seen


def test_tunnel_survives_cloud_kill_and_cloud_restart_keeps_virtual_ips(
        lab: Lab, cn_iperf3: int) -> None:
    before = {h: _vips(lab, h) for h in ("mn", "cn")}

    client = lab.popen("mn", ["iperf3", "-c", CN, "-p", str(cn_iperf3), "-t", str(RUN),
                              "-i", "1", "--json"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    time.sleep(KILL_AT)
    lab.kill("cloud", signal.SIGKILL)
    killed_at = time.monotonic() - started
    out, err = client.communicate(timeout=RUN + 30)
    report = json.loads(out)
    assert client.returncode == 0 and "error" not in report, report.get("error", err)
    # Every interval that began after the kill still carried data.
    after_kill = [i["sum"]["bytes"] for i in report["intervals"] if i["sum"]["start"] >= killed_at]
    assert len(after_kill) >= RUN - KILL_AT - 1, report["intervals"]
    assert all(b > 0 for b in after_kill), after_kill

    lab.start("cloud")
    lab.wait_cloud(time.monotonic() + 15)
    fqdns = {lab.fqdn("mn"), lab.fqdn("cn")}
    seen = _wait_cloud_sees(lab, fqdns, timeout=40)
    assert fqdns <= seen, f"after the restart the cloud only sees {seen}"
    assert {h: _vips(lab, h) for h in ("mn", "cn")} == before
    # The restarted cloud kept the assignments in its database, not by luck.
    enrolled = {e["fqdn"]: (e["vip4"], e["vip6"]) for e in lab.status("cloud")["enrollments"]}
    assert enrolled[lab.fqdn("mn")] == before["mn"]
    assert enrolled[lab.fqdn("cn")] == before["cn"]

    # A fresh route selection needs the restarted cloud: a restarted mn
    # daemon has no tunnel left and must ask the NMS again.
    lab.kill("mn")
    lab.start("mn")
    lab.wait_registered(["mn"], time.monotonic() + 20)
    assert _vips(lab, "mn") == before["mn"]
    done = lab.run("mn", ["ping", "-c", "3", "-W", "2", CN], timeout=30)
    sent, received, _ = apps.ping_summary(done.stdout)
    assert received > 0, done.stdout + done.stderr
