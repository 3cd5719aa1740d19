"""Strict TOML configuration: an unknown or invalid key is a ConfigError
naming the key, and every program turns that into one line and exit 2."""

from __future__ import annotations

import ipaddress
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cyphonic.errors import ConfigError

Address = tuple[str, int]
C = TypeVar("C", bound=Callable[..., Any])


def kind(description: str) -> Callable[[C], C]:
    """Names the type a converter accepts, for docs/config.md: the reference
    is generated from the converters the programs check with, so it cannot drift."""

    def mark(convert: C) -> C:
        convert.kind = description  # type: ignore[attr-defined]
        return convert

    return mark


def kind_of(convert: Callable[..., Any]) -> str:
    return getattr(convert, "kind", "value")


def parse_address(text: str) -> Address:
    """'1.2.3.4:7000' or '[2001:db8::1]:7000' -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"'{text}' is not ADDRESS:PORT")
    host = host.removeprefix("[").removesuffix("]")
    ipaddress.ip_address(host)
    return host, int(port)


def format_address(address: Address) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Key:
    """One allowed key: how to check/convert it and its default."""

    convert: Callable[[Any, Path], Any]
    default: Any = ...  # Ellipsis: required
    doc: str = ""  # what it means, for the generated config reference (docs/config.md)


@kind("string")
def text(value: Any, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def integer(low: int, high: int) -> Callable[[Any, Path], int]:
    @kind(f"integer {low}-{high}")
    def check(value: Any, base: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be an integer from {low} to {high}")
        return value

    return check


@kind("boolean")
def boolean(value: Any, base: Path) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


@kind("path (relative to the file)")
def path(value: Any, base: Path) -> Path:
    return base / text(value, base)


@kind("ADDRESS:PORT")
def address(value: Any, base: Path) -> Address:
    return parse_address(text(value, base))


@kind('ADDRESS:PORT or "" (off)')
def optional_address(value: Any, base: Path) -> Address | None:
    """ADDRESS:PORT, or "" for none (a feature left off)."""
    if value == "":
        return None
    return address(value, base)


@kind("list of ADDRESS:PORT")
def addresses(value: Any, base: Path) -> list[Address]:
    if not isinstance(value, list):
        raise ValueError("must be a list of ADDRESS:PORT strings")
    return [address(v, base) for v in value]


@kind("list of strings")
def strings(value: Any, base: Path) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return value


def network(version: int) -> Callable[[Any, Path], Any]:
    @kind(f"IPv{version} network (CIDR)")
    def check(value: Any, base: Path):
        net = ipaddress.ip_network(text(value, base))
        if net.version != version:
            raise ValueError(f"must be an IPv{version} network")
        return net

    return check


Schema = dict[str, "Key | Schema"]


def read(path_: Path) -> dict[str, Any]:
    """The file's TOML, unchecked; ConfigError if it cannot be read or parsed."""
    try:
        return tomllib.loads(Path(path_).read_text())
    except OSError as exc:
        raise ConfigError(str(path_), exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path_), f"not valid TOML ({exc})") from None


def load(path_: Path, schema: Schema) -> dict[str, Any]:
    """The checked configuration; ConfigError names the first bad key."""
    path_ = Path(path_)
    return _check(read(path_), schema, path_.parent, "")


def _check(raw: dict, schema: Schema, base: Path, prefix: str) -> dict[str, Any]:
    for key in raw:
        if key not in schema:
            raise ConfigError(prefix + key, "unknown key")
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        name = prefix + key
        if isinstance(spec, dict):
            section = raw.get(key, {})
            if not isinstance(section, dict):
                raise ConfigError(name, "must be a table")
            out[key] = _check(section, spec, base, name + ".")
        elif key in raw:
            try:
                out[key] = spec.convert(raw[key], base)
            except ValueError as exc:
                raise ConfigError(name, str(exc)) from None
        elif spec.default is ...:
            raise ConfigError(name, "missing required key")
        else:
            out[key] = spec.default
    return out


def load_or_exit(program: str, path_: Path, schema: Schema) -> dict[str, Any]:
    try:
        return load(path_, schema)
    except ConfigError as exc:
        print(f"{program}: config error: {exc}", file=sys.stderr)
        sys.exit(2)
