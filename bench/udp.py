"""The UDP offered-load stage: per path, the highest rate with <= 1% loss.

`iperf3 -u` at doubling (or halving) rates until the receiver's loss crosses
1%, then a geometric bisection (`probes.udp_search`). Each repetition starts
its search where the previous one ended: fewer steps.

Every path's iperf3 gets `-w 4M` (UDP_BUFFER) on both ends: with the
default 208 KB the receiving application's socket overflows in bursts
first (RcvbufErrors at cn while the tunnel delivered every datagram: the
plain path's ceiling was iperf3's, and CYPHONIC's GRO-batched delivery is
burstier than Nebula's one-at-a-time). The same buffer for A, B and C keeps
the figure the tunnel's.
"""

from __future__ import annotations

from cyphonic.lab import Lab

from . import probes
from .datapaths import PORT, DataPath

UDP_BUFFER = ("-w", "4M")


class UdpStage:
    """The UDP search over A B C, remembering each path's last result as the next start."""

    def __init__(self, lab: Lab, paths: dict[str, DataPath], seconds: float, refine: int, start_mbps: int = 0) -> None:
        self.lab, self.paths = lab, paths
        self.seconds, self.refine = seconds, refine
        # a higher first rate saves the quick run's doubling steps
        self.start = {k: max(p.udp_start_mbps, start_mbps) for k, p in paths.items()}

    def __call__(self, out: dict) -> None:
        """out[path] = every step of one search each."""
        for p in self.paths.values():
            r = probes.udp_search(
                self.lab,
                p.client,
                p.target,
                PORT,
                self.seconds,
                p.udp_length,
                start_mbps=self.start[p.key],
                max_mbps=p.udp_max_mbps,
                refine=self.refine,
                extra=tuple(p.iperf_extra) + UDP_BUFFER,
            )
            out[p.key] = r
            if r.get("max_rate_mbps"):
                self.start[p.key] = r["max_rate_mbps"]
