"""`cyphonic status` of an adapter: its own identity and, per general
node, MAC, FQDN, virtual IPs, lease expiry, peers and bytes."""

from __future__ import annotations

import statistics
from typing import Any

from cyphonic.adapter.general_nodes import mac_text
from cyphonic.config import format_address
from cyphonic.node.daemon import mobility_status


def _percentiles(values) -> dict[str, float | None]:
    data = sorted(values)
    if not data:
        return {"count": 0, "p50": None, "p99": None}
    return {
        "count": len(data),
        "p50": round(statistics.median(data), 4),
        "p99": round(data[min(len(data) - 1, int(len(data) * 0.99))], 4),
    }


def _peer(t, now: float) -> dict[str, Any]:
    return {
        "fqdn": t.peer.fqdn,
        "vip4": str(t.peer.vip4),
        "vip6": str(t.peer.vip6),
        "path": t.path_name,
        "endpoint": format_address(t.endpoint),
        "cipher": t.cipher.suite,
        "tx_bytes": t.tx_bytes,
        "rx_bytes": t.rx_bytes,
        "tx_packets": t.tx_packets,
        "rx_packets": t.rx_packets,
        "last_handshake": round(now - t.established, 1),
    }


def status_document(daemon, now: float) -> dict[str, Any]:
    g = daemon.signaling.grant
    packet = daemon.packet
    general = []
    route_ms: list[float] = list(daemon.signaling.route_ms)
    tunnel_ms: list[float] = list(daemon.signaling.tunnel_ms)
    for gn in sorted(daemon.general_nodes.by_mac.values(), key=lambda n: n.fqdn):
        tunnels = packet.tunnels_of(gn)
        route_ms += gn.signaling.route_ms
        tunnel_ms += gn.signaling.tunnel_ms
        general.append(
            {
                "mac": mac_text(gn.mac),
                "fqdn": gn.fqdn,
                "ipv6": gn.ipv6,
                "state": gn.state,
                "registered": bool(gn.signaling.registered),
                "vip4": str(gn.vip4) if gn.vip4 else None,
                # without IPv6 the AS grants "::" (no address), not one to show
                "vip6": str(gn.vip6) if gn.ipv6 and gn.vip6 else None,
                "lease_expires": round(gn.lease4 - now, 1) if gn.lease4 else None,
                "lease6_expires": round(gn.lease6 - now, 1) if gn.lease6 else None,
                # as its peers' rows count them: tx = sent by the general node into its tunnels
                "tx_bytes": sum(t.tx_bytes for t in tunnels),
                "rx_bytes": sum(t.rx_bytes for t in tunnels),
                "peers": sorted((_peer(t, now) for t in tunnels), key=lambda p: p["fqdn"]),
            }
        )
    drops: dict[str, int] = {}
    parts = [packet.drops, daemon.signaling.drops, daemon.general_nodes.drops, daemon.demux.drops]
    if daemon.interface is not None:
        parts += [
            daemon.interface.drops,
            daemon.addresses.drops,
            daemon.addresses.dhcp.drops,
            daemon.addresses.dhcp6.drops,
        ]
    for gn in daemon.general_nodes.by_mac.values():
        parts += [gn.signaling.drops, gn.resolver.drops]
    for d in parts:
        for reason, count in d.counts.items():
            drops[reason] = drops.get(reason, 0) + count
    interface = daemon.interface
    return {
        "role": "adapter",
        "fqdn": g.fqdn if g else daemon.fqdn,
        "vip4": str(g.vip4) if g else None,
        "vip6": str(g.vip6) if g else None,
        "registered": bool(daemon.signaling.registered),
        "registrations": daemon.signaling.registered,
        "lan": daemon.lan.name,
        "mac": mac_text(daemon.lan.mac),
        "listen_port": daemon.cfg["listen_port"],
        "uptime": round(now - daemon.started, 1),
        "dataplane": daemon.dataplane(),
        "general_nodes": general,
        "mobility": mobility_status(daemon.signaling, packet),
        "drops": drops,
        "lan_frames": {"in": interface.frames_in if interface else 0, "out": packet.lan_tx_frames},
        "timers": {
            "route_selection_ms": _percentiles(route_ms),
            "tunnel_establishment_ms": _percentiles(tunnel_ms),
            "arp_ms": _percentiles(interface.arp_ms if interface else []),
            "arp_send_ms": _percentiles(interface.arp_send_ms if interface else []),
        },
    }
