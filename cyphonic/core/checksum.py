"""Internet checksums (RFC 1071) for the few headers Python touches.

The ones'-complement sum of 16-bit words equals the big-endian integer of
the bytes modulo 0xFFFF (2**16 is 1 modulo 0xFFFF), so one `int.from_bytes`
and one `%` sum a whole buffer in C; 0 is reported as 0xFFFF, its
ones'-complement twin, except for all-zero input.
"""

from __future__ import annotations


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """16-bit ones'-complement sum of `data` (odd length padded with zero)."""
    if len(data) % 2:
        data = bytes(data) + b"\0"
    value = int.from_bytes(data, "big")
    if value == 0:
        return 0
    s = value % 0xFFFF
    return s or 0xFFFF


def fold(a: int, b: int) -> int:
    s = a + b
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """The value to store in a checksum field (field zeroed in `data`)."""
    return ~ones_sum(data) & 0xFFFF


def pseudo_header_sum(packet: bytes | bytearray | memoryview, l4_length: int, proto: int) -> int:
    """Sum of the IPv4/IPv6 pseudo-header for an L4 segment of `l4_length`."""
    if packet[0] >> 4 == 4:
        addresses = packet[12:20]
    else:
        addresses = packet[8:40]
    tail = l4_length.to_bytes(4, "big") + proto.to_bytes(4, "big")
    return ones_sum(bytes(addresses) + tail)
