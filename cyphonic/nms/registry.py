"""Where each node is (seed: "Registration process"), sans I/O: the NMS's
soft state, rebuilt by the nodes' refreshes after a restart.

A registration names the address the NMS sees (NAT detection: the node's
own locators do not include it) per address family. All of a node's
registrations are ordered by (ticket issued, sequence), checked before
anything changes, so a replay under an older ticket, or an older
registration from any family, never moves a locator. A revoked
certificate's registration is forgotten as soon as the NMS sees the serial
listed.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cyphonic.core.route import Attachment, Endpoints
from cyphonic.drops import Drops
from cyphonic.errors import CyphonicError
from cyphonic.wire.common import locator_text

log = logging.getLogger("cyphonic.nms")

Address = tuple[str, int]


@dataclass
class Registration:
    fqdn: str
    vip4: bytes
    vip6: bytes
    session_key: bytes
    serial: int
    # (ticket issued, registration sequence): a registration must be newer
    # in this order than every one accepted, whatever family it comes from
    freshness: tuple[int, int] = (-1, -1)
    endpoints: Endpoints = field(default_factory=Endpoints)
    seen: dict[str, float] = field(default_factory=dict)


class Registry:
    def __init__(self, refresh: int, revoked: Callable[[], frozenset[int]], drops: Drops) -> None:
        self.refresh = refresh
        self.revoked = revoked
        self.drops = drops
        self.nodes: dict[str, Registration] = {}

    def register(self, ticket: Any, body: Any, source: Address, now: float) -> bool | None:
        """Record a Registration Request's body: whether the node is behind
        NAT, or None if it is stale (then nothing changed)."""
        family = "ipv6" if ":" in source[0] else "ipv4"
        reg = self.nodes.get(ticket.fqdn)
        freshness = (int(ticket.issued), int(body.sequence))
        if reg is not None and freshness <= reg.freshness:
            self.drops("stale registration", source, ticket.fqdn)
            return None
        if reg is None or reg.session_key != bytes(ticket.session_key):
            # a newer ticket (a fresh login): its key seals what we send the
            # node from now on; the locators other families told us stay
            new = Registration(
                ticket.fqdn, bytes(ticket.vip4), bytes(ticket.vip6), bytes(ticket.session_key), int(ticket.serial)
            )
            if reg is not None:
                new.endpoints, new.seen = reg.endpoints, reg.seen
            reg = self.nodes[ticket.fqdn] = new
        reg.freshness = freshness
        reported = {locator_text(loc) for loc in body.locators}
        nat = source not in reported
        previous = reg.endpoints.by_family.get(family)
        reg.endpoints.by_family[family] = Attachment(observed=source, nat=nat)
        reg.seen[family] = now
        # a family the node reports no address in any more (it moved to a
        # network without it): peers must not be sent there
        held = {"ipv6" if ":" in host else "ipv4" for host, _ in reported} | {family}
        for gone in set(reg.endpoints.by_family) - held:
            del reg.endpoints.by_family[gone]
            reg.seen.pop(gone, None)
            log.info("%s has no %s address any more: that attachment is forgotten", ticket.fqdn, gone)
        if previous is None or previous.observed != source:
            log.info("registered %s %s at %s%s", ticket.fqdn, family, source, " (behind NAT)" if nat else "")
        return nat

    def live(self, fqdn: str, now: float) -> Registration | None:
        """A registration refreshed within three refresh intervals, of a
        certificate not revoked since."""
        reg = self.nodes.get(fqdn)
        if reg is None:
            return None
        try:
            if reg.serial in self.revoked():
                self.forget(fqdn, reg.serial)
                return None
        except CyphonicError:
            return None  # fail closed: nobody is routable until the list is fixed
        for family, seen in list(reg.seen.items()):
            if now - seen > 3 * self.refresh:
                reg.endpoints.by_family.pop(family, None)
                del reg.seen[family]
        return reg if reg.endpoints.by_family else None

    def forget(self, fqdn: str, serial: int) -> None:
        reg = self.nodes.get(fqdn)
        if reg is not None and reg.serial == serial:
            del self.nodes[fqdn]
            log.warning("%s: certificate serial %d revoked, registration removed", fqdn, serial)

    def status(self, now: float) -> list[dict]:
        out = []
        for fqdn in sorted(self.nodes):
            reg = self.live(fqdn, now)
            if reg is None:
                continue
            out.append(
                {
                    "fqdn": fqdn,
                    "vip4": str(ipaddress.IPv4Address(reg.vip4)),
                    "vip6": str(ipaddress.IPv6Address(reg.vip6)),
                    "attachments": {
                        fam: {"observed": f"{a.observed[0]}:{a.observed[1]}", "nat": a.nat}
                        for fam, a in reg.endpoints.by_family.items()
                    },
                }
            )
        return out
