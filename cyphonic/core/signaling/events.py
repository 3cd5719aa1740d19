"""What the Signaling machine tells its driver: events (something happened)
and actions (something to send). Small immutable classes named after the
seed's sequences, in the manner of h11's events."""

from __future__ import annotations

from dataclasses import dataclass

from cyphonic.core import tunnel as core
from cyphonic.core.login import Grant

Address = tuple[str, int]


class Event:
    """Base of everything `SignalingMachine.next_event` returns."""


@dataclass(frozen=True)
class LoggedIn(Event):
    grant: Grant


@dataclass(frozen=True)
class LoginRefused(Event):
    """Signed by an AS of our CA: retrying cannot help."""

    reason: str


@dataclass(frozen=True)
class RegistrationDue(Event):
    """Time to (re-)register: the driver answers with `register(now, locators)`,
    since only it can read the host's addresses."""


@dataclass(frozen=True)
class Registered(Event):
    family: str  # "ipv4" | "ipv6"
    observed: str
    nat: bool
    first: bool


@dataclass(frozen=True)
class RegistrationFailed(Event):
    family: str
    reason: str


@dataclass(frozen=True)
class TunnelEstablished(Event):
    """A new tunnel for the data plane to install and supervise."""

    tunnel: core.Tunnel


@dataclass(frozen=True)
class RouteDirected(Event):
    """The NMS named the path to `fqdn`; its tunnel is being established
    (RouteSelected or RouteFailed follows)."""

    fqdn: str
    peer: core.PeerInfo


@dataclass(frozen=True)
class RouteSelected(Event):
    fqdn: str
    peer: core.PeerInfo


@dataclass(frozen=True)
class RouteFailed(Event):
    fqdn: str
    reason: str
    unknown: bool = False  # the NMS knows no such node (NXDOMAIN, not SERVFAIL)


@dataclass(frozen=True)
class PunchFinished(Event):
    tunnel: core.Tunnel
    address: Address
    direct: bool  # the punch got through: the tunnel left the TRS


@dataclass(frozen=True)
class Send:
    """A signaling datagram for the shared UDP socket of dest's family."""

    datagram: bytes
    dest: Address


@dataclass(frozen=True)
class SendOnTunnel:
    """A control capsule (Keep Alive, Tunnel Update) sealed by the data plane
    under the tunnel's End Key: to its endpoint, or straight to `to` (a
    punch), with `ttl` limiting how far it goes."""

    tunnel: core.Tunnel
    type: int
    body: bytes
    to: Address | None = None
    ttl: int | None = None
