"""CA and node enrollment for a lab, through the operator's own CLI.

The lab uses `cyphonic ca ...` / `cyphonic enroll ...` exactly as an operator
would, so the demo and the system tests exercise those commands too.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .errors import LabError
from .processes import cyphonic_cli, tool_env


def _cli(*args: str) -> None:
    argv = [*cyphonic_cli(), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=tool_env())
    if done.returncode != 0:
        msg = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise LabError(f"cyphonic {' '.join(args)}: exit {done.returncode}",
                       "\n".join(msg[-15:]))


def ca_init(ca_dir: Path, domain: str) -> None:
    """Creates ca.crt/ca.key, the AS keys, revoked.txt and cloud.toml in ca_dir."""
    _cli("ca", "init", "--dir", str(ca_dir), "--domain", domain)


def enroll_node(name: str, ca_dir: Path, out: Path, clouds: list[str],
                start: str | None = None, days: int | None = None) -> Path:
    """Writes node.crt, node.key, ca.crt and node.toml to `out`; returns node.toml."""
    args = ["enroll", "node", name, "--ca", str(ca_dir), "--out", str(out)]
    for addr in clouds:
        args += ["--cloud", addr]
    if start is not None:
        args += ["--start", start]
    if days is not None:
        args += ["--days", str(days)]
    _cli(*args)
    return out / "node.toml"


def revoke(ca_dir: Path, certfile: Path) -> None:
    _cli("ca", "revoke", "--ca", str(ca_dir), str(certfile))
