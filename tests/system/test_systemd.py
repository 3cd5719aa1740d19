"""A node started through its systemd unit: `systemctl start` returns once
the node says READY=1 (logged in, registered, TUN up), it runs without
root on the unit's capabilities, logs at the journal's priorities, and
stops cleanly.

Needs systemd as PID 1; elsewhere (CI's containers) it skips with that
reason, the one skip tests/system/conftest.py allows in CI.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cyphonic import cli
from cyphonic.lab import Lab
from cyphonic.lab.enrollment import derive_node_config, enroll_node
from cyphonic.lab.processes import status
from tests.system.conftest import systemd_missing

MISSING = systemd_missing()
pytestmark = [
    pytest.mark.system,
    pytest.mark.control_plane,
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
]

# /run: the units vanish at reboot even if a failed test leaves them behind
UNIT_DIR = Path("/run/systemd/system")
CAP_NET_ADMIN, CAP_NET_BIND_SERVICE = 12, 10


def systemctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=timeout)


def journal(unit: str) -> list[dict]:
    done = subprocess.run(
        ["journalctl", "-u", unit, "-o", "json", "--no-pager", "--output-fields=MESSAGE,PRIORITY"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture
def unit_node(lab: Lab) -> Iterator[tuple[str, str]]:
    """A node enrolled for this test, its bundle readable by `nobody` (the
    unit's user here: the test adds no user to the machine), and the units
    installed with a drop-in that puts it into mn's namespace and its own
    configuration. Yields (unit, control socket name); removes it all."""
    instance = f"systest{os.getpid() % 100000}"
    unit = f"cyphonic-node@{instance}.service"
    bundle = Path(f"/run/cyphonic-{instance}")
    enroll_node(instance, lab.paths.ca, bundle, lab.topology.cloud_addresses_for("mn"))
    # a second node in mn's namespace needs its own port, TUN, resolver address and control socket
    config = derive_node_config(
        bundle / "node.toml",
        bundle / f"{instance}.toml",
        {"listen_port": 4690, "tun": "cyunit", "resolver.listen": "127.0.0.40:53", "control": instance},
    )
    group = "nogroup" if _group_exists("nogroup") else "nobody"
    bundle.chmod(0o755)
    for path in bundle.iterdir():
        shutil.chown(path, "nobody", group)
    assert cli.main(["systemd", "install", "--unit-dir", str(UNIT_DIR)]) == 0
    dropin = UNIT_DIR / f"{unit}.d"
    dropin.mkdir(exist_ok=True)
    (dropin / "lab.conf").write_text(
        "[Service]\n"
        f"NetworkNamespacePath=/run/netns/{lab.ns('mn')}\n"
        f"User=nobody\nGroup={group}\n"
        "ExecStart=\n"
        f"ExecStart={sys.executable} -m cyphonic.node --config {config}\n"
        "Restart=no\n"
        # a checkout (and its venv) may live in a home directory
        "ProtectHome=read-only\n"
    )
    systemctl("daemon-reload")
    try:
        yield unit, instance
    finally:
        systemctl("stop", unit)
        systemctl("reset-failed", unit)
        shutil.rmtree(dropin, ignore_errors=True)
        for name in ("cloud", "trs", "node", "adapter"):
            (UNIT_DIR / f"cyphonic-{name}@.service").unlink(missing_ok=True)
        systemctl("daemon-reload")
        shutil.rmtree(bundle, ignore_errors=True)


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _show(unit: str, *props: str) -> dict[str, str]:
    out = systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _capabilities(pid: int) -> tuple[int, int]:
    """(uid, effective capability mask) of a running process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["Uid"].split()[1]), int(fields["CapEff"].strip(), 16)


def test_a_node_unit_is_ready_once_registered_and_runs_without_root(lab: Lab, unit_node) -> None:
    unit, control = unit_node
    started = systemctl("start", unit, timeout=90)  # Type=notify: returns at READY=1, or fails
    messages = [e.get("MESSAGE", "") for e in journal(unit)]
    assert started.returncode == 0, f"{started.stderr}\n" + "\n".join(messages[-30:])

    shown = _show(unit, "ActiveState", "SubState", "StatusText", "MainPID")
    assert (shown["ActiveState"], shown["SubState"]) == ("active", "running"), shown
    assert "ready on cyunit" in shown["StatusText"], shown
    # ready meant registered: the NMS has it right when systemctl returned
    node = status(lab.ns("mn"), control)
    assert node is not None and node["registered"], node

    uid, caps = _capabilities(int(shown["MainPID"]))
    assert uid != 0
    assert caps == (1 << CAP_NET_ADMIN) | (1 << CAP_NET_BIND_SERVICE), hex(caps)

    # journald took the priority from the line's <N> prefix and kept no timestamp of ours
    deadline = time.monotonic() + 5
    while not (ready := [e for e in journal(unit) if "ready on cyunit" in e.get("MESSAGE", "")]):
        assert time.monotonic() < deadline, "no 'ready' line in the journal"
        time.sleep(0.2)
    assert ready[0]["PRIORITY"] == "6", ready[0]
    assert ready[0]["MESSAGE"].startswith("level=info logger=cyphonic.node "), ready[0]

    stopped = systemctl("stop", unit)
    assert stopped.returncode == 0, stopped.stderr
    # SIGTERM is a clean stop for systemd: inactive, not failed
    assert _show(unit, "ActiveState")["ActiveState"] == "inactive"
