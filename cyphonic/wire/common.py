"""Pieces shared by every protocol: message types, locators, parse/build."""

from __future__ import annotations

import ipaddress
from typing import Any

from construct import (
    Bytes,
    Construct,
    ConstructError,
    Enum,
    Error,
    Int8ub,
    Int16ub,
    PascalString,
    Struct,
    Switch,
    this,
)

from cyphonic.errors import ParseError

# One byte opens every datagram on a CYPHONIC socket, so one socket per
# address family can carry login, registration, tunnels and data (DESIGN 3.2).
MessageType = Enum(
    Int8ub,
    LoginRequest=0x01,
    LoginResponse=0x02,
    LoginReject=0x03,
    NodeInformationRequest=0x04,  # an adapter asks the AS for its general nodes
    NodeInformationResponse=0x05,
    RegistrationRequest=0x10,
    RegistrationResponse=0x11,
    DirectionRequest=0x12,
    RouteDirection=0x13,
    RouteDirectionToCN=0x14,
    RouteDirectionAck=0x15,
    SignalingError=0x16,
    TunnelRequest=0x20,
    TunnelResponse=0x21,
    CapsuleMessage=0x30,
    KeepAlive=0x31,
    KeepAliveAck=0x32,
    TunnelUpdate=0x33,
    RekeyRequest=0x34,
    RekeyResponse=0x35,
    TunnelUpdateAck=0x36,
    RelayRequest=0x40,
    RelayResponse=0x41,
    Relayed=0x42,
)

# Numeric values, for the hot path and for demultiplexing without construct.
TYPE = {str(name): int(value) for name, value in MessageType.encmapping.items()}

Fqdn = PascalString(Int8ub, "ascii")

Locator = Struct(
    "family" / Enum(Int8ub, ipv4=4, ipv6=6),
    "address" / Switch(this.family, {"ipv4": Bytes(4), "ipv6": Bytes(16)}, default=Error),
    "port" / Int16ub,
)

# Longest datagram any listener accepts; larger ones are dropped unread.
MAX_DATAGRAM = 65535


def parse(schema: Construct, data: bytes) -> Any:
    """Parse `data` with `schema`; any failure becomes ParseError."""
    try:
        return schema.parse(data)
    except (ConstructError, UnicodeError, ValueError, OverflowError, TypeError) as exc:
        raise ParseError(f"{getattr(schema, 'name', None) or 'message'}: {exc}") from None


def build(schema: Construct, value: Any) -> bytes:
    """Build bytes from `value`; a value that does not fit is a bug (raises)."""
    return schema.build(value)


def locator(address: str, port: int) -> dict:
    """A Locator value from a textual address and a port."""
    ip = ipaddress.ip_address(address)
    family = "ipv4" if ip.version == 4 else "ipv6"
    return {"family": family, "address": ip.packed, "port": port}


def locator_text(value: Any) -> tuple[str, int]:
    """(address, port) of a parsed Locator."""
    return str(ipaddress.ip_address(bytes(value.address))), int(value.port)
