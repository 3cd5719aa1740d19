"""The CYPHONIC adapter with stock devices behind it (issue 14): general
nodes running only Debian's DHCP clients get their virtual addresses, find
peers by name through the adapter and reach them, and peers reach them.

gn1 (dhclient) and gn2 (udhcpc) and gn6 (dhclient -6) sit on switch sw1
behind `adapter` (behind NAPT); gn3 (dhclient) behind `adapter2` (behind
another NAPT).
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from cyphonic.lab import Lab, apps

pytestmark = pytest.mark.system

DOMAIN = "cyphonic.test"
CN, GN1, GN2, GN3, V6 = (f"{h}.{DOMAIN}" for h in ("cn", "gn1", "gn2", "gn3", "v6"))


def general_node(lab: Lab, host: str, adapter: str = "adapter") -> dict:
    status = lab.status(adapter)
    assert status is not None, f"{adapter} does not answer `cyphonic status`"
    for gn in status["general_nodes"]:
        if gn["fqdn"] == f"{host}.{DOMAIN}":
            return gn
    raise AssertionError(f"{adapter} does not list {host}: {status['general_nodes']}")


def ping(lab: Lab, host: str, target: str, *args: str, count: int = 3) -> subprocess.CompletedProcess:
    return lab.run(host, ["ping", "-c", str(count), "-W", "2", *args, target], timeout=30)


def ping_ok(lab: Lab, host: str, target: str, *args: str) -> None:
    # the first packets may wait for route selection: a warm-up ping may lose some
    ping(lab, host, target, *args, count=2)
    done = ping(lab, host, target, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    sent, received, _ = apps.ping_summary(done.stdout)
    assert (sent, received) == (3, 3), done.stdout


def drops(lab: Lab, reason: str, adapter: str = "adapter") -> int:
    status = lab.status(adapter)
    assert status is not None
    return status["drops"].get(reason, 0)


def wait_for(predicate, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


# -- addresses --------------------------------------------------------------------------


@pytest.mark.control_plane
@pytest.mark.parametrize("host, adapter", [("gn1", "adapter"), ("gn2", "adapter"), ("gn3", "adapter2")])
def test_each_general_node_holds_the_virtual_ipv4_its_adapter_reports(lab: Lab, host: str, adapter: str) -> None:
    gn = general_node(lab, host, adapter)
    assert gn["vip4"] and gn["lease_expires"] and gn["lease_expires"] > 0
    assert lab.lease(host) == gn["vip4"]
    assert f"{host}.{DOMAIN}" in lab.registered_fqdns()


@pytest.mark.control_plane
def test_the_ipv6_general_node_holds_its_virtual_ipv6(lab: Lab) -> None:
    gn = general_node(lab, "gn6")
    assert gn["ipv6"] and gn["vip6"] and gn["vip6"] != "::"
    assert lab.lease("gn6") == gn["vip6"]


@pytest.mark.control_plane
def test_a_general_node_enrolled_without_ipv6_has_no_aaaa(lab: Lab) -> None:
    done = lab.run("cn", ["dig", "+time=5", "+tries=1", "+short", "AAAA", GN1], timeout=15)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout


@pytest.mark.control_plane
@pytest.mark.parametrize("host", ["gn1", "gn2"])
def test_a_general_node_renews_and_releases_its_lease(lab: Lab, host: str) -> None:
    address = lab.lease(host)
    before = general_node(lab, host)["lease_expires"]
    time.sleep(1.1)
    assert lab.dhcp_renew(host) == address
    assert general_node(lab, host)["lease_expires"] > before - 1.1
    lab.dhcp_release(host)
    assert wait_for(lambda: general_node(lab, host)["lease_expires"] is None, "the adapter to end the lease")
    # the released device gets nothing through meanwhile: no lease, no data path
    assert lab.dhcp_renew(host) == address
    assert general_node(lab, host)["lease_expires"] is not None
    ping_ok(lab, host, CN)


@pytest.mark.control_plane
def test_an_unknown_mac_gets_no_lease(lab: Lab) -> None:
    lab.run("gn2", ["ip", "link", "add", "mv0", "link", "eth0", "type", "macvlan", "mode", "bridge"])
    try:
        lab.run("gn2", ["ip", "link", "set", "mv0", "address", "02:00:5e:99:99:99", "up"])
        done = lab.run("gn2", ["udhcpc", "-i", "mv0", "-n", "-q", "-t", "3", "-T", "1", "-s", "/bin/true"], timeout=30)
        assert done.returncode != 0, "udhcpc got a lease for an unknown MAC"
    finally:
        lab.run("gn2", ["ip", "link", "del", "mv0"])
    status = lab.status("adapter")
    assert status is not None
    assert all(gn["mac"] != "02:00:5e:99:99:99" for gn in status["general_nodes"])


# -- names and reachability ---------------------------------------------------------------


@pytest.mark.control_plane
def test_dig_of_cn_from_a_general_node_answers_through_the_adapter(lab: Lab) -> None:
    cn = lab.status("cn")
    assert cn is not None
    done = lab.run("gn1", ["dig", "+time=5", "+tries=1", "+short", CN], timeout=15)
    assert done.returncode == 0 and done.stdout.split() == [cn["vip4"]], done.stdout
    resolv = Path(f"/etc/netns/{lab.ns('gn1')}/resolv.conf").read_text()
    assert general_node(lab, "gn1") and lab.status("adapter")["vip4"] in resolv


def test_a_general_node_reaches_cn_by_name_with_ping_curl_and_iperf3(lab: Lab, tmp_path: Path) -> None:
    ping_ok(lab, "gn1", CN)
    (tmp_path / "hello.txt").write_text("through the adapter\n")
    server = apps.serve_http(lab, "cn", tmp_path, port=8081)
    try:
        done = lab.run("gn1", ["curl", "-sS", "--max-time", "10", f"http://{CN}:8081/hello.txt"], timeout=20)
        assert done.returncode == 0 and done.stdout == "through the adapter\n", done.stderr
    finally:
        apps.stop(server)
    iperf = apps.serve_iperf3(lab, "cn", port=5211)
    try:
        tcp = apps.iperf3(lab, "gn1", CN, seconds=2, port=5211)
        assert tcp["end"]["sum_received"]["bytes"] > 1_000_000
        udp = apps.iperf3(lab, "gn1", CN, seconds=2, udp_rate="50M", port=5211)
        assert udp["end"]["sum"]["lost_percent"] < 5
    finally:
        apps.stop(iperf)


def test_cn_reaches_a_general_node_by_name(lab: Lab) -> None:
    ping_ok(lab, "cn", GN1, "-4")
    peers = general_node(lab, "gn1")["peers"]
    assert CN in [p["fqdn"] for p in peers]


@pytest.mark.parametrize("target, host, port", [(GN3, "gn3", 5212), (V6, "v6", 5214)])
def test_a_general_node_reaches_gn3_and_v6_with_ping_curl_and_iperf3(
    lab: Lab, tmp_path: Path, target: str, host: str, port: int
) -> None:
    ping_ok(lab, "gn1", target)
    (tmp_path / "hello.txt").write_text(f"hello from {host}\n")
    server = apps.serve_http(lab, host, tmp_path, port=port + 3000)
    try:
        done = lab.run("gn1", ["curl", "-sS", "--max-time", "10", f"http://{target}:{port + 3000}/hello.txt"])
        assert done.returncode == 0 and done.stdout == f"hello from {host}\n", done.stderr
    finally:
        apps.stop(server)
    iperf = apps.serve_iperf3(lab, host, port=port)
    try:
        tcp = apps.iperf3(lab, "gn1", target, seconds=2, port=port)
        assert tcp["end"]["sum_received"]["bytes"] > 100_000
        udp = apps.iperf3(lab, "gn1", target, seconds=2, udp_rate="20M", port=port)
        assert udp["end"]["sum"]["lost_percent"] < 5
    finally:
        apps.stop(iperf)


@pytest.mark.control_plane
def test_two_adapters_behind_napt_start_relayed_and_punch_a_direct_path(lab: Lab) -> None:
    ping_ok(lab, "gn1", GN3)
    wait_for(
        lambda: any(p["fqdn"] == GN3 and p["path"] == "direct" for p in general_node(lab, "gn1")["peers"]),
        "gn1's tunnel to gn3 to leave the relay for a hole-punched direct path",
    )
    ping_ok(lab, "gn1", GN3)


def test_a_general_node_reaches_the_ipv6_only_node_through_the_relay(lab: Lab) -> None:
    ping_ok(lab, "gn1", V6)
    peer = next(p for p in general_node(lab, "gn1")["peers"] if p["fqdn"] == V6)
    assert peer["path"] == "relay"


def test_general_nodes_on_one_adapter_reach_each_other(lab: Lab) -> None:
    ping_ok(lab, "gn1", GN2)
    ping_ok(lab, "gn2", GN1)


def test_the_ipv6_general_node_reaches_mn_by_name(lab: Lab) -> None:
    ping_ok(lab, "gn6", f"mn.{DOMAIN}", "-6")


# -- what the adapter refuses and fixes ---------------------------------------------------

FORGE = """
import sys
from scapy.all import Ether, IP, ICMP, sendp
src_mac, adapter_mac, src_ip, dst_ip = sys.argv[1:5]
frame = Ether(src=src_mac, dst=adapter_mac) / IP(src=src_ip, dst=dst_ip) / ICMP(id=4242) / (b"forged" * 8)
sendp(frame, iface="eth0", count=5, verbose=False)
"""


@pytest.mark.once
def test_a_general_node_forging_another_s_mac_or_ip_gets_nothing_through(lab: Lab) -> None:
    ping_ok(lab, "gn1", CN)
    adapter = lab.status("adapter")
    cn = lab.status("cn")
    assert adapter is not None and cn is not None
    gn1, gn2 = general_node(lab, "gn1"), general_node(lab, "gn2")
    reason = "source MAC and address match no lease"
    before = drops(lab, reason)
    cn_rx = next(p for p in cn["peers"] if p["fqdn"] == GN1)["rx_packets"]
    python = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")
    for src_mac, src_ip in ((gn2["mac"], gn1["vip4"]), (gn1["mac"], gn2["vip4"])):
        done = lab.run("gn2", [python, "-c", FORGE, src_mac, adapter["mac"], src_ip, cn["vip4"]], timeout=60)
        assert done.returncode == 0, done.stderr
    assert wait_for(lambda: drops(lab, reason) >= before + 10, "the adapter to count 10 forged frames")
    cn = lab.status("cn")
    assert cn is not None
    assert next(p for p in cn["peers"] if p["fqdn"] == GN1)["rx_packets"] == cn_rx


def test_a_device_with_link_mtu_1500_gets_through_with_df_pings_and_tcp(lab: Lab) -> None:
    lab.run("gn2", ["ip", "link", "set", "eth0", "mtu", "1500"])
    try:
        ping_ok(lab, "gn2", CN, "-4", "-M", "do", "-s", "1372")  # a 1400-byte IP packet
        too_big = ping(lab, "gn2", CN, "-4", "-M", "do", "-s", "1472")
        assert re.search(r"mtu = 1400", too_big.stdout + too_big.stderr), too_big.stdout + too_big.stderr
        iperf = apps.serve_iperf3(lab, "cn", port=5213)
        try:
            tcp = apps.iperf3(lab, "gn2", CN, seconds=2, port=5213)
            assert tcp["end"]["sum_received"]["bytes"] > 1_000_000
        finally:
            apps.stop(iperf)
    finally:
        lab.run("gn2", ["ip", "link", "set", "eth0", "mtu", "1400"])


@pytest.mark.control_plane
def test_cyphonic_status_on_the_adapter_lists_its_general_nodes(lab: Lab) -> None:
    done = lab.run("adapter", [*lab_cli(), "status"], timeout=15)
    assert done.returncode == 0, done.stderr
    for host in ("gn1", "gn2", "gn6"):
        gn = general_node(lab, host)
        assert gn["mac"] in done.stdout and gn["fqdn"] in done.stdout
    assert "adapter.cyphonic.test" in done.stdout


def lab_cli() -> list[str]:
    from cyphonic.lab.processes import cyphonic_cli

    return list(cyphonic_cli())


@pytest.mark.control_plane
@pytest.mark.disruptive
def test_an_adapter_restart_keeps_every_address_and_the_tunnels_come_back(lab: Lab) -> None:
    ping_ok(lab, "gn1", CN)
    ping_ok(lab, "cn", GN2, "-4")
    before = {host: lab.lease(host) for host in ("gn1", "gn2", "gn6")}
    lab.kill("adapter")
    lab.start("adapter")
    wait_for(lambda: (s := lab.status("adapter")) and s["registered"], "the adapter to register again", 30)
    wait_for(
        lambda: all(gn["state"] == "ready" for gn in lab.status("adapter")["general_nodes"]),
        "every general node with a lease to be logged in again",
        30,
    )
    assert {host: lab.lease(host) for host in before} == before
    # nothing on the devices changed: gn1's packets select the route again, cn's tunnel re-routes
    ping(lab, "gn1", CN, count=3)
    ping_ok(lab, "gn1", CN)
    wait_for(lambda: ping(lab, "cn", GN2, "-4", count=1).returncode == 0, "cn to reach gn2 again", 60)


# -- the LAN is hostile too ---------------------------------------------------------------

FLOOD = """
import os, random, sys
from scapy.all import ARP, BOOTP, DHCP, IP, UDP, Ether, Raw, sendp, conf
conf.verb = 0
adapter_mac, adapter_ip = sys.argv[1:3]
rng = random.Random(14)
def rmac():
    return "02:%02x:%02x:%02x:%02x:%02x" % tuple(rng.randrange(256) for _ in range(5))
