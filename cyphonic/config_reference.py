"""docs/config.md, generated from the schemas the programs load their files
with: every key's type comes from its converter, its default and meaning
from its `Key`, so the page cannot drift from what the programs accept.

    python -m cyphonic.config_reference > docs/config.md
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cyphonic import config as c

REGENERATE = "python -m cyphonic.config_reference > docs/config.md"


@dataclass(frozen=True)
class ConfigFile:
    """One kind of configuration file and the programs that read it."""

    kind: str
    name: str
    about: str

    @property
    def schema(self) -> c.Schema:
        # imported here: each program's settings pull in its service's code
        if self.kind == "node":
            from cyphonic.node.settings import SCHEMA
        elif self.kind == "adapter":
            from cyphonic.adapter.settings import SCHEMA
        elif self.kind == "cloud":
            from cyphonic.cloud.settings import SCHEMA
        else:
            from cyphonic.trs.settings import SCHEMA
        return SCHEMA


FILES = {
    f.kind: f
    for f in (
        ConfigFile(
            "node",
            "node.toml",
            "`python -m cyphonic.node --config node.toml`; written by `cyphonic enroll node`.",
        ),
        ConfigFile(
            "adapter",
            "adapter.toml",
            "`python -m cyphonic.adapter --config adapter.toml`; written by `cyphonic enroll adapter`"
            " (see adapter/README.md).",
        ),
        ConfigFile(
            "cloud",
            "cloud.toml",
            "`python -m cyphonic.cloud` (AS, NMS and optionally a TRS in one process), `python -m cyphonic.auth`"
            " and `python -m cyphonic.nms` all read it; written by `cyphonic ca init`.",
        ),
        ConfigFile(
            "trs",
            "trs.toml",
            "`python -m cyphonic.trs --config trs.toml`, a Tunnel Relay Service on its own host;"
            " written by `cyphonic ca init --trs ADDRESS`.",
        ),
    )
}


def keys(schema: c.Schema, prefix: str = "") -> Iterator[tuple[str, c.Key]]:
    """(dotted name, Key) of every key, sections' keys after the top level's:
    that is the order a reader meets them in a TOML file."""
    sections = []
    for name, spec in schema.items():
        if isinstance(spec, dict):
            sections.append((name, spec))
        else:
            yield prefix + name, spec
    for name, spec in sections:
        yield from keys(spec, f"{prefix}{name}.")


def toml_value(value: Any) -> str:
    """A default as one would write it in the file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple):  # an Address
        return f'"{c.format_address(value)}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return f'"{value}"'


def default_text(key: c.Key) -> str:
    if key.default is ...:
        return "required"
    if key.default is None:
        return "unset"
    return f"`{toml_value(key.default)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def table(f: ConfigFile) -> list[str]:
    lines = [f"## {f.name}", "", f.about, "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for name, key in keys(f.schema):
        cells = (f"`{name}`", c.kind_of(key.convert), default_text(key), key.doc)
        lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return lines + [""]


def markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated: " + REGENERATE + "; do not edit by hand -->",
        "",
        "Every key of every configuration file, from the schemas the programs check their files against.",
        "Files are TOML; an unknown key or a bad value stops the program with one line naming the key and",
        "exit status 2. A key in a `[section]` is written `section.key` here. Paths are relative to the",
        "file's directory. `cyphonic config check FILE` validates a file as this machine's daemon would,",
        "without starting anything.",
        "",
    ]
    for f in FILES.values():
        lines += table(f)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown())
