"""Nebula across the same two NAPTs as CYPHONIC's relayed vs direct pairs: a1 -> b1,
hole punched and through Nebula's own relay on `trs` (bench/nebula.py,
`pair_network`).

The two variants share a port, a tun and addresses, so only one runs at a
time: each repetition measures the one left running by the previous
repetition, switches, and measures the other (the order alternates, as
CYPHONIC's switch does). Every run is checked: Nebula's logs must say the
handshake went through the relay, or not (`Nebula.relayed`), and the bytes
that crossed trs's uplink during the TCP run are kept (`link_bytes`: about
twice the payload when relayed, ~0 when direct).
"""

from __future__ import annotations

import time

from cyphonic.lab import Lab, LabError

from . import nebula, rtt
from .datapaths import DataPath
from .progress import log
from .stats import dig, short
from .tcp import TcpRun

KEYS = {"nebula_direct": False, "nebula_relayed": True}  # key -> through the relay


class NebulaPairs:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.running: str | None = None
        self.net: nebula.Nebula | None = None
        self.starts: list[dict] = []

    def path(self, key: str) -> DataPath:
        assert self.net is not None
        net = self.net
        return DataPath(
            key,
            f"Nebula a1 -> b1 ({'relayed' if KEYS[key] else 'hole punched'})",
            "a1",
            net.ip("b1"),
            pids_of=lambda h: net.pids().get(h, []),
            hosts=("a1", "b1", "trs"),
            links=[("trs", "eth0")],
        )

    def switch(self, key: str) -> dict:
        """Stop the variant running, start `key`'s; up once a1 pings b1 over it."""
        self.stop()
        self.net = nebula.pair_network(self.lab, relay=KEYS[key])
        self.net.setup()
        t0 = time.monotonic()
        started = self.net.start()
        self.running = key
        out = {"key": key, "start": started, "to_ping_s": round(time.monotonic() - t0, 3)}
        self.starts.append(out)
        return out

    def stop(self) -> None:
        if self.net is not None:
            self.net.stop()
        self.net, self.running = None, None

    def measure(self, key: str, seconds: float, tcp: TcpRun) -> dict:
        assert self.net is not None and self.running == key
        p = self.path(key)
        out: dict = {"client": "a1", "server": "b1", "tcp": tcp(p, seconds)}
        relayed = self.net.relayed()
        out["path_check"] = {
            "want": "relay" if KEYS[key] else "direct",
            "path": None if relayed is None else ("relay" if relayed else "direct"),
            "underlay": self.net.underlay_paths()[-4:],
            "trs_link_bytes": out["tcp"].get("link_bytes"),
        }
        if relayed is not KEYS[key]:  # not a sample of this variant (the summary skips it)
            out["tcp"]["error"] = (
                f"Nebula a1 -> b1 went {out['path_check']['path']!r}, not {out['path_check']['want']!r}"
            )
        out["rtt"] = rtt.ping(self.lab, p)
        return out

    def stage(self, seconds: float, tcp: TcpRun, rep: dict) -> None:
        """Both variants once, the running one first; into rep["relay"][key]."""
        out = rep.setdefault("relay", {})
        first = self.running or "nebula_direct"
        second = "nebula_relayed" if first == "nebula_direct" else "nebula_direct"
        for key in (first, second):
            try:
                if self.running != key:
                    out[f"{key}_switch"] = self.switch(key)
                out[key] = self.measure(key, seconds, tcp)
            except LabError as e:
                out[key] = {"error": f"Nebula a1 -> b1 ({key}): {e}", "detail": getattr(e, "detail", None)}
                self.stop()
        log(
            "  "
            + " | ".join(
                f"{k}: TCP {short(dig(out, k, 'tcp', 'gbps'))} Gbit/s, RTT {short(dig(out, k, 'rtt', 'avg_ms'))} ms"
                for k in KEYS
            )
        )
