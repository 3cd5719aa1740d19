"""`cyphonic status` text: sizes, durations, rates, drops, and --watch."""

from __future__ import annotations

import io
import json
import re
from types import SimpleNamespace

import pytest

from cyphonic import status_command
from cyphonic.status_text import duration, format_status, size

# the shape NodeDaemon.status() returns (tests/integration/test_status_layout.py formats real ones)
PEER = {
    "fqdn": "cn.x.test", "vip4": "10.96.0.3", "vip6": "fd7c:1f00::3", "path": "direct",
    "process": "TunnelRequestToCN", "endpoint": "198.51.100.11:4500", "tx_bytes": 3 * 2**20, "rx_bytes": 1536,
    "tx_packets": 2200, "rx_packets": 1, "last_handshake": 75.2, "rekeys": 0, "cipher": "chacha20-poly1305",
}
NODE = {
    "role": "node", "fqdn": "mn.x.test", "vip4": "10.96.0.2", "vip6": "fd7c:1f00::2", "registered": True,
    "nat": False, "registrations": {"ipv4": {"observed": "198.51.100.10:4500", "nat": False, "refresh": 10}},
    "tun": "cyph0", "listen_port": 4500, "uptime": 3725.0,
    "dataplane": {"path": "offload", "packet_loops": "compiled", "data_thread": True, "tun_offloads": [],
                  "udp_gso": True, "udp_gro": True, "ciphers": ["chacha20-poly1305"]},
    "peers": [PEER], "mobility": {"moves": [], "path_changes": 0, "offline": False},
    "drops": {"replayed": 2, "bad MAC": 5}, "timers": {},
}


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 2**20, "3.0 MiB"), (150 * 2**30, "150 GiB")],
)
def test_sizes_are_binary_units(n, text):
    assert size(n) == text


@pytest.mark.parametrize("s, text", [(0.4, "0s"), (75, "1m15s"), (3725, "1h02m"), (90000, "1d01h")])
def test_durations_show_the_two_largest_units(s, text):
    assert duration(s) == text


def test_node_header_then_one_line_per_peer_then_drops_by_reason():
    lines = format_status(NODE).splitlines()
    assert lines[0] == "node mn.x.test  vip4 10.96.0.2  vip6 fd7c:1f00::2  up 1h02m"
    assert lines[1] == "  registered: yes (ipv4 seen as 198.51.100.10:4500)  NAT: no  listen port 4500, tun cyph0"
    assert lines[2] == "  data path: offload, compiled loops, data thread, ciphers offered chacha20-poly1305"
    [peer] = [re.split(r" {2,}", line) for line in lines if line.startswith("cn.x.test ")]
    assert peer == ["cn.x.test", "10.96.0.3", "fd7c:1f00::3", "direct", "198.51.100.11:4500", "chacha20-poly1305",
                    "1m15s ago", "1.5 KiB (1 pkt)", "3.0 MiB (2200 pkts)"]
    assert lines[-1] == "drops: 7 (bad MAC 5, replayed 2)"


def test_a_peer_without_ipv6_shows_a_dash_not_the_unspecified_address():
    # a general node enrolled without IPv6 is reported with vip6 "::" (seen in the demo)
    lines = format_status({**NODE, "peers": [{**PEER, "vip6": "::"}]}).splitlines()
    [peer] = [re.split(r" {2,}", line) for line in lines if line.startswith("cn.x.test ")]
    assert peer[1:3] == ["10.96.0.3", "-"]


def test_a_node_without_peers_or_registration_says_so():
    text = format_status({**NODE, "peers": [], "registered": False, "registrations": {}, "drops": {}})
    assert "registered: no" in text and text.endswith("no peers")


def test_a_second_sample_adds_rates_per_peer():
    later = {**NODE, "peers": [{**PEER, "rx_bytes": PEER["rx_bytes"] + 2 * 2**20}]}
    [line] = [line for line in format_status(later, NODE, 2.0).splitlines() if line.startswith("cn.x.test")]
    assert "(1 pkt), 1.0 MiB/s" in line and "(2200 pkts), 0 B/s" in line


def test_per_peer_drops_get_a_column_where_the_status_has_them():
    text = format_status({**NODE, "peers": [{**PEER, "drops": {"replayed": 4}}]})
    [header] = [line for line in text.splitlines() if line.startswith("PEER ")]
    [peer] = [line for line in text.splitlines() if line.startswith("cn.x.test ")]
    assert header.split()[-1] == "DROPS" and re.split(r" {2,}", peer)[-1] == "4"


def test_a_cloud_whose_database_is_locked_still_lists_registered_nodes():
    cloud = {"role": "cloud", "domain": "x.test", "uptime": 5, "enrollments": "database unavailable: locked",
             "nodes": [{"fqdn": "mn.x.test", "vip4": "10.96.0.2", "vip6": "fd7c:1f00::2",
                        "attachments": {"ipv6": {"observed": "[2001:db8::1]:4500", "nat": False}}}], "drops": {}}
    text = format_status(cloud)
    assert "enrollments: database unavailable: locked" in text
    assert re.split(r" {2,}", text.splitlines()[-1])[-1] == "ipv6 [2001:db8::1]:4500"


def test_an_unknown_role_is_printed_as_json():
    assert json.loads(format_status({"role": "other", "x": 1})) == {"role": "other", "x": 1}


def test_watch_redraws_with_rates_until_ctrl_c_and_exits_0(monkeypatch):
    samples = iter([NODE, {**NODE, "peers": [{**PEER, "tx_bytes": PEER["tx_bytes"] + 2**20}]}])
    out = io.StringIO()
    monkeypatch.setattr(status_command, "ask", lambda daemon: next(samples))
    monkeypatch.setattr(status_command.sys, "stdout", out)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(status_command.time, "sleep", sleep)
    monkeypatch.setattr(status_command.time, "monotonic", iter([100.0, 102.0]).__next__)
    assert status_command.show(SimpleNamespace(daemon=None, json=False, watch=0.5)) == 0
    text = out.getvalue()
    assert sleeps == [0.5, 0.5]
    assert text.count("--- ") == 2 and "\x1b[" not in text  # not a terminal: separators, no escapes
    assert "(2200 pkts), 512 KiB/s" in text


def test_status_json_is_the_daemons_document(monkeypatch, capsys):
    monkeypatch.setattr(status_command, "ask", lambda daemon: NODE)
    assert status_command.show(SimpleNamespace(daemon=None, json=True, watch=None)) == 0
    assert json.loads(capsys.readouterr().out) == NODE


def test_no_daemon_is_one_line_and_exit_1(monkeypatch, capsys):
    monkeypatch.setattr(status_command.control, "NAMES", {"node": "\0cyphonic-test/nobody-listens"})
    assert status_command.show(SimpleNamespace(daemon=None, json=False, watch=None)) == 1
    assert capsys.readouterr().err == "cyphonic status: no CYPHONIC daemon runs in this network namespace\n"
