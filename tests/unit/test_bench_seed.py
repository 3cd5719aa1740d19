"""bench.seed prints the seed paper's tables with the same rows and columns
and our figures beside the seed's, from the committed run; and "–" where a
run lacks a figure, never an exception."""

from __future__ import annotations

import json
from pathlib import Path

from bench import seed

# a fixed run (the 2026-11-29 17:44 full run, archived): its figures are spelled out below
RUN = Path(__file__).resolve().parents[2] / "bench" / "results" / "archive" / "latest.json"


def _run() -> dict:
    return json.loads(RUN.read_text())


def _row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {start} |"))


def test_the_seed_tables_have_the_seeds_rows_and_published_numbers():
    md = seed.markdown(_run())
    assert "different hardware" in md and "Raspberry Pi 4" in md and "Intel(R) Xeon(R) Processor" in md
    for title in ("Adapter processing time", "Network Quality", *seed.LOAD_TABLES):
        assert f"### {title}" in md
    assert "| Route selection process time | 19.74ms |" in md
    assert "16.20ms" in _row(md, "Route selection process time")
    assert "2.75ms" in md and "2.23ms" in md and "| ARP process time | 0.32ms |" in md
    assert "0.459 ms" in _row(md, "Jitter") and "44.4 Mbits/sec" in _row(md, "TCP Throughput")
    assert "3.594 ms" in _row(md, "Round-trip time")
    assert "| 40Mbps | 39.6Mbps |" in md and "0.93%" in md and "1.27%" in md  # General Node => CYPHONIC Node
    assert "| 50Mbps | 49.9Mbps |" in md and "0.056%" in md  # CYPHONIC Node => CYPHONIC Node
    assert "not published" in _row(md, "ARP response")  # the seed shows DNS/ARP response only as a chart


def test_our_numbers_sit_beside_the_seeds():
    r = _run()
    md = seed.markdown(r)
    a = r["adapter"]
    # adapter timers: p50 3.2758 ms with 6 samples
    assert "| 19.74ms | 3.28ms (n=6) |" in _row(md, "Route selection process time")
    assert "0.0162ms" in _row(md, "ARP process time")
    # TCP in Mbit/s from Gbit/s, RTT medians
    assert f"{a['summary']['gn_tcp_gbps']['median'] * 1000:.0f} Mbits/sec" in _row(md, "TCP Throughput")
    assert "0.829 ms" in _row(md, "Round-trip time")
    assert "336 Mbits/sec" in _row(md, seed.UDP_MAX_ROW)
    # our rows past 50 Mbit/s, up to the first one past 1 % loss, and none after it
    assert "| 1600Mbps (ours only) | – | 1076Mbps |" in md
    gn_down = md.split("### CYPHONIC Node ⇒ General Node")[1].split("###")[0]
    assert "800Mbps (ours only)" in gn_down and "1600Mbps" not in gn_down

    fig = seed.figures(r)
    json.dumps(fig)  # stored as result["seed_tables"]
    nq = {row["row"]: row for row in fig["network_quality"]["rows"]}
    gn = seed.NETWORK_QUALITY_COLUMNS[0]
    assert nq["UDP Throughput"][gn]["seed"] == 30.0
    assert abs(nq["UDP Throughput"][gn]["ours"] - 29.98) < 0.01  # gn1_up at 30 Mbit/s offered
    assert abs(nq["Jitter"][gn]["ours"] - 0.01763) < 1e-4
    rows = fig["udp_load"]["General Node ⇒ CYPHONIC Node"]["rows"]
    assert [row["traffic_mbps"] for row in rows][:5] == [10, 20, 30, 40, 50]
    assert rows[3]["seed"] == {"throughput_mbps": 39.6, "jitter_ms": 0.25, "loss_pct": 0.93}
    assert rows[-1]["ours_only"] and rows[-1]["ours"]["loss_pct"] > 1


def test_a_run_without_the_adapter_renders_dashes():
    r = _run()
    del r["adapter"]
    md = seed.markdown(r)
    assert "| Route selection process time | 19.74ms | – | 16.20ms | – |" in md
    assert "| 30Mbps | 30.0Mbps | – | 0.459ms | – | 0% | – |" in md
    assert "(ours only)" not in md.split("### Network Quality")[1].split("|")[0]
    assert "Mbps (ours only)" not in md
    fig = seed.figures(r)
    assert all(row["ours"] is None for t in fig["udp_load"].values() for row in t["rows"])
    for broken in ({}, {"adapter": {"timers": None, "load_table": {"gn1_up": [{"rate_mbps": 30, "error": "x"}]}}}):
        assert "–" in seed.markdown(broken)
