"""bench.charts draws every chart of a run from its JSON (the committed full
run): valid PNGs with something on them, and none for data a run lacks."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image

from bench import charts

RUN = Path(__file__).resolve().parents[2] / "bench" / "results" / "latest.json"
PNG = b"\x89PNG\r\n\x1a\n"


def test_every_chart_of_a_full_run_is_a_png_with_content(tmp_path):
    result = json.loads(RUN.read_text())
    made = charts.render(result, tmp_path, "run")
    assert [p.name for p in made] == ["run-throughput.png", "run-cpu.png", "run-relay.png", "run-handover.png"]
    for path in made:
        assert path.read_bytes()[:8] == PNG
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 400
        assert image.std() > 0.05  # not a blank canvas


def test_a_run_without_relay_or_handover_gets_only_the_charts_it_has_data_for(tmp_path):
    result = json.loads(RUN.read_text())
    result["summary"] = {k: v for k, v in result["summary"].items() if not k.startswith("relay_")}
    result.pop("handover", None)
    made = charts.render(result, tmp_path, "run")
    assert [p.name for p in made] == ["run-throughput.png", "run-cpu.png"]
