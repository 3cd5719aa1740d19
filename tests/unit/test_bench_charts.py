"""bench.charts draws every chart of a run from its JSON (the committed full
run, and a synthetic one with every system, path and stage the run can
hold): valid PNGs with something on them, and none for data a run lacks."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import matplotlib.image
import pytest

from bench import charts

RUN = Path(__file__).resolve().parents[2] / "bench" / "results" / "latest" / "results.json"
PNG = b"\x89PNG\r\n\x1a\n"
ALL = ["systems", "throughput", "cpu", "relay", "handover", "udp_load", "signaling", "scaling"]


def _valid(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 400
    assert image.std() > 0.05  # not a blank canvas


def _names(made: list[Path], stem: str) -> list[str]:
    return [p.name.removeprefix(f"{stem}-").removesuffix(".png") for p in made]


@pytest.fixture(scope="module")
def run() -> dict:
    return json.loads(RUN.read_text())


def _stat(m: float) -> dict:
    return {"median": m, "min": 0.9 * m, "max": 1.1 * m, "n": 5}


def full(run: dict) -> dict:
    """The committed run plus every key a newer run adds (wireguard-go, OpenVPN, Nebula across
    two NAPTs, adapter timer samples, scaling)."""
    r = copy.deepcopy(run)
    s = r["summary"]
    for p, tcp in (("wireguard", 2.1), ("openvpn", 0.35)):
        s[f"{p}_tcp_gbps"], s[f"{p}_tcp_loss_gbps"] = _stat(tcp), _stat(tcp / 2)
        s[f"{p}_udp_received_mbps"], s[f"{p}_rtt_ms"], s[f"{p}_cpu_s_per_gbit"] = _stat(900), _stat(0.4), _stat(1.5)
    for p, tcp in (("relay_nebula_direct", 0.6), ("relay_nebula_relayed", 0.4)):
        s[f"{p}_tcp_gbps"], s[f"{p}_rtt_ms"], s[f"{p}_cpu_s_per_gbit"] = _stat(tcp), _stat(0.8), _stat(2.5)
    r["environment"].update({"wireguard_go": "wireguard-go v0.0.20230223", "openvpn": "OpenVPN 2.6.3 x86_64"})
    r["adapter"]["timers"]["adapter"]["route_selection_ms"]["samples"] = [3.1, 3.3, 2.9, 4.4]
    r["scaling"] = {
        "config": {"counts": [1, 10, 100], "host": "mn", "target": "cn", "hold_s": 10.0, "command": "bench"},
        "concurrency": [
            {
                "peers": n,
                "route_selection_ms": [2.0 + i * 0.1 for i in range(n)],
                "tunnel_establishment_ms": [0.5 + i * 0.05 for i in range(n)],
                "login_ms": [1.0] * n,
                "failed": 1 if n == 100 else 0,
                "errors": [],
                "wall_s": 1.0,
            }
            for n in (1, 10, 100)
        ],
        "tunnels": {
            "target": "cn",
            "count": 100,
            "rss_kib_before": 41000,
            "rss_kib_after": 52300,
            "cpu_pct_of_core": 1.7,
            "window_s": 30.0,
            "keepalive_s": 25.0,
            "pid": 1,
        },
    }
    return r


def test_every_chart_of_the_committed_run_is_a_png_with_content(tmp_path, run):
    made = charts.render(run, tmp_path, "run")
    assert _names(made, "run") == ALL
    for path in made:
        _valid(path)


def test_a_run_with_every_new_key_gets_every_chart(tmp_path, run):
    made = charts.render(full(run), tmp_path, "full")
    assert _names(made, "full") == ALL
    for path in made:
        _valid(path)


def test_labels_carry_the_versions_the_run_recorded(run):
    r = full(run)
    assert charts.mn_cn_label(r, "wireguard") == "wireguard-go 0.0.20230223"
    assert charts.mn_cn_label(r, "openvpn") == "OpenVPN 2.6.3"
    assert charts.mn_cn_label(r, "nebula") == "Nebula 1.6.1"
    del r["environment"]["openvpn"]
    assert charts.mn_cn_label(r, "openvpn") == "OpenVPN"


def test_a_run_without_relay_or_handover_gets_only_the_charts_it_has_data_for(tmp_path, run):
    result = copy.deepcopy(run)
    result["summary"] = {k: v for k, v in result["summary"].items() if not k.startswith("relay_")}
    result.pop("handover", None)
    result.pop("scaling", None)
    made = charts.render(result, tmp_path, "run")
    assert _names(made, "run") == ["systems", "throughput", "cpu", "udp_load", "signaling"]


def test_a_run_with_only_the_first_systems_gets_no_new_charts(tmp_path, run):
    """No adapter, scaling, restarts, relay or handover; only plain and CYPHONIC TCP."""
    result = {
        "environment": run["environment"],
        "started_utc": run["started_utc"],
        "summary": {k: run["summary"][k] for k in ("plain_tcp_gbps", "cyphonic_tcp_gbps")},
    }
    made = charts.render(result, tmp_path, "old")
    assert _names(made, "old") == ["systems", "throughput"]
    for path in made:
        _valid(path)
    assert charts.render({}, tmp_path / "none", "empty") == []


def test_missing_fields_inside_the_new_sections_do_not_crash(tmp_path, run):
    r = full(run)
    r["scaling"] = {"concurrency": [{"peers": 10, "failed": 10, "errors": ["timeout"]}], "tunnels": {"count": 100}}
    r["adapter"] = {"load_table": {"gn1_up": [{"rate_mbps": 10, "error": "iperf3 failed"}], "mn_up": []}, "timers": {}}
    r["summary"]["openvpn_rtt_ms"] = {"median": None}
    names = _names(charts.render(r, tmp_path, "x"), "x")
    assert "udp_load" not in names  # no row ran
    assert "scaling" in names  # the tunnels' box alone is something to show
