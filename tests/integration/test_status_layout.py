"""`cyphonic status` as people read it, on the status documents real
daemons build: a header per daemon, one table line per peer."""

from __future__ import annotations

import re
import time

from cyphonic.auth import serve as auth_serve
from cyphonic.cloud.run import cloud_status
from cyphonic.nms import serve as nms_serve
from cyphonic.status_text import format_status
from tests.integration.conftest import DOMAIN, ipv4_udp
from tests.integration.test_adapter import connected, echo_reply
from tests.integration.test_overlay import recv_packet, resolve

CN = f"cn.{DOMAIN}"
B1 = f"b1.{DOMAIN}"


def row(text: str, first: str) -> list[str]:
    """The table line that starts with `first`, cut into its cells."""
    [line] = [line for line in text.splitlines() if line.startswith(first + " ")]
    return re.split(r" {2,}", line)


def cells(text: str, header: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith(header)]
    return re.split(r" {2,}", line)


async def test_node_status_is_a_header_and_one_line_per_peer(relay_overlay):
    mn = await relay_overlay.start_node("mn")
    cn = await relay_overlay.start_node("cn", locators=["192.168.20.10"])
    await relay_overlay.start_node("b1", locators=["192.168.1.10"], hole_punching=False)
    await resolve(mn, CN)
    await resolve(cn, B1)
    for _ in range(3):
        await mn.tun.app.send(ipv4_udp(mn.vip4, cn.vip4, b"x" * 1300))
        await recv_packet(cn)

    mn_text = format_status(mn.daemon.status({}))
    head = mn_text.splitlines()
    assert head[0].startswith(f"node mn.{DOMAIN}  vip4 {mn.vip4}  vip6 {mn.vip6}  up ")
    assert "registered: yes (ipv4 seen as 127.0.0.1:" in head[1] and "NAT: no" in head[1]
    assert f"listen port {mn.port}" in head[1]
    assert head[2].startswith("  data path: plain, ") and "ciphers offered" in head[2]
    assert cells(mn_text, "PEER") == ["PEER", "VIP4", "VIP6", "PATH", "ENDPOINT", "CIPHER", "HANDSHAKE", "RX", "TX"]
    name, vip4, vip6, path, endpoint, cipher, handshake, rx, tx = row(mn_text, CN)
    assert (vip4, vip6, path) == (cn.vip4, cn.vip6, "reverse")
    assert endpoint == f"127.0.0.1:{cn.port}" and cipher in ("chacha20-poly1305", "aes-256-gcm")
    assert re.fullmatch(r"\d+s ago", handshake)
    assert re.fullmatch(r"3\.\d KiB \(\d pkts\)", tx), tx

    cn_text = format_status(cn.daemon.status({}))
    assert "NAT: yes" in cn_text.splitlines()[1]
    assert row(cn_text, B1)[3] == "relay"
    assert row(cn_text, f"mn.{DOMAIN}")[3] == "reverse"


async def test_cloud_and_trs_status_list_nodes_and_relay_sessions(relay_overlay):
    mn = await relay_overlay.start_node("mn", locators=["192.168.1.10"], hole_punching=False)
    await relay_overlay.start_node("cn", locators=["192.168.2.10"], hole_punching=False)
    await resolve(mn, CN)
    now = time.time()
    parts = auth_serve.status(relay_overlay.auth), nms_serve.status(relay_overlay.nms, now)
    cloud = format_status(cloud_status({"domain": DOMAIN}, now - 75, now, *parts))
    assert cloud.splitlines()[0] == f"cloud {DOMAIN}  up 1m15s  2 registered, 2 enrolled"
    assert row(cloud, f"mn.{DOMAIN}")[1] == mn.vip4
    assert re.fullmatch(r"ipv4 127\.0\.0\.1:\d+ \(NAT\)", row(cloud, CN)[3])

    trs = relay_overlay.trs
    text = format_status({"role": "trs", "uptime": 3.0, "sessions": trs.status(now), "drops": {}})
    assert text.splitlines()[0] == "TRS  up 3s  1 relay session"
    [session] = trs.status(now)
    name, age, idle, initiator, responder = row(text, session["session"])
    assert re.fullmatch(r"127\.0\.0\.1:\d+ \(\d+ pkts?, \d+ B\)", initiator), initiator


async def test_adapter_status_lists_general_nodes_with_leases_and_their_peers(overlay):
    adapter, tv, cn = await connected(overlay)
    ping = tv.ping(cn.vip4)
    await adapter.lan.send(ping)
    await cn.tun.app.send(echo_reply(await recv_packet(cn)))
    status = adapter.daemon.status({})
    text = format_status(status)
    assert text.startswith(f"adapter {status['fqdn']}  vip4 {status['vip4']}")
    gn = status["general_nodes"][0]
    general, peer_table = text.split("\n\n")[1:3]
    fqdn, mac, vip4, vip6, state, lease, rx, tx, peers = row(general, gn["fqdn"])
    assert (mac, vip4, state, peers) == (gn["mac"], gn["vip4"], "ready", "1")
    assert re.fullmatch(r"(\d+m\d\ds|1h00m) left", lease), lease
    assert cells(peer_table, "GENERAL NODE")[1] == "PEER"
    owner, peer, *rest = row(peer_table, gn["fqdn"])
    assert (owner, peer, rest[2]) == (gn["fqdn"], CN, "direct")
