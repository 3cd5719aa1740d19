"""DHCPv4 messages (RFC 2131 §2, options RFC 2132) as the adapter's LAN port
sees them.

The fixed BOOTP head, the magic cookie, then options as TLVs: Pad (0) and
End (255) are one octet, every other option is code, length, data. The
parser tolerates what stock clients and hostile frames send: a missing End
(the options simply stop), anything after End (padding), a repeated option
(RFC 3396: the values are concatenated, `options_of`). Option Overload (52)
is not honoured: `sname` and `file` stay opaque, so options hidden there are
ignored.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from enum import IntEnum
from ipaddress import IPv4Address
from typing import Any

import dns.exception
import dns.name
from construct import (
    Bytes,
    Computed,
    Const,
    ExprAdapter,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32ub,
    Pass,
    Prefixed,
    RepeatUntil,
    Select,
    Struct,
    Switch,
    Terminated,
    this,
)

from cyphonic.errors import ParseError

SERVER_PORT = 67
CLIENT_PORT = 68

BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1  # RFC 1700 hardware type
BROADCAST = 0x8000  # the B bit of `flags` (RFC 2131 §2, figure 2)
MAGIC_COOKIE = b"\x63\x82\x53\x63"  # RFC 2131 §3

# Some BOOTP-era clients drop a message shorter than the 300 octets of the
# original BOOTP packet (RFC 1542 §2.1); replies are padded to this length.
MIN_MESSAGE = 300
# The largest message every client must accept (RFC 2131 §2: 576-octet IP
# datagram, less 20 for IPv4 and 8 for UDP), unless it says more in option 57.
DEFAULT_MAX_MESSAGE = 576 - 28

# Option codes (RFC 2132, RFC 3397)
PAD = 0
SUBNET_MASK = 1
ROUTER = 3
DNS_SERVERS = 6
HOSTNAME = 12
DOMAIN_NAME = 15
INTERFACE_MTU = 26
REQUESTED_IP = 50
LEASE_TIME = 51
OVERLOAD = 52
MESSAGE_TYPE = 53
SERVER_ID = 54
PARAMETER_REQUEST_LIST = 55
MESSAGE = 56
MAX_MESSAGE_SIZE = 57
RENEWAL_TIME = 58  # T1
REBINDING_TIME = 59  # T2
CLIENT_ID = 61
DOMAIN_SEARCH = 119
END = 255


class MessageType(IntEnum):
    """Option 53 values (RFC 2132 §9.6)."""

    DISCOVER = 1
    OFFER = 2
    REQUEST = 3
    DECLINE = 4
    ACK = 5
    NAK = 6
    RELEASE = 7
    INFORM = 8


IPv4 = ExprAdapter(Bytes(4), lambda obj, ctx: IPv4Address(bytes(obj)), lambda obj, ctx: IPv4Address(obj).packed)

# One option TLV; Pad and End have no length octet (RFC 2132 §3.1, §3.2).
Option = Struct(
    "code" / Int8ub,
    "data" / Switch(this.code, {PAD: Pass, END: Pass}, default=Prefixed(Int8ub, GreedyBytes)),
)

# Running out of bytes where the next option would start counts as End; a
# TLV cut short does not parse at all.
_EndOfData = Struct("code" / Computed(END), "data" / Computed(None), Terminated)

Options = RepeatUntil(lambda obj, lst, ctx: obj["code"] == END, Select(Option, _EndOfData))

Message = Struct(
    "op" / Int8ub,  # BOOTREQUEST or BOOTREPLY
    "htype" / Int8ub,
    "hlen" / Int8ub,
    "hops" / Int8ub,
    "xid" / Int32ub,
    "secs" / Int16ub,
    "flags" / Int16ub,
    "ciaddr" / IPv4,  # the client's address, when it has one (BOUND, RENEWING, REBINDING)
    "yiaddr" / IPv4,  # "your" address, the one the server leases
    "siaddr" / IPv4,  # next server in bootstrap
    "giaddr" / IPv4,  # relay agent
    "chaddr" / Bytes(16),  # client hardware address, first `hlen` octets
    "sname" / Bytes(64),
    "file" / Bytes(128),
    "cookie" / Const(MAGIC_COOKIE),
    "options" / Options,
    "padding" / GreedyBytes,  # after End: Pad octets, by RFC 2131 §4.1
)


def options_of(message: Any) -> dict[int, bytes]:
    """The message's options by code; an option given more than once is the
    concatenation of its parts, in order (RFC 3396 §7)."""
    found: dict[int, bytes] = {}
    for option in message.options:
        if option.code not in (PAD, END):
            found[option.code] = found.get(option.code, b"") + bytes(option.data)
    return found


def option_list(options: Iterable[tuple[int, bytes]]) -> list[dict[str, Any]]:
    """Option values for `Message.build`, End included; a value longer than
    255 octets is split into consecutive options of the same code (RFC 3396 §6)."""
    out: list[dict[str, Any]] = []
    for code, data in options:
        parts = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
        out.extend({"code": code, "data": part} for part in parts)
    out.append({"code": END, "data": None})
    return out


def addresses(data: bytes) -> list[IPv4Address]:
    """A list-of-addresses option (router, DNS servers); ParseError unless a whole number of them."""
    if not data or len(data) % 4:
        raise ParseError(f"address list of {len(data)} octets")
    return [IPv4Address(data[i : i + 4]) for i in range(0, len(data), 4)]


def address(data: bytes) -> IPv4Address:
    """A one-address option (requested IP, server identifier)."""
    if len(data) != 4:
        raise ParseError(f"address option of {len(data)} octets")
    return IPv4Address(data)


def encode_domain_search(names: Iterable[str]) -> bytes:
    """Option 119's value: the names in DNS wire format, compressed with
    pointers relative to the start of the option's data (RFC 3397 §2)."""
    wire = io.BytesIO()
    compress: dict[dns.name.Name, int] = {}
    for name in names:
        dns.name.from_text(name).to_wire(wire, compress, None)
    return wire.getvalue()


def decode_domain_search(data: bytes) -> list[str]:
    """The names in an option 119 value (compression pointers followed)."""
    return decode_names(data, "domain search")


def decode_names(data: bytes, what: str) -> list[str]:
    """Consecutive names in DNS wire format (DHCPv4 option 119, DHCPv6 option
    24), compression pointers followed; ParseError naming `what` if malformed."""
    names, current = [], 0
    try:
        while current < len(data):
            name, used = dns.name.from_wire(data, current)
            names.append(name.to_text(omit_final_dot=True))
            current += used
    except (dns.exception.DNSException, IndexError, ValueError) as exc:
        raise ParseError(f"{what}: {exc}") from None
    return names
