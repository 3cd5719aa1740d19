"""Where a lab keeps its files: /run/cyphonic-lab/<prefix>/.

/run is a tmpfs, so a reboot clears a lab the same way it clears its
namespaces. Everything a lab writes (CA, node and adapter bundles, the DHCP
clients' leases, logs, pids) lives here and `down` removes the whole directory.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/run/cyphonic-lab")

# No dash in a prefix: namespaces are "<prefix>-<host>" and host names may
# contain dashes, so the first dash must be the separator. Otherwise `down`
# for prefix "t1" would also match the lab "t1-x".
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,11}$")


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise ValueError(f"bad prefix {prefix!r}: 1-12 lowercase letters or digits, starting with a letter")
    return prefix


@dataclass(frozen=True)
class LabPaths:
    prefix: str

    @property
    def root(self) -> Path:
        return ROOT / self.prefix

    @property
    def ca(self) -> Path:
        """`cyphonic ca init` directory; also holds cloud.toml and its database."""
        return self.root / "ca"

    @property
    def cloud_config(self) -> Path:
        return self.ca / "cloud.toml"

    def trs_config(self, host: str) -> Path:
        """<host>.toml of a relay, written by the lab beside cloud.toml (it shares a key with the NMS)."""
        return self.ca / f"{host}.toml"

    @property
    def manifest(self) -> Path:
        return self.root / "lab.json"

    def bundle(self, host: str) -> Path:
        """A node's enrollment output: node.crt, node.key, ca.crt, node.toml."""
        return self.root / host

    def node_config(self, host: str) -> Path:
        return self.bundle(host) / "node.toml"

    def adapter_config(self, host: str) -> Path:
        """`cyphonic enroll adapter` writes it beside general/<name>.{key,crt}."""
        return self.bundle(host) / "adapter.toml"

    def dhcp(self, host: str) -> Path:
        """A general node's DHCP client files: its lease, pid, config and script.

        Never /var/lib/dhcp, /run or /etc/resolv.conf: those are the machine's.
        """
        return self.root / host

    def log(self, host: str) -> Path:
        return self.root / f"{host}.log"

    def pid(self, host: str) -> Path:
        return self.root / f"{host}.pid"

    @property
    def networks(self) -> Path:
        """{host: access network} of the hosts `cyphonic lab move` has moved."""
        return self.root / "networks.json"

    def write_manifest(self, topology: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest.write_text(json.dumps({"prefix": self.prefix, "topology": topology}) + "\n")

    def read_manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return None
