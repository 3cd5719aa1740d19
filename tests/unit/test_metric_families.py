"""The metric families built from a daemon's state (cyphonic.metrics), read
back through the Prometheus text format."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cyphonic import config, metrics
from cyphonic.core.relay import Side
from cyphonic.core.tunnel import Tunnel
from cyphonic.errors import ConfigError
from cyphonic.node.settings import SCHEMA as NODE_SCHEMA
from cyphonic.timings import Timings


def scraped(build) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry(build)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def drops(**counts: int) -> SimpleNamespace:
    return SimpleNamespace(counts=Counter({k.replace("_", " "): v for k, v in counts.items()}))


def tunnel(peer: str, process: str = "TunnelRequestToCN", relayed: bool = False, owner=None, **n: int):
    counts = dict(tx_bytes=0, rx_bytes=0, tx_packets=0, rx_packets=0, rekeys=0) | n
    t = SimpleNamespace(
        peer=SimpleNamespace(fqdn=peer), path=SimpleNamespace(process=process), relayed=relayed, owner=owner, **counts
    )
    t.path_name = Tunnel.path_name.fget(t)  # the real tunnel's naming of its path
    return t


def machine(route_ms=(), tunnel_ms=(), handshakes=None) -> SimpleNamespace:
    r, t = Timings(), Timings()
    for x in route_ms:
        r.append(x)
    for x in tunnel_ms:
        t.append(x)
    return SimpleNamespace(route_ms=r, tunnel_ms=t, handshakes=Counter(handshakes or {}))


def fake_node() -> SimpleNamespace:
    by_index = {
        1: tunnel("cn.t", tx_bytes=1000, rx_bytes=400, tx_packets=10, rx_packets=4, rekeys=2),
        2: tunnel("cn.t", tx_bytes=5, tx_packets=1),  # a re-route's second tunnel: summed into one series
        3: tunnel("b1.t", "TunnelRequestToNATcn"),
        4: tunnel("v6.t", "TunnelRequestToTRS", relayed=True),
    }
    shakes = {("initiator", "established"): 2, ("responder", "established"): 1, ("initiator", "timeout"): 1}
    return SimpleNamespace(
        packet=SimpleNamespace(by_index=by_index, drops=drops(replayed=3)),
        signaling=SimpleNamespace(
            machine=machine([0.8, 3.0, 3.5, 20000.0], [12.0], shakes), drops=drops(replayed=1), registered={"ipv4": {}}
        ),
        resolver=SimpleNamespace(drops=drops(bad_query=2)),
    )


def test_node_tunnels_are_counted_per_peer_and_direction():
    got = scraped(lambda: metrics.node_families(fake_node()))
    tx = lambda peer: (("direction", "tx"), ("peer", peer))  # noqa: E731
    assert got[("cyphonic_tunnel_bytes_total", tx("cn.t"))] == 1005
    assert got[("cyphonic_tunnel_bytes_total", (("direction", "rx"), ("peer", "cn.t")))] == 400
    assert got[("cyphonic_tunnel_packets_total", tx("cn.t"))] == 11
    assert got[("cyphonic_tunnel_rekeys_total", (("peer", "cn.t"),))] == 2
    assert got[("cyphonic_tunnels", (("path", "direct"),))] == 2
    assert got[("cyphonic_tunnels", (("path", "reverse"),))] == 1
    assert got[("cyphonic_tunnels", (("path", "relay"),))] == 1
    assert got[("cyphonic_registered_families", ())] == 1


def test_node_drops_are_summed_by_reason():
    got = scraped(lambda: metrics.node_families(fake_node()))
    assert got[("cyphonic_drops_total", (("reason", "replayed"),))] == 4
    assert got[("cyphonic_drops_total", (("reason", "bad query"),))] == 2


def test_timers_are_histograms_in_seconds():
    got = scraped(lambda: metrics.node_families(fake_node()))
    bucket = lambda le: got[("cyphonic_route_selection_seconds_bucket", (("le", le),))]  # noqa: E731
    assert bucket("0.001") == 1
    assert bucket("0.005") == 3
    assert bucket("10.0") == 3
    assert bucket("+Inf") == 4
    assert got[("cyphonic_route_selection_seconds_count", ())] == 4
    assert got[("cyphonic_route_selection_seconds_sum", ())] == pytest.approx(20.0073)
    assert got[("cyphonic_tunnel_establishment_seconds_count", ())] == 1
    shakes = ("cyphonic_tunnel_handshakes_total", (("result", "timeout"), ("role", "initiator")))
    assert got[shakes] == 1


def test_a_histogram_keeps_samples_its_window_let_go():
    t = Timings(maxlen=2)
    for x in (1.0, 2.0, 3.0):
        t.append(x)
    assert list(t) == [2.0, 3.0] and t.count == 3 and t.cumulative()[-1] == (float("inf"), 3)


def test_cloud_counts_logins_registrations_and_routes_with_drops_by_service():
    auth = SimpleNamespace(
        results=Counter({("login", "granted"): 5, ("login", "revoked"): 1, ("node information", "granted"): 2}),
        drops=drops(replayed_login_request=1),
    )
    live = {"mn.t": object(), "cn.t": None}
    nms = SimpleNamespace(
        registrations=Counter(accepted=7, refused=1),
        route_results=Counter(direct=2, relay=1, unknown_peer=1),
        registry=dict.fromkeys(live),
        locations=SimpleNamespace(live=lambda fqdn, now: live[fqdn]),
        drops=drops(malformed_request=2),
    )
    relay = SimpleNamespace(
        sessions={1: object()},
        sessions_opened=3,
        relayed=lambda: {0: Side(packets=4, bytes=400), 1: Side(packets=2, bytes=100)},
        drops=drops(frame_for_an_unknown_session=6),
    )
    got = scraped(lambda: metrics.cloud_families(auth, nms, relay))
    assert got[("cyphonic_as_logins_total", (("result", "granted"),))] == 5
    assert got[("cyphonic_as_logins_total", (("result", "revoked"),))] == 1
    assert got[("cyphonic_as_node_information_total", (("result", "granted"),))] == 2
    assert got[("cyphonic_nms_registrations_total", (("result", "refused"),))] == 1
    assert got[("cyphonic_nms_route_selections_total", (("result", "relay"),))] == 1
    assert got[("cyphonic_nms_nodes", ())] == 1
    assert got[("cyphonic_trs_sessions", ())] == 1
    assert got[("cyphonic_trs_sessions_opened_total", ())] == 3
    assert got[("cyphonic_trs_relayed_bytes_total", (("side", "initiator"),))] == 400
    assert got[("cyphonic_trs_relayed_frames_total", (("side", "responder"),))] == 2
    assert got[("cyphonic_drops_total", (("reason", "malformed request"), ("service", "nms")))] == 2
    assert got[("cyphonic_drops_total", (("reason", "frame for an unknown session"), ("service", "trs")))] == 6


def test_adapter_labels_tunnels_by_general_node():
    gn = SimpleNamespace(
        fqdn="gn1.t",
        state="ready",
        lease4=2000.0,
        lease6=None,
        signaling=SimpleNamespace(machine=machine([5.0]), drops=drops()),
        resolver=SimpleNamespace(drops=drops()),
    )
    daemon = SimpleNamespace(
        fqdn="ad.t",
        signaling=SimpleNamespace(grant=None, machine=machine(), drops=drops()),
        general_nodes=SimpleNamespace(by_mac={b"m": gn}, drops=drops(unknown_mac=2)),
        packet=SimpleNamespace(by_index={1: tunnel("cn.t", owner=gn, tx_bytes=77)}, drops=drops(), lan_tx_frames=9),
        demux=SimpleNamespace(drops=drops()),
        interface=None,
    )
    got = scraped(lambda: metrics.adapter_families(daemon, now=1000.0))
    key = (("direction", "tx"), ("general_node", "gn1.t"), ("peer", "cn.t"))
    assert got[("cyphonic_tunnel_bytes_total", key)] == 77
    assert got[("cyphonic_adapter_general_nodes", (("state", "ready"),))] == 1
    assert got[("cyphonic_adapter_leases", (("family", "ipv4"),))] == 1
    assert got[("cyphonic_adapter_leases", (("family", "ipv6"),))] == 0
    assert got[("cyphonic_adapter_lan_frames_total", (("direction", "out"),))] == 9
    assert got[("cyphonic_route_selection_seconds_count", ())] == 1


def test_metrics_is_off_by_default_and_a_bad_address_names_the_key(tmp_path: Path):
    base = {"certificate": "n.crt", "key": "n.key", "ca": "ca.crt", "auth": [], "nms": []}
    lines = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in base.items())
    path = tmp_path / "node.toml"
    path.write_text(lines + "\n")
    assert config.load(path, NODE_SCHEMA)["metrics"] is None
    path.write_text(lines + '\nmetrics = "127.0.0.1:9101"\n')
    assert config.load(path, NODE_SCHEMA)["metrics"] == ("127.0.0.1", 9101)
    path.write_text(lines + '\nmetrics = "localhost"\n')
    with pytest.raises(ConfigError, match="^metrics: "):
        config.load(path, NODE_SCHEMA)
