"""Just enough of the pcap format to say what kind of packets a capture holds.

The system tests capture on a node's underlay interface with `tcpdump -w`
and check that nothing but UDP left the host; reading the file here avoids
depending on tshark or scapy for a few header fields.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
# ICMPv6 that only manages the link itself (RFC 4861 ND, RFC 3810 MLD).
LINK_ICMP6 = {130, 131, 132, 133, 134, 135, 136, 137, 143}
_IP6_EXTENSIONS = {0, 43, 60}  # hop-by-hop (MLD carries one), routing, destination


@dataclass(frozen=True)
class Packet:
    kind: str  # "arp", "udp", "tcp", "icmp", "icmp6", "other"
    icmp6_type: int | None
    frame: bytes

    @property
    def link_local_control(self) -> bool:
        """ARP, neighbour discovery, multicast listener reports: not traffic."""
        return self.kind == "arp" or (self.kind == "icmp6" and self.icmp6_type in LINK_ICMP6)


def records(path: Path) -> tuple[int, Iterator[tuple[bytes, bool]]]:
    """(link type, every record as (frame, whole)) of a classic pcap file;
    a frame cut by the snap length is not whole."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return 0, iter(())
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file (pcapng is not supported)")
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0xFFFF

    def frames() -> Iterator[tuple[bytes, bool]]:
        off = 24
        while off + 16 <= len(data):
            incl, orig = struct.unpack(endian + "II", data[off + 8 : off + 16])
            yield data[off + 16 : off + 16 + incl], incl == orig
            off += 16 + incl

    return linktype, frames()


def read(path: Path) -> Iterator[Packet]:
    linktype, frames = records(path)
    if linktype and linktype != LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype}, expected Ethernet")
    for frame, _ in frames:
        yield classify(frame)


def classify(frame: bytes) -> Packet:
    if len(frame) < 14:
        return Packet("other", None, frame)
    ethertype = int.from_bytes(frame[12:14], "big")
    ip = frame[14:]
    if ethertype == 0x0806:
        return Packet("arp", None, frame)
    if ethertype == 0x0800 and len(ip) >= 20:
        proto = ip[9]
        return Packet({17: "udp", 6: "tcp", 1: "icmp"}.get(proto, "other"), None, frame)
    if ethertype == 0x86DD and len(ip) >= 40:
        nxt, off = ip[6], 40
        while nxt in _IP6_EXTENSIONS and off + 2 <= len(ip):
            nxt, off = ip[off], off + 8 * (ip[off + 1] + 1)
        if nxt == 58 and off < len(ip):
            return Packet("icmp6", ip[off], frame)
        return Packet({17: "udp", 6: "tcp"}.get(nxt, "other"), None, frame)
    return Packet("other", None, frame)
