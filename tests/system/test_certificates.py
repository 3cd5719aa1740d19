"""The cloud refuses nodes whose certificate it must not trust, and says why."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from cyphonic.lab import Lab
from cyphonic.lab.enrollment import ca_init, derive_node_config, enroll_node, revoke
from cyphonic.lab.processes import log_tail, start_daemon

pytestmark = [pytest.mark.system, pytest.mark.control_plane]

REFUSED = re.compile(r"login refused from .*: (.+)$")


def _enroll_foreign_ca(lab: Lab, name: str, out: Path) -> None:
    foreign = lab.paths.root / "foreign-ca"
    if not (foreign / "ca.key").exists():
        ca_init(foreign, lab.topology.domain)
    enroll_node(name, foreign, out, lab.topology.cloud_addresses_for("mn"))


def _enroll_expired(lab: Lab, name: str, out: Path) -> None:
    enroll_node(name, lab.paths.ca, out, lab.topology.cloud_addresses_for("mn"),
                start="2020-01-01", days=1)


def _enroll_revoked(lab: Lab, name: str, out: Path) -> None:
    enroll_node(name, lab.paths.ca, out, lab.topology.cloud_addresses_for("mn"))
    revoke(lab.paths.ca, out / "node.crt")


CASES = {
    # name: (how to enroll it, words the cloud's log must give as the reason)
    "rogue": (_enroll_foreign_ca, ("unknown CA", "foreign CA")),
    "stale": (_enroll_expired, ("expired",)),
    "gone": (_enroll_revoked, ("revoked",)),
}


def _refusals(log: Path, since: int) -> list[str]:
    text = log.read_bytes()[since:].decode(errors="replace")
    return [m[1] for line in text.splitlines() if (m := REFUSED.search(line))]


@pytest.mark.parametrize("name", list(CASES))
def test_cloud_refuses_the_node_and_logs_why(lab: Lab, name: str) -> None:
    enroll, reasons = CASES[name]
    index = list(CASES).index(name)
    out = lab.paths.root / f"refused-{name}"
    enroll(lab, name, out)
    # A second daemon in mn's namespace needs its own port, TUN and resolver address.
    config = derive_node_config(out / "node.toml", out / "node-in-mn.toml", {
        "listen_port": 4600 + index,
        "tun": f"cyref{index}",
        "resolver.listen": f"127.0.0.{10 + index}:53",
        "control": f"refused-{index}",
    })
    cloud_log = lab.paths.log("cloud")
    since = cloud_log.stat().st_size
    log = lab.paths.root / f"refused-{name}.log"
    node = start_daemon(lab.ns("mn"), "cyphonic.node", config, log)
    try:
        deadline = time.monotonic() + 15
        while (not _refusals(cloud_log, since) and node.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.2)
        refusals = _refusals(cloud_log, since)
        time.sleep(0.5)  # a node that wrongly got in would show up by now
        cloud = lab.status("cloud")
        exit_code = node.poll()
    finally:
        node.kill()
        node.wait()

    node_log = log.read_text(errors="replace")
    if not refusals and "control.py" in node_log and "Address already in use" in node_log:
        pytest.fail("a second node daemon in mn's namespace died binding the control socket "
                    "(abstract \\0cyphonic/node is one per namespace) before it tried to log in",
                    pytrace=False)
    assert refusals, (f"the cloud logged no refusal for {name}\n--- cloud\n{log_tail(cloud_log)}"
                      f"\n--- {name}\n{log_tail(log)}")
    assert any(word in r for r in refusals for word in reasons), refusals
    fqdn = f"{name}.{lab.topology.domain}"
    assert fqdn not in [n["fqdn"] for n in cloud["nodes"]]
    assert fqdn not in [e["fqdn"] for e in cloud.get("enrollments", [])]
    assert exit_code != 0  # still retrying (None) or gave up with an error
