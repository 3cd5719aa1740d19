"""SQLite persistence for the AS: enrollments, virtual-IP assignments and
the general nodes each adapter serves.

Writes commit before the AS answers, so a `kill -9` right after a login
loses nothing the node was told.
"""

from __future__ import annotations

import ipaddress
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

BUSY_TIMEOUT = 0.25

SCHEMA = """
CREATE TABLE IF NOT EXISTS enrollment (
    fqdn TEXT PRIMARY KEY,
    serial INTEGER NOT NULL,
    sign_key BLOB NOT NULL,
    vip4 TEXT NOT NULL UNIQUE,
    vip6 TEXT NOT NULL UNIQUE,
    enrolled REAL NOT NULL,
    last_login REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS general_node (
    mac TEXT PRIMARY KEY,
    fqdn TEXT UNIQUE NOT NULL,
    adapter TEXT NOT NULL,
    ipv6 INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS general_node_adapter ON general_node (adapter);
"""

# One Node Information Response carries all of an adapter's general nodes in
# one datagram: 200 entries of at most 28 + 255 bytes (a longest FQDN) and
# the AS certificate stay under 57 KB (protocols/authentication.md).
MAX_GENERAL_NODES = 200


@dataclass(frozen=True)
class Enrollment:
    fqdn: str
    serial: int
    vip4: ipaddress.IPv4Address
    vip6: ipaddress.IPv6Address


@dataclass(frozen=True)
class GeneralNode:
    """A stock device an adapter serves: its own CYPHONIC identity (role
    `general`), known on the adapter's LAN by its MAC address."""

    mac: str  # lower-case aa:bb:cc:dd:ee:ff
    fqdn: str
    adapter: str  # the adapter's FQDN
    ipv6: bool  # the adapter serves it IPv6 too (RA, DHCPv6)


class PoolExhausted(Exception):
    pass


class GeneralNodeConflict(ValueError):
    """The MAC or the FQDN already belongs to another general node, or the
    adapter serves as many as it may."""


