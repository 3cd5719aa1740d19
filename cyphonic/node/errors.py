"""Why a route to a peer could not be had (the Resolver turns them into DNS answers)."""


class UnknownPeer(Exception):
    pass


class RouteError(Exception):
    pass
