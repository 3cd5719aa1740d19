"""DHCPv6 messages (RFC 8415) between the adapter and its general nodes.

A client/server message is msg-type, a 3-octet transaction id and options
(RFC 8415 §8); every option is code, length, data (§21.1). Options nest:
an IA_NA carries IA Address and Status Code options (§21.4, §21.6), an IA
Address may carry a Status Code (§21.6). Relay messages (§9) have another
layout; the adapter serves its own link only and never parses them.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv6Address
from typing import Any

import dns.name
from construct import (
    Bytes,
    ExprAdapter,
    GreedyBytes,
    GreedyRange,
    GreedyString,
    Int8ub,
    Int16ub,
    Int24ub,
    Int32ub,
    Prefixed,
    Struct,
    Terminated,
)

from cyphonic.wire.dhcp import decode_names

CLIENT_PORT = 546
SERVER_PORT = 547
ALL_DHCP_RELAY_AGENTS_AND_SERVERS = IPv6Address("ff02::1:2")  # §7.1

# msg-type (§7.3)
SOLICIT = 1
ADVERTISE = 2
REQUEST = 3
CONFIRM = 4
RENEW = 5
REBIND = 6
REPLY = 7
RELEASE = 8
DECLINE = 9
RECONFIGURE = 10
INFORMATION_REQUEST = 11
RELAY_FORW = 12
RELAY_REPL = 13

# option codes (§21, RFC 3646)
CLIENTID = 1
SERVERID = 2
IA_NA = 3
IA_TA = 4
IAADDR = 5
ORO = 6
ELAPSED_TIME = 8
STATUS_CODE = 13
RAPID_COMMIT = 14
DNS_SERVERS = 23
DOMAIN_LIST = 24
IA_PD = 25

# status codes (§21.13)
SUCCESS = 0
UNSPEC_FAIL = 1
NO_ADDRS_AVAIL = 2
NO_BINDING = 3
NOT_ON_LINK = 4
USE_MULTICAST = 5

DUID_LL = 3  # DUID based on link-layer address (§11.4)
HTYPE_ETHERNET = 1

IPv6 = ExprAdapter(Bytes(16), lambda obj, ctx: IPv6Address(bytes(obj)), lambda obj, ctx: IPv6Address(obj).packed)

Option = Struct(
    "code" / Int16ub,
    "data" / Prefixed(Int16ub, GreedyBytes),
)

Options = GreedyRange(Option)

# A truncated last option leaves bytes GreedyRange cannot take: Terminated refuses them.
Message = Struct(
    "msg_type" / Int8ub,
    "transaction_id" / Int24ub,
    "options" / Options,
    Terminated,
)

IaNa = Struct(  # §21.4
    "iaid" / Int32ub,
    "t1" / Int32ub,
    "t2" / Int32ub,
    "options" / Options,
    Terminated,
)

IaAddress = Struct(  # §21.6
    "address" / IPv6,
    "preferred" / Int32ub,
    "valid" / Int32ub,
    "options" / Options,
    Terminated,
)

StatusCode = Struct(  # §21.13
    "status" / Int16ub,
    "message" / GreedyString("utf8"),
)

OptionRequest = Struct("codes" / GreedyRange(Int16ub), Terminated)  # §21.7

ElapsedTime = Struct("centiseconds" / Int16ub, Terminated)  # §21.9

DnsServers = Struct("servers" / GreedyRange(IPv6), Terminated)  # RFC 3646 §3

DuidLinkLayer = Struct("type" / Int16ub, "htype" / Int16ub, "address" / GreedyBytes)  # §11.4


def option(code: int, data: bytes) -> dict[str, Any]:
    """One option value for `Message.build` (and the nested schemas)."""
    return {"code": code, "data": data}


def options_of(options: Iterable[Any]) -> dict[int, list[bytes]]:
    """Parsed options by code; a code may repeat (several IA_NA), so each maps to its values in order."""
    found: dict[int, list[bytes]] = {}
    for item in options:
        found.setdefault(item.code, []).append(bytes(item.data))
    return found


def duid_ll(mac: bytes) -> bytes:
    """The DUID-LL of an Ethernet interface (§11.4): stable, no clock, no state to keep."""
    return DuidLinkLayer.build({"type": DUID_LL, "htype": HTYPE_ETHERNET, "address": mac})


def encode_domain_list(names: Iterable[str]) -> bytes:
    """Option 24's value: the names in DNS wire format, uncompressed (RFC 8415 §10)."""
    return b"".join(dns.name.from_text(name).to_wire() or b"" for name in names)


def decode_domain_list(data: bytes) -> list[str]:
    """The names in an option 24 value."""
    return decode_names(data, "domain list")
