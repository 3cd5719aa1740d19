"""scapy for the tests, imported with its import-time warnings quieted, and
the settings and helpers the scapy-checked tests share."""

from __future__ import annotations

import logging
import os

from hypothesis import settings

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)  # quiet scapy's import-time warnings

from scapy.all import (  # noqa: E402
    ARP,
    ICMP,
    IP,
    TCP,
    UDP,
    Dot1Q,
    Ether,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    IPerror,
    IPOption_Router_Alert,
    IPv6,
    IPv6ExtHdrHopByHop,
    Raw,
)
from scapy.utils6 import in6_mactoifaceid  # noqa: E402

__all__ = [
    "ARP", "ICMP", "IP", "TCP", "UDP", "Dot1Q", "Ether", "ICMPv6EchoReply", "ICMPv6EchoRequest",
    "ICMPv6ND_NA", "ICMPv6ND_NS", "ICMPv6ND_RA", "ICMPv6ND_RS", "ICMPv6NDOptDstLLAddr", "ICMPv6NDOptMTU",
    "ICMPv6NDOptPrefixInfo", "ICMPv6NDOptRDNSS", "ICMPv6NDOptSrcLLAddr", "ICMPv6PacketTooBig", "IPerror",
    "IPOption_Router_Alert", "IPv6", "IPv6ExtHdrHopByHop", "Raw", "in6_mactoifaceid", "FUZZ", "mac",
]  # fmt: skip

# how many examples each fuzz test runs (CYPHONIC_FUZZ_EXAMPLES)
FUZZ = settings(max_examples=int(os.environ.get("CYPHONIC_FUZZ_EXAMPLES", "200")), deadline=None)


def mac(text: str) -> bytes:
    """A MAC in colon notation, as bytes."""
    return bytes.fromhex(text.replace(":", ""))