frames = []
for _ in range(3000):  # a DHCP storm from random MACs
    m = rmac()
    frames.append(Ether(src=m, dst="ff:ff:ff:ff:ff:ff") / IP(src="0.0.0.0", dst="255.255.255.255")
                  / UDP(sport=68, dport=67) / BOOTP(chaddr=bytes.fromhex(m.replace(":", "")), xid=rng.getrandbits(32))
                  / DHCP(options=[("message-type", "discover"), "end"]))
for _ in range(3000):  # an ARP flood asking for overlay addresses, from random MACs
    # (the sender claims a link-local address: claiming a device's peer's
    # address would poison the devices' own ARP caches, which no adapter
    # can prevent on a shared LAN)
    frames.append(Ether(src=rmac(), dst="ff:ff:ff:ff:ff:ff")
                  / ARP(op=1, hwsrc=rmac(), psrc="169.254.%d.%d" % (rng.randrange(256), rng.randrange(1, 255)),
                        pdst="10.96.%d.%d" % (rng.randrange(256), rng.randrange(256))))
for _ in range(2000):  # garbage and truncated headers to the adapter's MAC
    kind = rng.choice([0x0800, 0x0806, 0x86DD])
    frames.append(Ether(src=rmac(), dst=adapter_mac, type=kind) / Raw(os.urandom(rng.randrange(0, 120))))
