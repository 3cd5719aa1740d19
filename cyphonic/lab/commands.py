"""`cyphonic lab ...`: the functions the CLI calls. Each returns an exit status."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable

from . import rebinding
from .errors import LabError
from .instance import DEFAULT_PREFIX, Lab, down
from .mobility import HOME, check, describe
from .processes import tool_env
from .topology import BASIC, Role

Command = Callable[[argparse.Namespace], int]


def add_lab_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `lab` and its subcommands; each sets `func(args) -> int`."""
    lab = subparsers.add_parser(
        "lab",
        help="network-namespace lab for the demo and the system tests",
        description="Build a CYPHONIC lab from network namespaces on this machine "
        "(root only). All traffic stays inside the namespaces.",
    )
    sub = lab.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help=f"namespace name prefix, <prefix>-<host> (default {DEFAULT_PREFIX})"
    )

    p = sub.add_parser("up", parents=[common], help="build the topology and start the daemons")
    p.add_argument(
        "--timeout",
        type=float,
        default=20,
        help="seconds to wait for the cloud, nodes and adapters to register (and again for the DHCP leases)",
    )
    p.add_argument(
        "--dataplane",
        choices=("offload", "python", "plain"),
        default="offload",
        help="the data path: offload (probed) with its compiled per-packet loops where built; python: the same "
        "on its pure-Python loops; plain: one packet per system call",
    )
    p.add_argument(
        "--no-punch", action="store_true", help="no hole punching: nodes both behind NAPT stay on the relay (TRS)"
    )
    p.add_argument(
        "--cipher",
        choices=("auto", "chacha20-poly1305", "aes-256-gcm"),
        default="auto",
        help="the nodes' and adapters' data cipher (default auto: AES-256-GCM where the CPU has AES-NI)",
    )
    p.set_defaults(func=_as_root(cmd_up))

    p = sub.add_parser("show", parents=[common], help="hosts, addresses and virtual IPs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_as_root(cmd_show))

    p = sub.add_parser(
        "exec",
        parents=[common],
        help="run a command inside a host's namespace",
        usage="cyphonic lab exec [--prefix P] HOST [-- CMD...]",
    )
    p.add_argument("host")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="command and arguments (default: a shell)")
    p.set_defaults(func=_as_root(cmd_exec))

    networks = "\n".join(f"  {n.name:<10} {n.description}" for n in BASIC.networks)
    networks += f"\n  {HOME:<10} back to the host's own uplink in the topology (mn: global4a; adapter: nat-ad's LAN)"
    p = sub.add_parser(
        "move",
        parents=[common],
        help="move a host's uplink to another access network (mobility)",
        usage="cyphonic lab move [--prefix P] [--json] HOST NETWORK",
        description="Move HOST's uplink to another access network: the old link is removed, a new one\n"
        "(the same interface name: eth0 for a node) is made into the network's router, with the\n"
        "network's addresses and default routes. One host per network at a time. `home` makes\n"
        "the host's link of the topology again, as `lab up` made it.",
        epilog=f"networks:\n{networks}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("host", metavar="HOST", help="a node or host (cyphonic lab show)")
    p.add_argument("network", metavar="NETWORK", help="one of the networks below, or home")
    p.add_argument("--json", action="store_true", help="print what changed as JSON")
    p.set_defaults(func=_as_root(cmd_move))

    p = sub.add_parser(
        "rebind",
        parents=[common],
        help="a NAPT router forgets its mappings and maps anew from other ports (NAT rebinding)",
        usage="cyphonic lab rebind [--prefix P] [--json] NAT_HOST",
        description="NAT rebinding, as when a NAPT router restarts: its conntrack table is flushed and its\n"
        "masquerade takes TCP/UDP ports from another range (two ranges, alternating on each rebind),\n"
        "so every flow behind it leaves from a new public port.",
        epilog="NAPT routers: " + ", ".join(h.name for h in BASIC.with_role(Role.NAT)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("host", metavar="NAT_HOST", help="a NAPT router (cyphonic lab show: role nat)")
    p.add_argument("--json", action="store_true", help="print what changed as JSON")
    p.set_defaults(func=_as_root(cmd_rebind))

    p = sub.add_parser("down", parents=[common], help="remove the lab, whatever state it is in")
    p.set_defaults(func=_as_root(cmd_down))

    p = sub.add_parser("demo", parents=[common], help="up, a short tour with stock tools, down")
    p.set_defaults(func=_as_root(cmd_demo))
    return lab


def _as_root(command: Command) -> Command:
    def run(args: argparse.Namespace) -> int:
        if os.geteuid() != 0:
            print("cyphonic lab: needs root (network namespaces)", file=sys.stderr)
            return 2
        try:
            return command(args)
        except LabError as e:
            _report(e)
            return 1
        except ValueError as e:  # a bad --prefix
            print(f"cyphonic lab: {e}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # `cyphonic lab show | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0

    return run


def _report(e: LabError) -> None:
    print(f"cyphonic lab: {e}", file=sys.stderr)
    if e.detail:
        for line in e.detail.splitlines():
            print(f"  | {line}", file=sys.stderr)


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(args.prefix, dataplane=args.dataplane, hole_punching=not args.no_punch, cipher=args.cipher)
    if lab.is_up():
        raise LabError(
            f"a lab with prefix {lab.prefix!r} is already up "
            f"(cyphonic lab down --prefix {lab.prefix}, or another --prefix)"
        )
    try:
        lab.up(timeout=args.timeout)
    except LabError as e:
        _report(e)
        print(
            f"cyphonic lab: left up for inspection; remove with `cyphonic lab down --prefix {lab.prefix}`",
            file=sys.stderr,
        )
        return 1
    print(f"lab {lab.prefix!r} is up (state in {lab.paths.root})")
    _print_table(lab.show())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    shown = Lab.attach(args.prefix).show()
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        _print_table(shown)
    return 0


def _print_table(shown: dict) -> None:
    rows = [("HOST", "ROLE", "NETNS", "NETWORK", "FQDN", "VIP4", "VIP6", "ADDRESSES")]
    for name, h in shown["hosts"].items():
        rows.append(
            (
                name,
                h["role"],
                h["netns"],
                h.get("network") or "-",
                h["fqdn"] or "-",
                h["vip4"] or "-",
                h["vip6"] or "-",
                _addresses(h),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])


def _addresses(h: dict) -> str:
    if h["role"] == "general":  # a stock device: what its DHCP client got
        return f"{h['dhcp']} {h['mac']} lease {h['lease'] or '-'}"
    return " ".join(h["addresses"])


def cmd_exec(args: argparse.Namespace) -> int:
    lab = Lab.attach(args.prefix)
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        cmd = [os.environ.get("SHELL", "/bin/sh")]
    try:
        ns = lab.ns(args.host)
    except KeyError:
        hosts = ", ".join(h.name for h in lab.topology.hosts)
        raise LabError(f"no host {args.host!r} in the lab (hosts: {hosts})") from None
    proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=tool_env())
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        # The command got the same Ctrl-C (same process group); let it finish.
        rc = proc.wait()
    return 128 - rc if rc < 0 else rc  # killed by signal N -> 128+N, as a shell says


def cmd_move(args: argparse.Namespace) -> int:
    check(Lab(args.prefix).topology, args.host, args.network)  # ValueError: one line, exit 2, lab up or not
    moved = Lab.attach(args.prefix).move(args.host, args.network)
    print(json.dumps(moved, indent=2) if args.json else describe(moved))
    return 0


def cmd_rebind(args: argparse.Namespace) -> int:
    rebinding.check(Lab(args.prefix).topology, args.host)  # ValueError: one line, exit 2
    rebound = Lab.attach(args.prefix).rebind(args.host)
    print(json.dumps(rebound, indent=2) if args.json else rebinding.describe(rebound))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    removed = down(args.prefix)
    if removed:
        print(f"removed {len(removed)} namespaces: {' '.join(removed)}")
    else:
        print(f"nothing to remove for prefix {args.prefix!r}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # only the demo needs it

    return run_demo(args.prefix)
