"""Why a route to a peer could not be had (the Resolver turns them into DNS answers)."""

from cyphonic.core.signaling.routes import RouteError


class UnknownPeer(RouteError):
    """The NMS knows no node of that name (NXDOMAIN, not SERVFAIL)."""


__all__ = ["RouteError", "UnknownPeer"]
