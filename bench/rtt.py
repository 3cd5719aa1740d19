"""The RTT stage: idle round-trip time per path, `ping -c 20 -i 0.05`, the run's avg."""

from __future__ import annotations

from cyphonic.lab import Lab

from . import probes
from .datapaths import DataPath

PING_COUNT, PING_INTERVAL = 20, 0.05


def ping(lab: Lab, p: DataPath) -> dict:
    return probes.ping_trial(lab, p.client, p.target, PING_COUNT, PING_INTERVAL, p.ping_extra)


def stage(lab: Lab, paths: dict[str, DataPath], out: dict) -> None:
    """Ping A B C: out[path] = min/avg/max/mdev of one ping run each."""
    for p in paths.values():
        out[p.key] = ping(lab, p)
