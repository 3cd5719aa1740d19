"""What an operator sees through `cyphonic lab ...` and `cyphonic status`."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from cyphonic.cli import main
from cyphonic.lab import Lab
from cyphonic.lab.processes import cyphonic_cli, tool_env

pytestmark = [pytest.mark.system, pytest.mark.control_plane]

CN = "cn.cyphonic.test"


def cyphonic(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([*cyphonic_cli(), *args], capture_output=True, text=True,
                          timeout=timeout, env=tool_env())


def test_lab_exec_status_on_mn_lists_cn_with_path_and_traffic(lab: Lab) -> None:
    assert lab.run("mn", ["ping", "-c", "3", "-i", "0.2", CN]).returncode == 0
    done = cyphonic("lab", "exec", "--prefix", lab.prefix, "mn", "--", "cyphonic", "status")
    assert done.returncode == 0, done.stderr
    # columns are two or more spaces apart (cyphonic/status_text.py)
    rows = [re.split(r" {2,}", line) for line in done.stdout.splitlines() if line.startswith(CN + " ")]
    assert rows, f"{CN} missing from mn's status:\n{done.stdout}"
    fqdn, vip4, vip6, path, endpoint, cipher, handshake, rx, tx, *_ = rows[0]
    assert path in ("direct", "reverse")
    assert ":" in endpoint
    assert not rx.startswith("0 B") and not tx.startswith("0 B"), done.stdout


def test_lab_exec_returns_the_command_exit_status(lab: Lab) -> None:
    done = cyphonic("lab", "exec", "--prefix", lab.prefix, "cn", "--", "sh", "-c", "exit 7")
    assert done.returncode == 7


def test_lab_show_json_matches_what_the_daemons_report(lab: Lab) -> None:
    done = cyphonic("lab", "show", "--json", "--prefix", lab.prefix)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["domain"] == "cyphonic.test"
    hosts = shown["hosts"]
    assert {n: h["role"] for n, h in hosts.items()} == {
        "inet": "router", "cloud": "cloud", "mn": "node", "nat-cn": "nat", "cn": "node",
        "trs": "trs", "trs2": "trs", "nat-a": "nat", "a1": "node", "nat-b": "nat", "b1": "node", "v6": "node",
        "attacker": "host", "nat-ad": "nat", "adapter": "adapter", "sw1": "switch", "gn1": "general",
        "gn2": "general", "gn6": "general", "nat-ad2": "nat", "adapter2": "adapter", "gn3": "general", "nat-mv": "nat"}
    assert hosts["trs"]["fqdn"] is None
    assert hosts["trs"]["addresses"] == ["203.0.114.20", "2001:db8:d::20"]
    assert hosts["v6"]["addresses"] == ["2001:db8:e::10"]
    for name in ("mn", "cn", "a1", "b1", "v6"):
        status = lab.status(name)
        assert hosts[name]["fqdn"] == f"{name}.cyphonic.test" == status["fqdn"]
        assert (hosts[name]["vip4"], hosts[name]["vip6"]) == (status["vip4"], status["vip6"])
        assert hosts[name]["vip4"] and hosts[name]["vip6"]
    assert "198.51.100.10" in hosts["mn"]["addresses"]
    assert hosts["cn"]["addresses"] == ["192.168.20.10"]
    assert hosts["cn"]["netns"] == f"{lab.prefix}-cn"


def test_lab_commands_need_root(monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["lab", "up", "--prefix", "never"]) == 2
    err = capsys.readouterr().err
    assert err == "cyphonic lab: needs root (network namespaces)\n"
