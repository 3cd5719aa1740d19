"""The cloud configuration file shared by `cyphonic.auth`, `cyphonic.nms`
and `cyphonic.cloud`, and the builders of both services from it."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

from cyphonic import config as c
from cyphonic import control, crypto
from cyphonic.auth.service import AuthenticationService
from cyphonic.nms.service import NodeManagementService
from cyphonic.errors import CyphonicError
from cyphonic.store import Store

log = logging.getLogger("cyphonic.cloud")

SCHEMA: c.Schema = {
    "domain": c.Key(c.text),
    "log_level": c.Key(c.text, "INFO"),
    "auth": {
        "listen": c.Key(c.addresses, [("0.0.0.0", 7000), ("::", 7000)]),
        "ca": c.Key(c.path, None),
        "certificate": c.Key(c.path),
        "key": c.Key(c.path),
        "nms_key": c.Key(c.path),
        "revoked": c.Key(c.path, None),
        "database": c.Key(c.path),
        "vip4_pool": c.Key(c.network(4), None),
        "vip6_pool": c.Key(c.network(6), None),
        "ticket_lifetime": c.Key(c.integer(60, 30 * 86400), 86400),
    },
    "nms": {
        "listen": c.Key(c.addresses, [("0.0.0.0", 7001), ("::", 7001)]),
        "nms_key": c.Key(c.path),
        "refresh": c.Key(c.integer(1, 3600), 10),
        "trs": c.Key(c.addresses, []),  # Tunnel Relay Services the NMS may assign
        "trs_key": c.Key(c.path, None),  # NMS–TRS key, shared with every TRS
    },
    # `python -m cyphonic.cloud` can run a TRS in the same process (list its
    # public addresses in [nms] trs too)
    "trs": {
        "enabled": c.Key(c.boolean, False),
        "listen": c.Key(c.addresses, [("0.0.0.0", 7002), ("::", 7002)]),
        "public": c.Key(c.addresses, []),
        "nms_key": c.Key(c.path, None),
    },
    # besides root and the daemon's uid, members of this group (name or
    # gid) may read the status of the cloud and its embedded TRS
    "control_group": c.Key(control.existing_group, ""),
}

DEFAULT_VIP4 = "10.96.0.0/16"
DEFAULT_VIP6 = "fd7c:1f00::/64"


def read_secret(path: Path) -> bytes:
    key = base64.b64decode(Path(path).read_text().strip())
    if len(key) != 32:
        raise ValueError(f"{path}: not a 32-byte key")
    return key


def write_secret(path: Path, key: bytes) -> None:
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)


def read_certificate(path: Path) -> bytes:
    return crypto.certificate_from_pem(Path(path).read_text())


class RevocationListError(CyphonicError):
    """revoked.txt exists but cannot be read or parsed."""


class RevocationList:
    """Serials from a text file (one per line, '#' comments), re-read when
    it changes, so `cyphonic ca revoke` takes effect at the next login.

    A file that cannot be read or parsed fails closed: every call raises
    until it is fixed (the AS then refuses every login and the NMS every
    request), never an empty list that would let revoked nodes back in."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._serials: frozenset[int] = frozenset()
        self._error: str | None = None

    def __call__(self) -> frozenset[int]:
        if self.path is None:
            return self._serials
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return frozenset()  # nothing was ever revoked
        except OSError as exc:
            raise RevocationListError(f"{self.path}: {exc.strerror}") from None
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self._serials, self._error = _serials(self.path.read_text()), None
            except (OSError, UnicodeError, ValueError) as exc:
                self._error = f"{self.path}: {exc}"
                log.error("revocation list unreadable, failing closed until it is fixed: %s", self._error)
        if self._error is not None:
            raise RevocationListError(self._error)
        return self._serials


def _serials(text: str) -> frozenset[int]:
    out = set()
    for number, line in enumerate(text.splitlines(), 1):
        word = line.split("#")[0].strip()
        if not word:
            continue
        if not word.isdigit() or int(word) >= 1 << 64:
            raise ValueError(f"line {number}: {word[:40]!r} is not a certificate serial")
        out.add(int(word))
    return frozenset(out)


def build_auth(cfg: dict[str, Any]) -> AuthenticationService:
    import ipaddress

    a = cfg["auth"]
    certificate = read_certificate(a["certificate"])
    ca_path = a["ca"] or Path(a["certificate"]).with_name("ca.crt")
    ca_cert = crypto.ca_public_key(read_certificate(ca_path))
    store = Store(
        a["database"],
        a["vip4_pool"] or ipaddress.ip_network(DEFAULT_VIP4),
        a["vip6_pool"] or ipaddress.ip_network(DEFAULT_VIP6),
    )
    return AuthenticationService(
        identity=crypto.Identity.load(a["key"]),
        certificate=certificate,
        ca_public=ca_cert,
        store=store,
        domain=cfg["domain"],
        nms_key=read_secret(a["nms_key"]),
        revoked=RevocationList(a["revoked"]),
        ticket_lifetime=a["ticket_lifetime"],
    )


def build_nms(cfg: dict[str, Any]) -> NodeManagementService:
    n = cfg["nms"]
    trs_key = read_secret(n["trs_key"]) if n["trs_key"] else None
    return NodeManagementService(
        read_secret(n["nms_key"]), refresh=n["refresh"], trs=n["trs"], trs_key=trs_key,
        revoked=RevocationList(cfg["auth"]["revoked"]),
    )


def build_trs(cfg: dict[str, Any]):
    """The embedded TRS of `python -m cyphonic.cloud` ([trs] enabled)."""
    from cyphonic.core.relay import RelayService

    t = cfg["trs"]
    if not t["public"]:
        raise ValueError("trs.public: must list where nodes reach the TRS")
    key_path = t["nms_key"] or cfg["nms"]["trs_key"]
    if key_path is None:
        raise ValueError("trs.nms_key: the NMS–TRS key is needed")
    return RelayService(read_secret(key_path), t["public"])
