"""The sites added for the Tunnel Relay Service (issue 3), before the relay is wired in.

Only what already works without the relay is asserted here: the TRS runs and
answers, the new NAPT nodes and the IPv6-only node register, and the IPv6-only
node reaches a global dual-stack node directly. NAPT-to-NAPT traffic (a1 <-> b1,
a1 <-> cn) needs the relay and is not tested yet.
"""

from __future__ import annotations

import json
import tomllib

import pytest

from cyphonic import keys
from cyphonic.lab import Lab
from cyphonic.lab.processes import cyphonic_cli

pytestmark = [pytest.mark.system, pytest.mark.control_plane]


def test_trs_answers_status_as_a_relay(lab: Lab) -> None:
    done = lab.run("trs", [*cyphonic_cli(), "status", "--json", "--daemon", "trs"], timeout=10)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["role"] == "trs"


def test_trs_announces_its_global_addresses(lab: Lab) -> None:
    config = tomllib.loads(lab.paths.trs_config("trs").read_text())
    assert config["public"] == ["203.0.114.20:7002", "[2001:db8:d::20]:7002"]
    key = lab.paths.ca / config["nms_key"]
    assert len(keys.read_secret(key)) == 32
    assert key.stat().st_mode & 0o077 == 0
    cloud = tomllib.loads(lab.paths.cloud_config.read_text())
    assert cloud["nms"]["trs"] == ["203.0.114.20:7002", "203.0.115.20:7002"]
    assert cloud["nms"]["trs_key"] == config["nms_key"]


@pytest.mark.parametrize(("host", "wan"), [("a1", "198.18.1.10"), ("b1", "198.18.2.10")])
def test_napt_site_nodes_register_as_behind_nat(lab: Lab, host: str, wan: str) -> None:
    st = lab.status(host)
    assert st is not None and st["registered"] is True, st
    assert st["nat"] is True
    assert st["fqdn"] == f"{host}.cyphonic.test"
    # IPv4 only, and the cloud saw the NAPT router's WAN address.
    assert set(st["registrations"]) == {"ipv4"}
    assert st["registrations"]["ipv4"]["observed"].startswith(f"{wan}:")


def test_ipv6_only_node_registers_over_ipv6(lab: Lab) -> None:
    assert lab.run("v6", ["ip", "-4", "addr", "show", "dev", "eth0"]).stdout == ""
    assert lab.run("v6", ["ip", "-4", "route", "show", "default"]).stdout == ""
    node = tomllib.loads(lab.paths.node_config("v6").read_text())
    assert node["auth"] == ["[2001:db8:c::10]:7000"]
    st = lab.status("v6")
    assert st is not None and st["registered"] is True, st
    assert st["nat"] is False
    assert set(st["registrations"]) == {"ipv6"}
    assert st["registrations"]["ipv6"]["observed"].startswith("2001:db8:e::10")


def test_ipv6_only_node_reaches_mn_by_name(lab: Lab) -> None:
    done = lab.run("v6", ["ping", "-c", "2", "-i", "0.2", "-W", "2", "mn.cyphonic.test"],
                   timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
