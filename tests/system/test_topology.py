"""The lab's underlay on its own: the network every other system test stands on."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cyphonic.lab import Lab, LabError, Role, down
from cyphonic.lab.apps import wait_listening
from cyphonic.lab.netns import NETNS_ETC, list_namespaces, ns_name
from cyphonic.lab.processes import cyphonic_cli, tool_env
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


GENERAL = {"gn1": "02:00:5e:10:00:01", "gn2": "02:00:5e:10:00:02", "gn6": "02:00:5e:10:00:06",
           "gn3": "02:00:5e:10:00:03"}


def test_adapter_sites_have_the_expected_hosts(network: Lab) -> None:
    topo = network.topology
    assert [h.name for h in topo.with_role(Role.ADAPTER)] == ["adapter", "adapter2"]
    assert [h.name for h in topo.with_role(Role.SWITCH)] == ["sw1"]
    assert {h.name: h.dhcp for h in topo.with_role(Role.GENERAL)} == {
        "gn1": "dhclient", "gn2": "udhcpc", "gn6": "dhclient6", "gn3": "dhclient"}
    assert [(h.name, p.mac) for h, p in topo.general_nodes("adapter")] == [
        ("gn1", GENERAL["gn1"]), ("gn2", GENERAL["gn2"]), ("gn6", GENERAL["gn6"])]
    assert [h.name for h, _ in topo.general_nodes("adapter2")] == ["gn3"]
    assert network.fqdn("gn6") == "gn6.cyphonic.test" and network.fqdn("sw1") is None


def test_adapter_lan_port_has_no_address_of_either_family(network: Lab) -> None:
    for adapter in ("adapter", "adapter2"):
        link = json.loads(network.run(adapter, ["ip", "-j", "addr", "show", "dev", "lan0"]).stdout)
        assert link[0]["operstate"] == "UP" and link[0]["addr_info"] == []
        sysctl = network.run(adapter, ["sysctl", "-n", "net.ipv6.conf.lan0.disable_ipv6"]).stdout
        assert sysctl.strip() == "1"
    # The adapter itself reaches the internet through its NAPT router.
    assert network.run("adapter", ["ping", "-c", "1", "-W", "2", "203.0.113.10"]).returncode == 0


@pytest.mark.parametrize("host", sorted(GENERAL))
def test_general_node_has_its_mac_and_nothing_configured(network: Lab, host: str) -> None:
    link = json.loads(network.run(host, ["ip", "-j", "addr", "show", "dev", "eth0"]).stdout)[0]
    assert link["address"] == GENERAL[host]
    assert [a["scope"] for a in link["addr_info"]] == ["link"]  # an IPv6 link-local, nothing else
    assert network.run(host, ["ip", "route", "show", "default"]).stdout == ""
    assert network.lease(host) is None


def test_switch_is_one_l2_segment_and_the_lans_are_apart(network: Lab) -> None:
    # gn1 -> gn2 over sw1's bridge by link-local address; gn3 is on another LAN.
    assert network.run("gn1", ["ping", "-c", "1", "-W", "2", "fe80::5eff:fe10:2%eth0"]).returncode == 0
    assert network.run("gn3", ["ping", "-c", "1", "-W", "1", "fe80::5eff:fe10:1%eth0"]).returncode != 0
    bridged = json.loads(network.run("sw1", ["ip", "-j", "link", "show", "master", "br0"]).stdout)
    assert sorted(port["ifname"] for port in bridged) == ["adapter", "gn1", "gn2", "gn6"]


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


# Where `lab move` takes mn: network, its address there, the cloud reachable over IPv4, IPv6.
MOVES = [("global4b", ["198.51.101.10"], True, False),
         ("napt", ["192.168.70.10"], True, False),
         ("ipv6only", ["2001:db8:b::10"], False, True),
         ("global4a", ["198.51.100.10", "2001:db8:a::10"], True, True)]


def _reaches(lab: Lab, host: str, target: str) -> bool:
    return lab.run(host, ["ping", "-c", "1", "-W", "2", target]).returncode == 0


def test_move_takes_mn_through_every_access_network_and_home_twice(network: Lab) -> None:
    assert network.network("mn") == "global4a"
    try:
        for i, (name, addresses, v4, v6) in enumerate(MOVES * 2):
            moved = network.move("mn", name)
            assert (moved["to"], moved["interface"]) == (name, "eth0")
            assert moved["seconds"] < 1
            assert network.network("mn") == name
            if i < len(MOVES):  # show() asks every node for its status: ~1 s
                shown = network.show()["hosts"]["mn"]
                assert (shown["network"], shown["addresses"]) == (name, addresses)
            links = json.loads(network.run("mn", ["ip", "-j", "addr", "show", "scope", "global"]).stdout)
            found = [(lk["ifname"], a["local"]) for lk in links for a in lk["addr_info"] if "local" in a]
            assert sorted(found) == sorted(("eth0", a) for a in addresses)  # the old uplink is gone
            assert _reaches(network, "mn", "203.0.113.10") == v4
            assert _reaches(network, "mn", "2001:db8:c::10") == v6
    finally:
        network.move("mn", "global4a")
    assert _reaches(network, "cloud", "198.51.100.10") and _reaches(network, "cloud", "2001:db8:a::10")


def test_move_to_napt_is_behind_nat_mv(network: Lab) -> None:
    assert [p.ifname for p in network.topology.ports("nat-mv")] == ["wan"]  # nothing behind it yet
    network.move("mn", "napt")
    listener = network.popen("cloud", [sys.executable, "-c", UDP_PEEK], stdout=subprocess.PIPE, text=True)
    try:
        wait_listening(network, "cloud", 9999, udp=True)
        network.run("mn", [sys.executable, "-c",
                           "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
                           ".sendto(b'hi', ('203.0.113.10', 9999))"], check=True)
        seen, _ = listener.communicate(timeout=10)
        assert seen.strip() == "198.18.5.10"
        assert not _reaches(network, "attacker", "192.168.70.10")
        with pytest.raises(LabError, match="in use by 'mn'"):
            network.move("a1", "napt")
    finally:
        listener.kill()
        network.move("mn", "global4a")


def test_lab_move_cli_lists_the_networks_and_rejects_unknown_names(network: Lab) -> None:
    done = subprocess.run([*cyphonic_cli(), "lab", "move", "--help"], capture_output=True, text=True)
    listed = [line.split()[0] for line in done.stdout.split("networks:\n")[1].splitlines()]
    assert listed == ["global4a", "global4b", "napt", "ipv6only"]
    for args in (["mn", "nowhere"], ["nobody", "napt"], ["inet", "napt"]):
        done = subprocess.run([*cyphonic_cli(), "lab", "move", "--prefix", network.prefix, *args],
                              capture_output=True, text=True, env=tool_env())
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert network.network("mn") == "global4a"
