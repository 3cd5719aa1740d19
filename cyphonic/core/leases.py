"""What the adapter's DHCP servers remember and tell (shared by DHCPv4 and
DHCPv6): the lease events, the persistent DHCPv4 lease table, the
bounded memory of unknown MACs, and the messages held for a login.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Generic, TypeVar

from cyphonic.drops import Drops
from cyphonic.errors import ParseError

IPAddress = IPv4Address | IPv6Address
Message = TypeVar("Message")
Address = TypeVar("Address", IPv4Address, IPv6Address)
Reply = TypeVar("Reply")

HOLD = 60.0  # seconds a message waits for its node's login, and AddressNeeded is not repeated


@dataclass(frozen=True)
class LeaseGranted:
    """`mac` holds `address` until `expires` (the clock of `now`); renewals emit it again."""

    mac: bytes
    address: IPAddress
    expires: float


@dataclass(frozen=True)
class LeaseReleased:
    """The lease ended: released by the client or expired."""

    mac: bytes
    address: IPAddress


@dataclass(frozen=True)
class LeaseDeclined:
    """The client found `address` in use on the LAN (ARP) and gave it back; the lease ended."""

    mac: bytes
    address: IPAddress


@dataclass(frozen=True)
class AddressNeeded:
    """A known general node asks for its address, which is not known yet: log its identity in."""

    mac: bytes


Event = LeaseGranted | LeaseReleased | LeaseDeclined | AddressNeeded


@dataclass(frozen=True)
class Lease:
    address: IPv4Address
    expires: float


class Leases(MutableMapping[bytes, Lease]):
    """The DHCPv4 leases by client MAC. `expires` is in the server's `now`
    clock, so a driver that saves them across restarts passes wall-clock time."""

    def __init__(self, leases: dict[bytes, Lease] | None = None) -> None:
        self._by_mac: dict[bytes, Lease] = dict(leases or {})

    def __getitem__(self, mac: bytes) -> Lease:
        return self._by_mac[mac]

    def __setitem__(self, mac: bytes, lease: Lease) -> None:
        self._by_mac[mac] = lease

    def __delitem__(self, mac: bytes) -> None:
        del self._by_mac[mac]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._by_mac)

    def __len__(self) -> int:
        return len(self._by_mac)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON; a crash mid-write leaves the old file whole
        (a temporary file in the same directory, then os.replace)."""
        path = Path(path)
        entries = [
            {"mac": mac.hex(":"), "address": str(lease.address), "expires": lease.expires}
            for mac, lease in self._by_mac.items()
        ]
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump({"version": 1, "leases": entries}, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Leases:
        """The table saved at `path`; empty if there is none; ParseError if it is corrupt."""
        try:
            text = Path(path).read_text()
        except FileNotFoundError:
            return cls()
        try:
            data = json.loads(text)
            if data["version"] != 1:
                raise ValueError(f"version {data['version']}")
            leases = {}
            for entry in data["leases"]:
                mac = bytes.fromhex(entry["mac"].replace(":", ""))
                expires = float(entry["expires"])
                if len(mac) != 6 or not math.isfinite(expires):
                    raise ValueError(f"lease {entry}")
                leases[mac] = Lease(IPv4Address(entry["address"]), expires)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ParseError(f"{path}: {exc!r}") from None
        return cls(leases)


class Strangers:
    """Unknown MACs: every message is counted, the first from each MAC is
    logged (rate-limited by Drops). Only the last `size` MACs are
    remembered, so a storm from random MACs costs a fixed amount of memory."""

    def __init__(self, drops: Drops, size: int = 256) -> None:
        self._drops = drops
        self._size = size
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, mac: object) -> bool:
        return mac in self._seen

    def saw(self, mac: bytes) -> None:
        if mac in self._seen:
            self._seen.move_to_end(mac)
            self._drops.counts["unknown MAC"] += 1
            return
        self._seen[mac] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        self._drops("unknown MAC", mac.hex(":"))


class Waiting(Generic[Message]):
    """Messages from known general nodes whose address is not known yet
    (their identity is logging in): only the latest per MAC, for HOLD
    seconds; a client retransmits anyway, and the latest is the one it waits for."""

    def __init__(self) -> None:
        self._held: dict[bytes, tuple[Message, float]] = {}
        self._asked: dict[bytes, float] = {}  # when the address was last asked for, per MAC

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, mac: bytes, message: Message, now: float) -> bool:
        """Keep `message`; True if the address must be asked for (not asked within HOLD)."""
        self._held[mac] = (message, now)
        asked = self._asked.get(mac)
        if asked is not None and now - asked < HOLD:
            return False
        self._asked[mac] = now
        return True

    def ready(self, mac: bytes, now: float) -> Message | None:
        """The message held for `mac`, unless it is too old to answer."""
        self._asked.pop(mac, None)
        held = self._held.pop(mac, None)
        return held[0] if held is not None and now - held[1] <= HOLD else None

    def expire(self, now: float) -> None:
        self._held = {mac: held for mac, held in self._held.items() if now - held[1] <= HOLD}
        self._asked = {mac: asked for mac, asked in self._asked.items() if now - asked <= HOLD}


class Gate(Generic[Message, Address]):
    """What the DHCPv4 and DHCPv6 servers do alike before they answer a
    message: drop those from unknown MACs (`Strangers`), and hold those from
    known general nodes whose address is not known yet (`Waiting`), asking
    for it with AddressNeeded, until `address_ready` answers them."""

    def __init__(
        self,
        drops: Drops,
        counters: Counter[str],
        events: deque[Event],
        known: Callable[[bytes], bool],
        address_of: Callable[[bytes], Address | None],
    ) -> None:
        self.known = known
        self.address_of: Callable[[bytes], Address | None] = address_of
        self.unknown = Strangers(drops)
        self.waiting: Waiting[Message] = Waiting()
        self._counters = counters
        self._events = events

    def stranger(self, mac: bytes) -> bool:
        """True, and counted, if `mac` is no known general node."""
        if self.known(mac):
            return False
        self.unknown.saw(mac)
        return True

    def address(self, mac: bytes, message: Message, now: float) -> Address | None:
        """`mac`'s address; if it is not known yet, `message` is held and the address asked for."""
        address = self.address_of(mac)
        if address is None:
            self._counters["held"] += 1
            if self.waiting.hold(mac, message, now):
                self._events.append(AddressNeeded(mac))
        return address

    def ready(self, mac: bytes, now: float, handle: Callable[[Message, float], list[Reply]]) -> list[Reply]:
        """`mac`'s identity logged in: `handle` the message held for it, if any."""
        held = self.waiting.ready(mac, now)
        return [] if held is None else handle(held, now)
