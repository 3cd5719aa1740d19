"""Network-namespace labs for the demo, the system tests and the benchmarks.

As root:  cyphonic lab up [--prefix P]     build, enroll, start, wait for registration
          cyphonic lab show [--json]       hosts, addresses, virtual IPs
          cyphonic lab exec mn -- ping cn.cyphonic.test
          cyphonic lab move mn napt         move a host's uplink (global4a/global4b/napt/ipv6only/home)
          cyphonic lab rebind nat-cn        NAT rebinding: the NAPT router forgets its mappings
          cyphonic lab down                 also cleans up after a crash
          cyphonic lab demo                 up, a tour with stock tools, down
From Python: `Lab(prefix).up()`, `lab.run("mn", [...])`, `lab.status("cn")`, `lab.down()`;
general nodes (stock devices behind an adapter): `lab.lease("gn1")`,
`lab.dhcp_renew("gn1")`, `lab.dhcp_release("gn1")`; mobility: `lab.move("mn", "napt")`,
`lab.move("adapter", "home")`, `lab.rebind("nat-cn")`.
State (CA, bundles, logs, pids) is under /run/cyphonic-lab/<prefix>/.

    topology.py    what a lab is: hosts, links, addresses (data only)
    netns.py       builds and removes it with ip/sysctl/nft (switches are bridges)
    state.py       its files under /run/cyphonic-lab/<prefix>/
    enrollment.py  CA, node and adapter bundles, via `cyphonic ca` / `cyphonic enroll`
    processes.py   starting daemons, `cyphonic status --json`
    readiness.py   waiting until the daemons answer and register
    dhcp_clients.py  dhclient/udhcpc files and scripts that stay inside the lab
    general_nodes.py running them: start, lease, renew, release
    apps.py        stock programs as users run them: http.server, iperf3, ping
    pcap.py        what kinds of packets a tcpdump capture holds
    mobility.py    `lab move`: a host's uplink onto another access network, or home
    uplink.py      swapping the uplink veth with a ~15 ms outage (ip -batch)
    rebinding.py   `lab rebind`: a NAPT router forgets its mappings, new ones get new ports
    handover.py    a ping every 10 ms across moves, and the gaps it saw
    instance.py    Lab: one topology, up under one prefix
    demo.py        `cyphonic lab demo`
    commands.py    `cyphonic lab ...` for the CLI
"""

from .errors import LabError
from .instance import Lab, down
from .topology import BASIC, Role, Topology

__all__ = ["BASIC", "Lab", "LabError", "Role", "Topology", "down"]
