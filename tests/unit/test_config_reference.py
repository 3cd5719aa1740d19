"""docs/config.md is generated from the schemas, and `cyphonic config check`
validates a file with the schema its program would use."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyphonic import cli, config_reference
from cyphonic.config import kind_of

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"
NODE = 'certificate = "n.crt"\nkey = "n.key"\nca = "ca.crt"\nauth = ["192.0.2.1:7000"]\nnms = ["192.0.2.1:7001"]\n'
TRS = 'public = ["198.51.100.20:7002"]\nnms_key = "nms-trs.key"\n'


def test_the_committed_reference_is_what_the_schemas_generate():
    assert DOCS.read_text() == config_reference.markdown(), (
        f"docs/config.md is out of date: regenerate it with `{config_reference.REGENERATE}`"
    )


@pytest.mark.parametrize("kind", config_reference.FILES)
def test_every_key_has_a_meaning_and_a_type(kind):
    for name, key in config_reference.keys(config_reference.FILES[kind].schema):
        assert key.doc.strip(), f"{kind}: key {name} has no doc= (it becomes its line in docs/config.md)"
        assert kind_of(key.convert) != "value", f"{kind}: the converter of {name} has no config.kind(...)"


def test_the_reference_lists_section_keys_dotted_with_defaults():
    text = config_reference.markdown()
    assert '| `resolver.listen` | ADDRESS:PORT | `"127.0.0.1:53"` |' in text
    assert '| `auth.listen` | list of ADDRESS:PORT | `["0.0.0.0:7000", "[::]:7000"]` |' in text
    assert "| `public` | list of ADDRESS:PORT | required |" in text
    assert "| `listen_port` | integer 1-65535 | `4500` |" in text


def check(tmp_path: Path, name: str, text: str, *extra: str) -> int:
    (tmp_path / name).write_text(text)
    return cli.main(["config", "check", str(tmp_path / name), *extra])


def test_a_good_file_is_ok_by_its_name(tmp_path, capsys):
    assert check(tmp_path, "node.toml", NODE) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'node.toml'}: ok (node.toml)\n"


def test_the_kind_is_guessed_from_the_keys_or_given(tmp_path, capsys):
    assert check(tmp_path, "relay.toml", TRS) == 0
    assert capsys.readouterr().out.endswith(": ok (trs.toml)\n")
    # the keys every daemon shares fit both the node and the adapter: say which
    assert check(tmp_path, "site.toml", NODE) == 2
    assert "say --kind" in capsys.readouterr().err
    assert check(tmp_path, "site.toml", NODE, "--kind", "adapter") == 0
    assert capsys.readouterr().out.endswith(": ok (adapter.toml)\n")


@pytest.mark.parametrize(
    "text, error",
    [
        (NODE + "colour = 1\n", "colour: unknown key (node.toml)"),
        (NODE + "[resolver]\nlisten = \"localhost\"\n", "resolver.listen: 'localhost' is not ADDRESS:PORT (node.toml)"),
        (NODE + "mtu = 100\n", "mtu: must be an integer from 576 to 65000 (node.toml)"),
        (NODE.replace('key = "n.key"\n', ""), "key: missing required key (node.toml)"),
        ("mtu = [\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key_and_exit_2(tmp_path, capsys, text, error):
    assert check(tmp_path, "node.toml", text) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err.count("\n") == 1 and error in out.err, out.err
    assert out.err.startswith(str(tmp_path / "node.toml") + ": ")


def test_the_wrong_kind_fails_on_the_first_key_it_does_not_know(tmp_path, capsys):
    assert check(tmp_path, "node.toml", NODE, "--kind", "trs") == 2
    assert capsys.readouterr().err.endswith(": certificate: unknown key (trs.toml)\n")


def test_a_missing_file_is_named_once(tmp_path, capsys):
    assert cli.main(["config", "check", str(tmp_path / "nowhere.toml")]) == 2
    assert capsys.readouterr().err == f"{tmp_path / 'nowhere.toml'}: No such file or directory\n"
