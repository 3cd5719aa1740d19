"""`cyphonic systemd install`: four templated units systemd accepts, each
running its program from this installation."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cyphonic import cli, systemd

ANALYZE = shutil.which("systemd-analyze")


def units(unit_dir: Path) -> dict[str, configparser.ConfigParser]:
    parsed = {}
    for program in systemd.PROGRAMS:
        # systemd's syntax is INI-like enough for these files: no repeated keys, no continuations
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string((unit_dir / systemd.unit_name(program)).read_text())
        parsed[program] = parser
    return parsed


@pytest.fixture
def installed(tmp_path: Path, capsys: pytest.CaptureFixture) -> Path:
    assert cli.main(["systemd", "install", "--unit-dir", str(tmp_path / "units")]) == 0
    assert "systemctl enable --now cyphonic-node@NAME" in capsys.readouterr().out
    return tmp_path / "units"


def test_each_program_gets_a_template_running_this_interpreter(installed: Path) -> None:
    for program, unit in units(installed).items():
        service = unit["Service"]
        assert service["ExecStart"] == f"{sys.executable} -m cyphonic.{program} --config /etc/cyphonic/%i.toml"
        assert service["Type"] == "notify"
        assert service["Restart"] == "on-failure"
        assert service["User"] == "cyphonic"
        assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_capabilities_are_only_what_each_program_needs(installed: Path) -> None:
    caps = {p: u["Service"].get("AmbientCapabilities", "") for p, u in units(installed).items()}
    assert caps == {
        "cloud": "",
        "trs": "",
        "node": "CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
        "adapter": "CAP_NET_ADMIN CAP_NET_RAW",
    }
    for program, unit in units(installed).items():
        assert unit["Service"]["CapabilityBoundingSet"] == caps[program]
    node = units(installed)["node"]["Service"]
    assert (node["DevicePolicy"], node["DeviceAllow"]) == ("closed", "/dev/net/tun rw")


def test_print_shows_the_units_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["systemd", "install", "--unit-dir", str(tmp_path / "units"), "--python", "/opt/cyphonic/bin/python"]
    assert cli.main([*args, "--print"]) == 0
    out = capsys.readouterr().out
    assert out.count("ExecStart=/opt/cyphonic/bin/python -m cyphonic.") == 4
    assert not (tmp_path / "units").exists()


def test_an_interpreter_path_systemd_would_split_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["systemd", "install", "--unit-dir", str(tmp_path), "--python", "/opt/my venv/bin/python"]
    assert cli.main(args) == 2
    assert "spaces" in capsys.readouterr().err
    assert systemd.render("node", "/opt/50%/bin/python").count("ExecStart=/opt/50%%/bin/python ") == 1


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")
def test_systemd_analyze_verify_accepts_every_unit(installed: Path, tmp_path: Path) -> None:
    """`systemd-analyze verify` loads unit files without a running manager
    (PID 1 need not be systemd); it reports unknown keys, bad values and a
    missing ExecStart binary on stderr while still exiting 0, hence the
    check for silence."""
    for program in systemd.PROGRAMS:
        # an instance of the template: verify loads it by its file name
        instance = tmp_path / f"cyphonic-{program}@test.service"
        shutil.copy(installed / systemd.unit_name(program), instance)
        done = subprocess.run(
            [str(ANALYZE), "verify", "--man=no", str(instance)], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stderr) == (0, ""), f"{program}: {done.stderr}"
