"""Start, query and stop the CYPHONIC programs inside lab namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .netns import in_ns


def bin_dir() -> Path:
    """The directory of this interpreter: the venv's bin, where `cyphonic` lives."""
    return Path(sys.executable).parent


def cyphonic_cli() -> list[str]:
    """argv prefix that runs the `cyphonic` console script of this install."""
    script = bin_dir() / "cyphonic"
    if script.exists():
        return [str(script)]
    # Not installed as a script (a bare checkout): same code, via the module.
    return [sys.executable, "-c", "import sys; from cyphonic.cli import main; sys.exit(main())"]


def tool_env() -> dict[str, str]:
    """Environment for commands run in a namespace: the venv's bin comes first,

    so `cyphonic lab exec mn -- cyphonic status` finds the same install even
    when the venv is not activated.
    """
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir()}{os.pathsep}{env.get('PATH', '')}"
    return env


def start_daemon(ns: str, module: str, config: Path, log: Path, pidfile: Path | None = None) -> subprocess.Popen:
    """Run `python -m <module> --config <config>` detached inside `ns`."""
    return start_program(ns, [sys.executable, "-m", module, "--config", str(config)], log, pidfile)


def start_program(ns: str, argv: list[str], log: Path, pidfile: Path | None = None) -> subprocess.Popen:
    """Run `argv` detached inside `ns`, appending its output to `log`.

    `ip netns exec` execs the program, so the pid we get is the program's.
    A new session keeps it out of the caller's terminal and process group:
    Ctrl-C on `lab up` or a test run does not take the daemons down with it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            in_ns(ns, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=tool_env(),
        )
    if pidfile is not None:
        pidfile.write_text(f"{proc.pid}\n")
    return proc


def status(ns: str, daemon: str | None = None, timeout: float = 5) -> dict | None:
    """`cyphonic status --json` inside `ns`; None while the daemon does not answer.

    `daemon` ("node", "cloud", "adapter") picks one when a namespace runs several.
    """
    which = ["--daemon", daemon] if daemon else []
    try:
        done = subprocess.run(
            in_ns(ns, [*cyphonic_cli(), "status", "--json", *which]),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=tool_env(),
        )
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout)
    except ValueError:
        return None


def log_tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return f"(no log at {log})"
    return "\n".join(text.splitlines()[-lines:])
