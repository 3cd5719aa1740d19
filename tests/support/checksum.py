"""The tests' checksum oracle: RFC 1071, written apart from the product's.

`cyphonic/core/checksum.py` reduces a whole buffer as one big-endian integer
modulo 0xFFFF. This oracle adds the buffer as host-order 64-bit words and
folds the carries back in (RFC 1071 section 2: (B) byte order independence,
(C) parallel summation, (D) deferred carries), so the two agree only if both
are right.
"""

from __future__ import annotations

import struct
import sys
from array import array

Buffer = bytes | bytearray | memoryview


def rfc1071_sum(data: Buffer) -> int:
    """The 16-bit ones'-complement sum of `data`, an odd length padded with a zero byte.

    0 only for all-zero input, 1..0xFFFF otherwise (0xFFFF is the "negative zero").
    """
    data = bytes(data)
    if len(data) % 8:
        data += bytes(8 - len(data) % 8)
    words = array("Q")
    words.frombytes(data)
    total = sum(words)
    while total >> 16:  # end-around carry
        total = (total & 0xFFFF) + (total >> 16)
    if sys.byteorder == "little":  # summed in host order: swap the bytes of the result (2 (B))
        total = ((total & 0xFF) << 8) | (total >> 8)
    return total


def rfc1071(data: Buffer) -> int:
    """The value to store in a checksum field that is zero in `data`."""
    return ~rfc1071_sum(data) & 0xFFFF


def l3_of(packet: Buffer) -> tuple[int, int]:
    """(IP header length, protocol) of an IPv4 or IPv6 packet without extension headers."""
    if packet[0] >> 4 == 4:
        return (packet[0] & 15) * 4, packet[9]
    return 40, packet[6]


def pseudo_header(packet: Buffer, l4_length: int, proto: int) -> bytes:
    """The pseudo-header of RFC 768 / RFC 9293 section 3.1 (IPv4) or RFC 8200 section 8.1 (IPv6)."""
    if packet[0] >> 4 == 4:
        return bytes(packet[12:20]) + struct.pack("!BBH", 0, proto, l4_length)
    return bytes(packet[8:40]) + struct.pack("!IxxxB", l4_length, proto)


def l4_checksum_ok(packet: Buffer) -> bool:
    """The TCP or UDP checksum verifies: pseudo-header and segment sum to 0xFFFF."""
    l3, proto = l3_of(packet)
    l4 = bytes(packet[l3:])
    return rfc1071_sum(pseudo_header(packet, len(l4), proto) + l4) == 0xFFFF


def ipv4_header_ok(packet: Buffer) -> bool:
    return rfc1071_sum(packet[: (packet[0] & 15) * 4]) == 0xFFFF
