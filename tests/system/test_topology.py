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

# the lab itself (namespaces, NAPTs, moves): no CYPHONIC data path in it
pytestmark = [pytest.mark.system, pytest.mark.control_plane]

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
    assert listed == ["global4a", "global4b", "napt", "ipv6only", "home"]
    for args in (["mn", "nowhere"], ["nobody", "napt"], ["inet", "napt"], ["sw1", "home"]):
        done = subprocess.run([*cyphonic_cli(), "lab", "move", "--prefix", network.prefix, *args],
                              capture_output=True, text=True, env=tool_env())
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert network.network("mn") == "global4a"


def _default_routes(lab: Lab, host: str) -> list[tuple[str, str]]:
    routes = []
    for family in ("-4", "-6"):
        shown = json.loads(lab.run(host, ["ip", "-j", family, "route", "show", "default"]).stdout or "[]")
        routes += [(r["gateway"], r["dev"]) for r in shown]
    return routes


def test_move_takes_the_adapters_wan_side_away_and_home(network: Lab) -> None:
    assert network.network("adapter") is None  # its home, nat-ad's LAN, is no access network
    try:
        moved = network.move("adapter", "global4b")
        assert (moved["from"], moved["to"], moved["home"], moved["removed"]) == (
            None, "global4b", False, "nat-ad:lan")
        assert network.network("adapter") == "global4b"
        assert json.loads(network.paths.networks.read_text()) == {"adapter": "global4b"}
        assert _default_routes(network, "adapter") == [("198.51.101.1", "eth0")]
        shown = network.show()["hosts"]
        assert shown["adapter"]["addresses"] == ["198.51.101.10"]
        assert shown["nat-ad"]["addresses"] == ["198.18.3.10"]  # its LAN port went with the link
        assert "198.51.101.1" in shown["inet"]["addresses"]
        assert _reaches(network, "adapter", "203.0.113.10")
        # the LAN port, where the general nodes are, is not touched
        assert network.run("adapter", ["ip", "link", "show", "lan0", "up"]).stdout
    finally:
        moved = network.move("adapter", "home")
    assert (moved["from"], moved["to"], moved["home"], moved["router"]) == (
        "global4b", None, True, "nat-ad:lan")
    assert network.network("adapter") is None and json.loads(network.paths.networks.read_text()) == {}
    assert _default_routes(network, "adapter") == [("192.168.50.1", "eth0")]
    shown = network.show()["hosts"]
    assert (shown["adapter"]["addresses"], shown["nat-ad"]["addresses"]) == (
        ["192.168.50.10"], ["198.18.3.10", "192.168.50.1"])
    assert "198.51.101.1" not in shown["inet"]["addresses"]
    assert _reaches(network, "adapter", "203.0.113.10")


def test_move_home_takes_mn_back_to_global4a(network: Lab) -> None:
    network.move("mn", "napt")
    moved = network.move("mn", "home")
    assert (moved["from"], moved["to"], moved["home"]) == ("napt", "global4a", True)
    assert network.network("mn") == "global4a"
    assert sorted(_default_routes(network, "mn")) == [("198.51.100.1", "eth0"), ("2001:db8:a::1", "eth0")]
    assert _reaches(network, "mn", "203.0.113.10") and _reaches(network, "mn", "2001:db8:c::10")


# Keeps one UDP socket (one NAT mapping) and sends to mn from it every 0.2 s until told to stop.
UDP_SENDER = ("import socket, sys, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
              "s.bind(('0.0.0.0', 0))\n"
              "while sys.stdin.readline().startswith('send'): s.sendto(b'hi', ('198.51.100.10', 9999))")
# Prints the source port of each datagram to port 9999.
UDP_PORTS = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
             "s.bind(('0.0.0.0', 9999)); s.settimeout(10)\n"
             "while True: print(s.recvfrom(100)[1][1], flush=True)")


def test_rebind_gives_the_same_flow_a_new_public_port_each_time(network: Lab) -> None:
    listener = network.popen("mn", [sys.executable, "-c", UDP_PORTS], stdout=subprocess.PIPE, text=True)
    sender = network.popen("cn", [sys.executable, "-c", UDP_SENDER], stdin=subprocess.PIPE, text=True)
    assert listener.stdout is not None and sender.stdin is not None
    try:
        wait_listening(network, "mn", 9999, udp=True)

        def port_seen() -> int:
            sender.stdin.write("send\n")
            sender.stdin.flush()
            return int(listener.stdout.readline())

        ports = [port_seen(), port_seen()]
        assert ports[0] == ports[1]  # one mapping while nothing happens
        ranges = []
        for _ in range(3):
            rebound = network.rebind("nat-cn")
            low, high = rebound["ports"]
            assert rebound["forgotten"] >= 1  # at least this flow's mapping
            ports.append(port_seen())
            assert low <= ports[-1] <= high and ports[-1] != ports[-2]
            assert port_seen() == ports[-1]  # the new mapping holds
            ranges.append(rebound["ports"])
        assert ranges[0] == ranges[2] != ranges[1]  # two ranges, alternating
        done = subprocess.run([*cyphonic_cli(), "lab", "rebind", "--prefix", network.prefix, "mn"],
                              capture_output=True, text=True, env=tool_env())
        assert done.returncode == 2 and "not a NAPT router" in done.stderr
    finally:
        sender.stdin.write("q\n")
        sender.stdin.close()
        sender.wait(10)
        listener.kill()
        listener.wait()
