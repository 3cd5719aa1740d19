"""The Signaling Module's logic, one machine per identity (sans I/O)."""

from cyphonic.core.signaling.events import (
    Event,
    LoggedIn,
    LoginRefused,
    PunchFinished,
    Registered,
    RegistrationDue,
    RegistrationFailed,
    RouteDirected,
    RouteFailed,
    RouteSelected,
    Send,
    SendOnTunnel,
    TunnelEstablished,
)
from cyphonic.core.signaling.machine import SignalingMachine
from cyphonic.core.signaling.routes import RouteError

__all__ = [
    "Event",
    "LoggedIn",
    "LoginRefused",
    "PunchFinished",
    "Registered",
    "RegistrationDue",
    "RegistrationFailed",
    "RouteDirected",
    "RouteError",
    "RouteFailed",
    "RouteSelected",
    "Send",
    "SendOnTunnel",
    "SignalingMachine",
    "TunnelEstablished",
]
