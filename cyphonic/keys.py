"""Files of the key hierarchy: secret keys, certificates (PEM) and the
revocation list. File formats only; the keys themselves are `crypto`'s.

Every program reads its keys through this module, so reading one key never
loads another program's service (the node and the TRS need neither the AS
nor SQLite).
"""

from __future__ import annotations

import base64
import binascii
import logging
from pathlib import Path

from cyphonic.errors import CyphonicError, ParseError

log = logging.getLogger("cyphonic.keys")

PEM_HEAD = "-----BEGIN CYPHONIC CERTIFICATE-----"
PEM_TAIL = "-----END CYPHONIC CERTIFICATE-----"


def read_secret(path: Path) -> bytes:
    """A 32-byte symmetric key (AS–NMS, NMS–TRS), base64 on one line."""
    key = base64.b64decode(Path(path).read_text().strip())
    if len(key) != 32:
        raise ValueError(f"{path}: not a 32-byte key")
    return key


def write_secret(path: Path, key: bytes) -> None:
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)


def certificate_to_pem(data: bytes) -> str:
    b64 = base64.encodebytes(data).decode().strip()
    return f"{PEM_HEAD}\n{b64}\n{PEM_TAIL}\n"


def certificate_from_pem(text: str) -> bytes:
    inner = text.strip().removeprefix(PEM_HEAD).removesuffix(PEM_TAIL)
    try:
        return base64.b64decode("".join(inner.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ParseError("certificate: not valid base64") from None


def read_certificate(path: Path) -> bytes:
    """The certificate's bytes (not verified: `crypto.verify_certificate`)."""
    return certificate_from_pem(Path(path).read_text())


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
