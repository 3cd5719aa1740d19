"""`cyphonic systemd install`: the templated units of the four daemons.

One template per program, instantiated per configuration file the way
Debian ships `wg-quick@.service`: `cyphonic-node@web` runs
`python -m cyphonic.node --config /etc/cyphonic/web.toml`. The templates
are package data beside this file; installing them only puts in the
interpreter the package is installed in (a venv's own `python`, so the
units need no activated venv and no PATH).
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

PROGRAMS = ("cloud", "trs", "node", "adapter")
UNIT_DIR = Path("/etc/systemd/system")
# ProtectHome=yes hides these from the daemons: an interpreter there cannot start
HIDDEN = ("/home/", "/root/", "/run/user/")


def unit_name(program: str) -> str:
    return f"cyphonic-{program}@.service"


def render(program: str, python: str) -> str:
    """The unit of `program` with ExecStart on `python`."""
    template = resources.files(__name__).joinpath(unit_name(program)).read_text()
    # systemd expands % specifiers in ExecStart and splits it at spaces unless quoted
    executable = python.replace("%", "%%")
    if any(c.isspace() for c in executable) or '"' in executable:
        raise ValueError(f"{python}: an interpreter path with spaces or quotes cannot be an ExecStart")
    return template.replace("@PYTHON@", executable)


def add_parser(sub: argparse._SubParsersAction) -> None:
    systemd = sub.add_parser("systemd", help="systemd units for the daemons").add_subparsers(
        dest="systemd_command", required=True
    )
    install = systemd.add_parser(
        "install", help="write cyphonic-{cloud,trs,node,adapter}@.service for this installation"
    )
    install.add_argument("--unit-dir", type=Path, default=UNIT_DIR, help=f"where to write them (default {UNIT_DIR})")
    install.add_argument(
        "--python", default=sys.executable, help="the interpreter of ExecStart (default: this one, %(default)s)"
    )
    install.add_argument("--print", action="store_true", help="show the units instead of writing them")
    install.set_defaults(func=install_units)


def install_units(args: argparse.Namespace) -> int:
    try:
        units = {unit_name(p): render(p, args.python) for p in PROGRAMS}
    except ValueError as exc:
        print(f"cyphonic systemd install: {exc}", file=sys.stderr)
        return 2
    if args.print:
        for name, text in units.items():
            print(f"# {args.unit_dir / name}\n{text}")
        return 0
    try:
        args.unit_dir.mkdir(parents=True, exist_ok=True)
        for name, text in units.items():
            (args.unit_dir / name).write_text(text)
    except OSError as exc:
        print(f"cyphonic systemd install: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {', '.join(units)} to {args.unit_dir}, running {args.python}")
    if args.python.startswith(HIDDEN):
        print(f"warning: the units' ProtectHome=yes hides {args.python}; install into /opt (README)", file=sys.stderr)
    print(
        "next, as root:\n"
        "  useradd --system --no-create-home --shell /usr/sbin/nologin cyphonic   # once\n"
        "  systemctl daemon-reload\n"
        "  systemctl enable --now cyphonic-node@NAME      # runs /etc/cyphonic/NAME.toml\n"
        "  journalctl -u cyphonic-node@NAME"
    )
    return 0