def canonical_mac(text: str) -> str:
    """`text` (aa:bb:cc:dd:ee:ff or AA-BB-CC-DD-EE-FF) as lower-case
    aa:bb:cc:dd:ee:ff; ValueError unless it is a unicast MAC a device can
    have (not multicast or broadcast, not all zeros)."""
    groups = text.strip().lower().replace("-", ":").split(":")
    if len(groups) != 6 or not all(len(g) == 2 and all(c in "0123456789abcdef" for c in g) for g in groups):
        raise ValueError(f"{text!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    octets = bytes(int(g, 16) for g in groups)
    if octets[0] & 1:
        raise ValueError(f"{text!r} is a multicast/broadcast address, not a device's")
    if not any(octets):
        raise ValueError(f"{text!r} is the all-zero address, not a device's")
    return ":".join(groups)


GENERAL = "mac, fqdn, adapter, ipv6"


class Store:
    def __init__(self, path: Path | str, vip4_pool, vip6_pool, timeout: float = BUSY_TIMEOUT) -> None:
        # The AS calls this from its event loop: a locked database must fail
        # fast (the node is told "unavailable" and retries), not stall every
        # other datagram for sqlite's default 5 s. The operator's CLI may wait.
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=timeout)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self.pool4 = vip4_pool
        self.pool6 = vip6_pool

    def close(self) -> None:
        self._db.close()

    def enrollments(self) -> list[Enrollment]:
        rows = self._db.execute("SELECT fqdn, serial, vip4, vip6 FROM enrollment ORDER BY fqdn")
        return [self._row(r) for r in rows]

    def lookup(self, fqdn: str) -> Enrollment | None:
        row = self._db.execute("SELECT fqdn, serial, vip4, vip6 FROM enrollment WHERE fqdn = ?", (fqdn,)).fetchone()
        return self._row(row) if row else None

    def enroll(self, fqdn: str, serial: int, sign_key: bytes, now: float | None = None) -> Enrollment:
        """The node's enrollment; virtual IPs are assigned once per FQDN and
        kept across re-enrollment with a new certificate."""
        now = time.time() if now is None else now
        existing = self.lookup(fqdn)
        if existing:
            self._db.execute(
                "UPDATE enrollment SET serial = ?, sign_key = ?, last_login = ? WHERE fqdn = ?",
                (serial, sign_key, now, fqdn),
            )
            return Enrollment(fqdn, serial, existing.vip4, existing.vip6)
        return self._insert(fqdn, serial, sign_key, now, now)

    def reserve(self, fqdn: str, now: float | None = None) -> Enrollment:
        """The virtual IPs of `fqdn`, assigned now if it has none, without a
        login (serial 0 until it logs in): an adapter learns its general
        nodes' addresses before they log in. Like `enroll`, an FQDN keeps
        them for ever."""
        existing = self.lookup(fqdn)
        if existing:
            return existing
        return self._insert(fqdn, 0, b"", time.time() if now is None else now, 0.0)

    def _insert(self, fqdn: str, serial: int, sign_key: bytes, now: float, last_login: float) -> Enrollment:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            vip4, vip6 = self._next_free()
            self._db.execute(
                "INSERT INTO enrollment VALUES (?, ?, ?, ?, ?, ?, ?)",
                (fqdn, serial, sign_key, str(vip4), str(vip6), now, last_login),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return Enrollment(fqdn, serial, vip4, vip6)

    def _next_free(self):
        used4 = {r[0] for r in self._db.execute("SELECT vip4 FROM enrollment")}
        used6 = {r[0] for r in self._db.execute("SELECT vip6 FROM enrollment")}
        # Host number n gets the n-th address of both pools, skipping the
        # network address and .1 (kept for gateways on the same prefix).
        for n in range(2, min(self.pool4.num_addresses - 1, 1 << 24)):
            v4 = self.pool4.network_address + n
            v6 = self.pool6.network_address + n
            if str(v4) not in used4 and str(v6) not in used6:
                return v4, v6
        raise PoolExhausted("virtual IP pool exhausted")

    # -- general nodes (seed: "General Node Management") ----------------------

    def add_general_node(self, mac: str, fqdn: str, adapter: str, ipv6: bool) -> GeneralNode:
        """Records `fqdn` (known by `mac`) as a general node `adapter` serves.
        Adding the same one again only updates `ipv6`; a MAC or FQDN that
        is another general node's is a GeneralNodeConflict."""
        node = GeneralNode(canonical_mac(mac), fqdn, adapter, bool(ipv6))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            conflict = self.general_node_conflict(node.mac, fqdn, adapter)
            if conflict is not None:
                raise GeneralNodeConflict(conflict)
            self._db.execute(
                "INSERT INTO general_node VALUES (?, ?, ?, ?) ON CONFLICT (mac) DO UPDATE SET ipv6 = excluded.ipv6",
                (node.mac, node.fqdn, node.adapter, int(node.ipv6)),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return node

    def general_node_conflict(self, mac: str, fqdn: str, adapter: str) -> str | None:
        """Why `fqdn` with `mac` cannot be a general node of `adapter`, or
        None (also when it already is one)."""
        mac = canonical_mac(mac)
        query = f"SELECT {GENERAL} FROM general_node WHERE mac = ? OR fqdn = ?"
        for other in map(self._general, self._db.execute(query, (mac, fqdn))):
            if (other.mac, other.fqdn, other.adapter) == (mac, fqdn, adapter):
                continue
            if other.mac == mac:
                return f"MAC {mac} is already the general node {other.fqdn} of adapter {other.adapter}"
            return f"{fqdn} is already the general node {other.mac} of adapter {other.adapter}"
        (count,) = self._db.execute(
            "SELECT COUNT(*) FROM general_node WHERE adapter = ? AND mac != ?", (adapter, mac)
        ).fetchone()
        if count >= MAX_GENERAL_NODES:
            return f"adapter {adapter} already serves {MAX_GENERAL_NODES} general nodes"
        return None

    def remove_general_node(self, key: str) -> GeneralNode | None:
        """Forgets the general node whose MAC or FQDN is `key` (its virtual
        IPs stay reserved for its FQDN); the one removed, or None."""
        node = self.general_node(key)
        if node is not None:
            self._db.execute("DELETE FROM general_node WHERE mac = ?", (node.mac,))
        return node

    def general_node(self, key: str) -> GeneralNode | None:
        """The general node whose MAC or FQDN is `key`."""
        try:
            mac = canonical_mac(key)
        except ValueError:
            return self.general_node_by_fqdn(key)
        row = self._db.execute(f"SELECT {GENERAL} FROM general_node WHERE mac = ?", (mac,)).fetchone()
        return self._general(row) if row else None

    def general_node_by_fqdn(self, fqdn: str) -> GeneralNode | None:
        row = self._db.execute(f"SELECT {GENERAL} FROM general_node WHERE fqdn = ?", (fqdn,)).fetchone()
        return self._general(row) if row else None

    def general_nodes(self, adapter: str | None = None) -> list[GeneralNode]:
        """The general nodes `adapter` (an FQDN) serves; every adapter's if None."""
        if adapter is None:
            rows = self._db.execute(f"SELECT {GENERAL} FROM general_node ORDER BY adapter, fqdn")
        else:
            rows = self._db.execute(f"SELECT {GENERAL} FROM general_node WHERE adapter = ? ORDER BY fqdn", (adapter,))
        return [self._general(r) for r in rows]

    @staticmethod
    def _general(row) -> GeneralNode:
        return GeneralNode(row[0], row[1], row[2], bool(row[3]))

    @staticmethod
    def _row(row) -> Enrollment:
        return Enrollment(row[0], row[1], ipaddress.IPv4Address(row[2]), ipaddress.IPv6Address(row[3]))
