"""Bad configuration: one line naming the key, exit status 2."""

import subprocess
import sys

import pytest

from cyphonic import config
from cyphonic.errors import ConfigError
from cyphonic.node.settings import SCHEMA

GOOD = 'certificate = "n.crt"\nkey = "n.key"\nca = "ca.crt"\nauth = ["192.0.2.1:7000"]\nnms = ["[2001:db8::1]:7001"]\n'


def test_good_config_is_converted(tmp_path):
    (tmp_path / "n.toml").write_text(GOOD)
    cfg = config.load(tmp_path / "n.toml", SCHEMA)
    assert cfg["nms"] == [("2001:db8::1", 7001)] and cfg["listen_port"] == 4500
    assert cfg["certificate"] == tmp_path / "n.crt"


@pytest.mark.parametrize(
    "extra, key",
    [
        ("colour = 1\n", "colour"),
        ("listen_port = 70000\n", "listen_port"),
        ("mtu = \"big\"\n", "mtu"),
        ("[resolver]\nlistn = \"127.0.0.1:53\"\n", "resolver.listn"),
        ("[resolver]\nlisten = \"localhost\"\n", "resolver.listen"),
    ],
)
def test_bad_keys_are_named(tmp_path, extra, key):
    (tmp_path / "n.toml").write_text(GOOD + extra)
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "n.toml", SCHEMA)
    assert info.value.key == key


def test_missing_required_key_is_named(tmp_path):
    (tmp_path / "n.toml").write_text(GOOD.replace('key = "n.key"\n', ""))
    with pytest.raises(ConfigError) as info:
        config.load(tmp_path / "n.toml", SCHEMA)
    assert info.value.key == "key"


@pytest.mark.parametrize("program", ["cyphonic.node", "cyphonic.adapter", "cyphonic.cloud"])
def test_programs_exit_2_with_one_line(tmp_path, program):
    (tmp_path / "bad.toml").write_text("bogus = true\n")
    proc = subprocess.run([sys.executable, "-m", program, "--config", str(tmp_path / "bad.toml")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "bogus" in proc.stderr


def test_an_adapter_whose_lan_port_does_not_exist_exits_2_with_one_line(tmp_path):
    from cyphonic import cli

    ca, bundle = tmp_path / "ca", tmp_path / "bundle"
    assert cli.main(["ca", "init", "--dir", str(ca), "--domain", "example.test"]) == 0
    assert cli.main(["enroll", "adapter", "box", "--ca", str(ca), "--out", str(bundle), "--cloud", "127.0.0.1",
                     "--lan", "nosuchlan9"]) == 0
    proc = subprocess.run([sys.executable, "-m", "cyphonic.adapter", "--config", str(bundle / "adapter.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "nosuchlan9" in proc.stderr
