"""The benchmark's one command, in its quick mode, as a user runs it: a lab of
its own, every system and stage, a dated results directory with a report and
charts. Checks the report's structure and that every chart is a real PNG;
speed is the bench's business (bench/README.md), not a test's."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.system.conftest import require_lab_host, unique_prefix

# the bench brings up its own lab on the compiled loops whatever CI chose: once
pytestmark = [pytest.mark.system, pytest.mark.once]

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
SYSTEMS = ("plain", "nebula", "wireguard", "openvpn", "cyphonic")
PAIRS = ("relay_nebula_direct", "relay_nebula_relayed", "relay_direct", "relay_relayed")
SECTIONS = (
    "## Every system side by side",
    "## CYPHONIC against Nebula: the data-plane goals",
    "## The seed paper's tables",
    "## CYPHONIC adapter",
    "## Scaling",
    "## Handover",
)
CHARTS = ("systems", "throughput", "cpu", "udp_load", "signaling", "scaling", "handover")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    require_lab_host()
    out = tmp_path_factory.mktemp("bench")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--prefix", unique_prefix("bq")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    (out / "bench-stderr.log").write_text(done.stderr)  # the progress lines, for a failure's reader
    return done, out


def test_the_quick_run_completes_and_writes_one_dated_directory(quick_run):
    done, out = quick_run
    assert done.returncode == 0, done.stderr[-4000:]
    runs = [p for p in out.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, sorted(p.name for p in out.iterdir())
    assert (out / "latest").resolve() == runs[0].resolve()
    assert {"results.json", "report.md"} <= {p.name for p in runs[0].iterdir()}
    # one progress line per stage, numbered k/N, the last one N/N
    stages = [m.groups() for m in re.finditer(r"\] stage (\d+)/(\d+) ", done.stderr)]
    assert len(stages) >= 8
    assert [int(k) for k, _ in stages] == list(range(1, len(stages) + 1))
    assert stages[-1][0] == stages[-1][1]


def test_every_system_and_path_has_figures_with_their_provenance(quick_run):
    _, out = quick_run
    result = json.loads((out / "latest" / "results.json").read_text())
    assert result["complete"] is True, result.get("error")
    env = result["environment"]
    for key in ("command", "kernel", "cpu_model", "git_commit", "nebula", "wireguard_go", "openvpn", "iperf3"):
        assert env.get(key), key
    rows = {r["key"]: r for r in result["headline"]}
    for key in SYSTEMS + PAIRS + ("adapter_gn",):
        assert key in rows, f"no headline row for {key}: {sorted(rows)}"
        assert rows[key]["tcp_gbps"] and rows[key]["tcp_gbps"] > 0, key
    for key in SYSTEMS[1:]:
        assert rows[key]["cpu_s_per_gbit"] and rows[key]["cpu_s_per_gbit"] > 0, key
        assert result["summary"][f"{key}_udp_received_mbps"]["median"] > 0, key
    # the relayed rows really went through a relay
    reps = result["samples"]["repetitions"]
    assert all(r["relay"]["relayed"]["path_check"]["path"] == "relay" for r in reps)
    scaling = result["scaling"]
    assert [c["peers"] for c in scaling["concurrency"]] == [1, 10, 100]
    assert all(len(c["route_selection_ms"]) == c["peers"] - c["failed"] for c in scaling["concurrency"])
    assert scaling["concurrency"][-1]["failed"] == 0
    assert scaling["tunnels"]["count"] >= 100
    assert result["seed_tables"], "no seed tables"


def test_the_report_has_every_section_and_every_chart_is_a_png(quick_run):
    _, out = quick_run
    report = (out / "latest" / "report.md").read_text()
    for heading in SECTIONS:
        assert heading in report, heading
    assert "19.74" in report  # the seed's route selection time, beside ours
    charts = {p.name for p in (out / "latest").glob("*.png")}
    for name in CHARTS:
        assert f"chart-{name}.png" in charts, sorted(charts)
    for name in charts:
        width, height = png_size(out / "latest" / name)
        assert width >= 400 and height >= 300, (name, width, height)
