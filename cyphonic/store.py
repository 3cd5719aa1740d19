"""SQLite persistence for the AS: enrollments and virtual-IP assignments.

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
"""


@dataclass(frozen=True)
class Enrollment:
    fqdn: str
    serial: int
    vip4: ipaddress.IPv4Address
    vip6: ipaddress.IPv6Address


class PoolExhausted(Exception):
    pass


class Store:
    def __init__(self, path: Path | str, vip4_pool, vip6_pool) -> None:
        # The AS calls this from its event loop: a locked database must fail
        # fast (the node is told "unavailable" and retries), not stall every
        # other datagram for sqlite's default 5 s.
        self._db = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT)
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
        self._db.execute("BEGIN IMMEDIATE")
        try:
            vip4, vip6 = self._next_free()
            self._db.execute(
                "INSERT INTO enrollment VALUES (?, ?, ?, ?, ?, ?, ?)",
                (fqdn, serial, sign_key, str(vip4), str(vip6), now, now),
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

    @staticmethod
    def _row(row) -> Enrollment:
        return Enrollment(row[0], row[1], ipaddress.IPv4Address(row[2]), ipaddress.IPv6Address(row[3]))
