"""CA, node and adapter enrollment for a lab, through the operator's own CLI.

The lab uses `cyphonic ca ...` / `cyphonic enroll ...` exactly as an operator
would, so the demo and the system tests exercise those commands too.
"""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

from .errors import LabError
from .processes import cyphonic_cli, tool_env
from .state import LabPaths
from .topology import Role, Topology, trs_public


def _cli(*args: str) -> None:
    argv = [*cyphonic_cli(), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=tool_env())
    if done.returncode != 0:
        msg = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise LabError(f"cyphonic {' '.join(args)}: exit {done.returncode}", "\n".join(msg[-15:]))


def ca_init(ca_dir: Path, domain: str) -> None:
    """Creates ca.crt/ca.key, the AS keys, revoked.txt and cloud.toml in ca_dir."""
    _cli("ca", "init", "--dir", str(ca_dir), "--domain", domain)


TRS_KEY = "nms-trs.key"
# Every lab daemon serves Prometheus metrics here, in its own namespace: on
# loopback, which no move of the host takes away; scrape it from inside
# (`cyphonic lab exec HOST -- curl -s http://127.0.0.1:9101/metrics`).
METRICS = "127.0.0.1:9101"
TRS_CONFIG = "trs.toml"


def trs_init(ca_dir: Path, relays: dict[str, list[str]]) -> None:
    """Write the NMS-TRS key and one `<host>.toml` per relay into ca_dir,
    and tell the NMS about every relay.

    `relays` maps each TRS host to ["ADDRESS:PORT", ...] where nodes reach
    it. `cyphonic ca init` writes a trs.toml too; the lab writes its own
    per relay host, in the CA directory beside cloud.toml.
    """
    # Imported here: the lab otherwise only drives the CLI, never the key hierarchy.
    from cyphonic import crypto, keys

    keys.write_secret(ca_dir / TRS_KEY, crypto.random_key())
    for host, public in relays.items():
        (ca_dir / f"{host}.toml").write_text(
            _toml(
                {
                    "listen": ["0.0.0.0:7002", "[::]:7002"],
                    "public": list(public),
                    "nms_key": TRS_KEY,
                    "metrics": METRICS,
                }
            )
        )
    # the NMS reaches each relay at its first (IPv4) address
    config = tomllib.loads((ca_dir / "cloud.toml").read_text())
    config.setdefault("nms", {}).update({"trs": [p[0] for p in relays.values()], "trs_key": TRS_KEY})
    (ca_dir / "cloud.toml").write_text(_toml(config))


def enroll_node(
    name: str, ca_dir: Path, out: Path, clouds: list[str], start: str | None = None, days: int | None = None
) -> Path:
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


def enroll_adapter(
    name: str, ca_dir: Path, out: Path, clouds: list[str], lan: str | None, general: list[tuple[str, str, bool]]
) -> Path:
    """Writes adapter.toml and general/<name>.{key,crt} to `out`; returns adapter.toml.

    `general` lists the adapter's general nodes as (MAC, name, enrolled with IPv6).
    """
    args = ["enroll", "adapter", name, "--ca", str(ca_dir), "--out", str(out)]
    for addr in clouds:
        args += ["--cloud", addr]
    if lan:
        args += ["--lan", lan]
    for mac, node, ipv6 in general:
        args += ["--general-node", f"{mac}={node}{',ipv6' if ipv6 else ''}"]
    _cli(*args)
    return out / "adapter.toml"


def enroll_lab(topology: Topology, paths: LabPaths, changes: dict[str, object]) -> None:
    """The CA, the relays, every node and every adapter (with its general
    nodes) of the topology; `changes` go into each node.toml and adapter.toml."""
    ca_init(paths.ca, topology.domain)
    cloud = paths.ca / "cloud.toml"
    cloud.write_text(_toml({"metrics": METRICS, **tomllib.loads(cloud.read_text())}))
    changes = {"metrics": METRICS, **changes}
    relays = topology.with_role(Role.TRS)
    if relays:
        trs_init(paths.ca, {h.name: trs_public(topology, h.name) for h in relays})
    for host in topology.with_role(Role.NODE):
        config = enroll_node(host.name, paths.ca, paths.bundle(host.name), topology.cloud_addresses_for(host.name))
        derive_node_config(config, config, changes)
    for host in topology.with_role(Role.ADAPTER):
        general = []
        for node, port in topology.general_nodes(host.name):
            if port.mac is None:
                raise LabError(f"{node.name}: a general node needs a fixed MAC on {port.ifname}")
            general.append((port.mac, node.name, node.ipv6))
        clouds = topology.cloud_addresses_for(host.name)
        config = enroll_adapter(host.name, paths.ca, paths.bundle(host.name), clouds, host.lan, general)
        derive_node_config(config, config, changes)


def revoke(ca_dir: Path, certfile: Path) -> None:
    _cli("ca", "revoke", "--ca", str(ca_dir), str(certfile))


def derive_node_config(src: Path, dst: Path, changes: dict[str, object]) -> Path:
    """Copy a node.toml with some keys changed ("resolver.listen" for a table's key).

    Lets a second daemon run in a namespace that already has one: it needs
    its own UDP port, TUN name and resolver address. Relative paths in the
    file are resolved against its own directory, so `dst` sits beside `src`
    unless the bundle's files are copied too.
    """
    config = tomllib.loads(src.read_text())
    for dotted, value in changes.items():
        *tables, key = dotted.split(".")
        where = config
        for t in tables:
            where = where.setdefault(t, {})
        where[key] = value
    dst.write_text(_toml(config))
    return dst


def _toml(config: dict) -> str:
    """TOML for the shapes node.toml and adapter.toml use: scalars and lists,
    one level of tables; deeper tables and tables in a list are written inline."""
    top = [f"{_key(k)} = {_value(v)}" for k, v in config.items() if not isinstance(v, dict)]
    tables = [
        f"\n[{_key(k)}]\n" + "".join(f"{_key(kk)} = {_value(vv)}\n" for kk, vv in v.items())
        for k, v in config.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n" + "".join(tables)


def _key(k: str) -> str:
    # A MAC address as a key ("02:00:5e:10:00:01") must be quoted.
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
