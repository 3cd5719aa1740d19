"""`cyphonic config check FILE`: load a configuration file with the schema
its program would, and start nothing. Some converters look at this machine
(AES-NI for `cipher`, the group of `control_group`, the compiled loops), so
the answer is the one this machine's daemon would give."""

from __future__ import annotations

import sys
from pathlib import Path

from cyphonic import config
from cyphonic.config_reference import FILES, ConfigFile
from cyphonic.errors import ConfigError


def guess(path: Path, raw: dict) -> ConfigFile | None:
    """By the file's name (node.toml, ...), else by its keys: the one kind
    whose schema has every top-level key and gets every required one."""
    for f in FILES.values():
        if path.name == f.name:
            return f
    fits = [f for f in FILES.values() if _fits(raw, f.schema)]
    return fits[0] if len(fits) == 1 else None


def _fits(raw: dict, schema: config.Schema) -> bool:
    if not set(raw) <= set(schema):
        return False
    required = {k for k, v in schema.items() if isinstance(v, config.Key) and v.default is ...}
    return required <= set(raw)


def check(path: Path, kind: str | None) -> int:
    """0 and "FILE: ok (KIND.toml)", or 2 and the one line the daemon would print."""
    f = FILES[kind] if kind else None
    try:
        f = f or guess(path, config.read(path))
        if f is None:
            kinds = "|".join(FILES)
            print(f"{path}: cannot tell which program reads it; say --kind {kinds}", file=sys.stderr)
            return 2
        config.load(path, f.schema)
    except ConfigError as exc:
        where = f" ({f.name})" if f else ""
        line = str(exc) if exc.key == str(path) else f"{path}: {exc}"  # unreadable: it already names the file
        print(line + where, file=sys.stderr)
        return 2
    print(f"{path}: ok ({f.name})")
    return 0
