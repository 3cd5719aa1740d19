"""The adapter's ARP responder, sans I/O (DESIGN section 4).

General nodes resolve every peer's virtual IPv4 on the LAN; the adapter
answers with its own MAC, so their packets come to it and into a tunnel.
Which addresses to answer for is the caller's decision (`answer_for`):
peers yes, the general node's own address never, or a stock DHCP client's
conflict probe (RFC 5227 2.1.1) would make it decline its lease.

This runs for every ARP frame on the LAN, so the layout of
`cyphonic.wire.lan.ArpFrame` is unpacked here with one `struct` call; the
unit tests prove both accept and produce the same bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NoReturn

from cyphonic.errors import ParseError
from cyphonic.wire.lan import ARP_LEN, ARP_REPLY, ARP_REQUEST, ARPHRD_ETHER, ETH_HLEN, ETH_P_ARP, ETH_P_IP

# ethertype, then the fixed part of an Ethernet/IPv4 ARP packet (RFC 826)
_FIXED = struct.pack("!HHHBB", ETH_P_ARP, ARPHRD_ETHER, ETH_P_IP, 6, 4)
_REQUEST = _FIXED + struct.pack("!H", ARP_REQUEST)
_REPLY = _FIXED + struct.pack("!H", ARP_REPLY)


class ArpResponder:
    """Answers ARP requests for the addresses `answer_for` accepts.

    `processed` counts well-formed ARP frames seen, `answered` the replies
    made; malformed frames raise ParseError for the listener to count.
    """

    def __init__(self, mac: bytes) -> None:
        if len(mac) != 6:
            raise ValueError("an Ethernet MAC has 6 bytes")
        self.mac = bytes(mac)
        self.processed = 0
        self.answered = 0

    def answer(self, frame: bytes | memoryview, answer_for: Callable[[bytes, bytes], bool]) -> bytes | None:
        """The reply frame to an ARP request whose target IPv4 (4 packed bytes)
        `answer_for(target_ip, sender_mac)` accepts; None for anything else."""
        if len(frame) < ETH_HLEN + ARP_LEN:
            raise ParseError("frame shorter than an Ethernet ARP packet")
        fixed = bytes(frame[12:22])
        if fixed != _REQUEST:
            if fixed[:8] != _FIXED:
                _refuse(fixed)
            self.processed += 1
            return None  # a reply or an unknown operation: nothing to answer
        self.processed += 1
        sender_mac, sender_ip, _target_mac, target_ip = struct.unpack_from("!6s4s6s4s", frame, 22)
        if sender_ip == target_ip:
            return None  # gratuitous ARP / announcement (RFC 5227 section 3): nobody asks
        if sender_mac[0] & 1 or sender_mac == self.mac:
            return None  # no unicast reply to a group address; never answer ourselves
        if not answer_for(target_ip, sender_mac):
            return None
        self.answered += 1
        # RFC 826 "swap fields": the requester becomes the target. For a probe
        # (sender 0.0.0.0, RFC 5227 2.1.1) that makes the reply unicast to the
        # prober, target IP 0.0.0.0, as RFC 5227 expects from the owner.
        return b"".join((sender_mac, self.mac, _REPLY, self.mac, target_ip, sender_mac, sender_ip))


def _refuse(fixed: bytes) -> NoReturn:
    """Raise the ParseError that names what is wrong with a non-request frame."""
    ethertype, hardware, protocol, hlen, plen = struct.unpack_from("!HHHBB", fixed)
    if ethertype != ETH_P_ARP:
        raise ParseError(f"ethertype {ethertype:#06x} is not ARP")
    if hardware != ARPHRD_ETHER or hlen != 6:
        raise ParseError("ARP hardware is not Ethernet")
    raise ParseError(f"ARP protocol {protocol:#06x}/{plen} is not IPv4")
