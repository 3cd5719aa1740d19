"""Network-namespace labs for the demo, the system tests and the benchmarks.

    topology.py    what a lab is: hosts, links, addresses (data only)
    netns.py       builds and removes it with ip/sysctl/nft
    state.py       its files under /run/cyphonic-lab/<prefix>/
    enrollment.py  CA and node bundles, via `cyphonic ca` / `cyphonic enroll`
    processes.py   starting daemons, `cyphonic status --json`
    instance.py    Lab: one topology, up under one prefix
    demo.py        `cyphonic lab demo`
    commands.py    `cyphonic lab ...` for the CLI
"""

from .errors import LabError
from .instance import Lab, down
from .topology import BASIC, Role, Topology

__all__ = ["BASIC", "Lab", "LabError", "Role", "Topology", "down"]