for _ in range(1000):  # DNS and data to the adapter from sources that hold no lease
    frames.append(Ether(src=rmac(), dst=adapter_mac) / IP(src="10.96.0.77", dst=adapter_ip)
                  / UDP(sport=rng.randrange(1024, 65535), dport=rng.choice([53, 67, 9])) / Raw(os.urandom(40)))
sendp(frames, iface="eth0")
print(len(frames))
"""


def rss_kib(lab: Lab, host: str) -> int:
    pid = int(lab.paths.pid(host).read_text())
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {host}")


@pytest.mark.once
def test_a_storm_of_hostile_frames_on_the_lan_is_counted_and_changes_nothing(lab: Lab) -> None:
    adapter = lab.status("adapter")
    assert adapter is not None
    before_drops = sum(adapter["drops"].values())
    before_rss = rss_kib(lab, "adapter")
    python = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")
    done = lab.run("gn2", [python, "-c", FLOOD, adapter["mac"], adapter["vip4"]], timeout=240)
    assert done.returncode == 0, done.stderr
    sent = int(done.stdout.split()[-1])
    after = lab.status("adapter")
    assert after is not None, "the adapter stopped answering after the storm"
    counted = sum(after["drops"].values()) - before_drops
    # every hostile frame is a counted drop; ARP for addresses it serves
    # only to strangers is refused silently, unknown MACs once each
    assert counted >= sent // 4, (counted, sent, after["drops"])
    # no state per unknown MAC: no new general node, memory about the same
    assert [g["mac"] for g in after["general_nodes"]] == [g["mac"] for g in adapter["general_nodes"]]
    assert rss_kib(lab, "adapter") - before_rss < 8 * 1024
    lab.check_alive("adapter")
    # and the devices it serves notice nothing
    ping_ok(lab, "gn1", CN)
    assert lab.dhcp_renew("gn2") == general_node(lab, "gn2")["vip4"]


@pytest.mark.control_plane
def test_dig_of_an_unknown_cyphonic_name_is_nxdomain_at_once(lab: Lab) -> None:
    started = time.monotonic()
    done = lab.run("gn1", ["dig", "+time=5", "+tries=1", f"nobody.{DOMAIN}"], timeout=15)
    assert done.returncode == 0 and "status: NXDOMAIN" in done.stdout, done.stdout
    assert time.monotonic() - started < 5
