"""Bulk traffic from mn to cn through the overlay, addressed by name."""

from __future__ import annotations

import pytest

from cyphonic.lab import Lab, apps

pytestmark = pytest.mark.system

CN = "cn.cyphonic.test"


def test_tcp_to_cn_moves_data_every_second(lab: Lab, cn_iperf3: int) -> None:
    report = apps.iperf3(lab, "mn", CN, seconds=5, port=cn_iperf3)
    received = report["end"]["sum_received"]["bytes"]
    assert received > 0
    per_second = [i["sum"]["bytes"] for i in report["intervals"]]
    assert len(per_second) >= 5 and all(b > 0 for b in per_second), per_second


def test_udp_at_200_mbit_loses_less_than_10_percent(lab: Lab, cn_iperf3: int) -> None:
    report = apps.iperf3(lab, "mn", CN, seconds=5, udp_rate="200M", port=cn_iperf3)
    # sum_received is the server's count: what actually came out of the tunnel.
    got = report["end"]["sum_received"]
    assert got["bytes"] > 0
    assert got["lost_percent"] < 10, (
        f"UDP loss {got['lost_percent']:.1f}% ({got['lost_packets']} of {got['packets']} packets)")
