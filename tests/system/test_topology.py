"""The lab's underlay on its own: the network every other system test stands on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cyphonic.lab import Lab, down
from cyphonic.lab.apps import wait_listening
from cyphonic.lab.netns import NETNS_ETC, list_namespaces, ns_name
from cyphonic.lab.state import LabPaths

pytestmark = pytest.mark.system

# Prints the source address of the first UDP datagram to port 9999.
UDP_PEEK = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "s.bind(('0.0.0.0', 9999)); s.settimeout(10); print(s.recvfrom(100)[1][0])")


@pytest.mark.parametrize(("host", "wan"), [
    ("cn", "192.0.2.10"), ("a1", "198.18.1.10"), ("b1", "198.18.2.10")])
def test_napt_site_reaches_the_internet_as_its_wan_address(network: Lab, host: str,
                                                           wan: str) -> None:
    listener = network.popen("mn", [sys.executable, "-c", UDP_PEEK],
                             stdout=subprocess.PIPE, text=True)
    try:
        wait_listening(network, "mn", 9999, udp=True)
        network.run(host, [sys.executable, "-c",
                           "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                           ".sendto(b'hi', ('198.51.100.10', 9999))"], check=True)
        seen, _ = listener.communicate(timeout=10)
    finally:
        listener.kill()
    assert seen.strip() == wan  # its NAPT router's WAN address, not its own 192.168.x.10


def test_napt_site_is_not_reachable_from_the_internet(network: Lab) -> None:
    assert network.run("cn", ["ping", "-c", "1", "-W", "2", "198.51.100.10"]).returncode == 0
    assert network.run("mn", ["ping", "-c", "1", "-W", "1", "192.168.20.10"]).returncode != 0


def test_global_hosts_talk_ipv6_and_the_napt_site_has_none(network: Lab) -> None:
    assert network.run("mn", ["ping", "-c", "1", "-W", "2", "2001:db8:c::10"]).returncode == 0
    assert network.run("cn", ["ip", "-6", "addr", "show", "scope", "global"]).stdout == ""


def test_napt_sites_cannot_reach_one_another(network: Lab) -> None:
    assert network.run("a1", ["ping", "-c", "1", "-W", "2", "198.18.2.10"]).returncode == 0
    assert network.run("a1", ["ping", "-c", "1", "-W", "1", "192.168.40.10"]).returncode != 0


def test_ipv6_only_site_reaches_the_cloud_and_relay_over_ipv6_only(network: Lab) -> None:
    for target in ("2001:db8:c::10", "2001:db8:d::20", "2001:db8:a::10"):
        assert network.run("v6", ["ping", "-c", "1", "-W", "2", target]).returncode == 0
    assert network.run("v6", ["ip", "-4", "addr", "show", "scope", "global"]).stdout == ""
    assert network.run("v6", ["ping", "-c", "1", "-W", "1", "203.0.113.10"]).returncode != 0


def test_relay_is_dual_stack(network: Lab) -> None:
    assert network.run("a1", ["ping", "-c", "1", "-W", "2", "203.0.114.20"]).returncode == 0
    assert network.run("mn", ["ping", "-c", "1", "-W", "2", "2001:db8:d::20"]).returncode == 0


def test_lookups_in_a_node_go_to_its_own_resolver(network: Lab) -> None:
    # `ip netns exec` binds /etc/netns/<ns>/resolv.conf over /etc/resolv.conf.
    out = network.run("mn", ["cat", "/etc/resolv.conf"]).stdout
    assert out.split() == ["nameserver", "127.0.0.1"]


def test_down_removes_everything_even_after_a_crash(spare_prefix: str) -> None:
    prefix = spare_prefix
    lab = Lab(prefix)
    try:
        lab.up(programs=False)
        # A "crashed" lab: a program still running in a namespace.
        sleeper = lab.popen("cn", ["sleep", "300"])
        assert len(list_namespaces(prefix)) == len(lab.topology.hosts)
    finally:
        removed = down(prefix)
    assert len(removed) == len(lab.topology.hosts)
    assert sleeper.wait(timeout=5) != 0
    assert list_namespaces(prefix) == []
    assert not (NETNS_ETC / ns_name(prefix, "cn")).exists()
    assert not LabPaths(prefix).root.exists()
    assert down(prefix) == []  # nothing up: still fine
