"""Hostile datagrams for the system tests: real ones, recorded, then mutated.

Not a test module. `read_udp` pulls the UDP datagrams out of a `tcpdump -w`
capture, `mutations` turns one recorded datagram into about a thousand
broken ones (truncated, a byte changed, a byte changed and the tail
garbled, a length field at its extremes, junk appended, every type byte,
bytes duplicated, stacked changes, replayed as is), `corpus` picks and
mutates a listener's recordings deterministically from a seed, and
`SENDER` is the little program that fires a batch from inside a namespace.
"""

from __future__ import annotations

import random
import socket
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cyphonic.lab import pcap

# pcap link types (tcpdump.org/linktypes.html)
LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_ETH_VLAN = (0x8100, 0x88A8)
_IP6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options
_IP6_FRAGMENT = 44


@dataclass(frozen=True)
class Datagram:
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def read_udp(path: Path) -> list[Datagram]:
    """Every whole UDP datagram in a pcap file (fragments and cut ones are left out)."""
    linktype, frames = pcap.records(path)
    out = []
    for frame, whole in frames:
        if not whole:  # cut by the snap length: not the datagram that was sent
            continue
        ethertype, ip = _network_layer(linktype, frame, path)
        d = _udp(ethertype, ip)
        if d is not None:
            out.append(d)
    return out


def _network_layer(linktype: int, frame: bytes, path: Path) -> tuple[int, bytes]:
    if linktype == LINKTYPE_ETHERNET:
        ethertype, off = int.from_bytes(frame[12:14], "big"), 14
        while ethertype in _ETH_VLAN and len(frame) >= off + 4:
            ethertype, off = int.from_bytes(frame[off + 2:off + 4], "big"), off + 4
        return ethertype, frame[off:]
    if linktype == LINKTYPE_LINUX_SLL:  # 16-byte header, protocol at 14
        return int.from_bytes(frame[14:16], "big"), frame[16:]
    if linktype == LINKTYPE_LINUX_SLL2:  # 20-byte header, protocol first
        return int.from_bytes(frame[0:2], "big"), frame[20:]
    raise ValueError(f"{path}: link type {linktype} not supported")


def _udp(ethertype: int, ip: bytes) -> Datagram | None:
    if ethertype == 0x0800 and len(ip) >= 20 and ip[0] >> 4 == 4:
        ihl = (ip[0] & 0x0F) * 4
        flags_frag = int.from_bytes(ip[6:8], "big")
        if ip[9] != 17 or flags_frag & 0x3FFF:  # not UDP, or a fragment
            return None
        total = int.from_bytes(ip[2:4], "big")
        src, dst = socket.inet_ntop(socket.AF_INET, ip[12:16]), socket.inet_ntop(socket.AF_INET, ip[16:20])
        return _udp_datagram(src, dst, ip[ihl:total])
    if ethertype == 0x86DD and len(ip) >= 40 and ip[0] >> 4 == 6:
        nxt, off = ip[6], 40
        while nxt in _IP6_EXTENSIONS and off + 2 <= len(ip):
            nxt, off = ip[off], off + 8 * (ip[off + 1] + 1)
        if nxt != 17:  # not UDP (a fragment header lands here too)
            return None
        end = 40 + int.from_bytes(ip[4:6], "big")
        src, dst = socket.inet_ntop(socket.AF_INET6, ip[8:24]), socket.inet_ntop(socket.AF_INET6, ip[24:40])
        return _udp_datagram(src, dst, ip[off:end])
    return None


def _udp_datagram(src: str, dst: str, udp: bytes) -> Datagram | None:
    if len(udp) < 8:
        return None
    sport, dport, length = struct.unpack(">HHH", udp[:6])
    # A UDP GSO "super packet" seen on a veth, or a cut one: its length
    # field does not describe what we hold. Only whole datagrams count.
    if length != len(udp):
        return None
    return Datagram(src, sport, dst, dport, udp[8:])


# -- mutations ---------------------------------------------------------------

def _plausible_lengths(d: bytes, width: int) -> list[int]:
    """Offsets (past the type byte) holding a big-endian number that could be
    the length of what follows it: 1 <= n <= bytes left after the field."""
    out = []
    for i in range(1, len(d) - width):
        n = int.from_bytes(d[i:i + width], "big")
        if 1 <= n <= len(d) - i - width:
            out.append(i)
    return out


def _set(d: bytes, at: int, value: bytes) -> bytes:
    return d[:at] + value + d[at + len(value):]


def _sample(rng: random.Random, items: list[int], k: int) -> list[int]:
    return items if len(items) <= k else sorted(rng.sample(items, k))


def mutations(d: bytes, rng: random.Random) -> list[bytes]:
    """Broken variants of one real datagram, about a thousand of them."""
    out = [d]  # replayed unchanged, from a foreign address
    for family in (truncated, byte_changed, tail_garbled, length_extremes, integer_extremes,
                   junk_appended, type_byte, duplicated, stacked):
        out += family(d, rng)
    return out


def truncated(d: bytes, rng: random.Random) -> list[bytes]:
    """Every length of a short datagram; of a long one, a sample that
    always holds the first fields and the last bytes."""
    n = len(d)
    cuts = range(n) if n <= 96 else sorted(
        set(range(16)) | set(range(n - 8, n)) | set(rng.sample(range(16, n - 8), 48)))
    return [d[:k] for k in cuts]


def _changed(d: bytes, i: int, rng: random.Random) -> bytes:
    return _set(d, i, bytes([d[i] ^ rng.randrange(1, 256)]))


def byte_changed(d: bytes, rng: random.Random) -> list[bytes]:
    """One byte changed: at every position of a signaling-sized datagram
    (a sample of a big one) to another value, and at some to 0x00 / 0xFF."""
    out = [_changed(d, i, rng) for i in _sample(rng, list(range(len(d))), 320)]
    for i in _sample(rng, list(range(len(d))), 32):
        out += [_set(d, i, b"\x00"), _set(d, i, b"\xff")]
    return out


def tail_garbled(d: bytes, rng: random.Random) -> list[bytes]:
    """One byte changed, and garbage from a later point to the end.

    A receiver that remembers a nonce or a counter answers a copy that kept
    it from a cache, unread: the AS answers a retransmitted Login Request by
    its nonce, which comes after the certificate. With the tail garbled the
    change is read.
    """
    n = len(d)
    out = []
    for i in _sample(rng, list(range(n - 1)), 320):
        j = rng.randrange(i + 1, n)
        out.append(_changed(d, i, rng)[:j] + rng.randbytes(n - j))
    return out


def length_extremes(d: bytes, rng: random.Random) -> list[bytes]:
    """Length fields at 0, 1, their maximum and off by one: 2-byte ones
    (Prefixed(Int16ub) blobs) at every offset where one could lie, 1-byte
    ones (PascalString names, array counts) at a sample of them."""
    out = []
    for width, offsets, extremes in ((2, _plausible_lengths(d, 2)[:96], (0, 1, 0xFFFF)),
                                     (1, _sample(rng, _plausible_lengths(d, 1), 24), (0, 1, 0xFF))):
        for i in offsets:
            v = int.from_bytes(d[i:i + width], "big")
            for new in sorted({*extremes, v - 1, v + 1} - {v}):
                if 0 <= new < 1 << (8 * width):
                    out.append(_set(d, i, new.to_bytes(width, "big")))
    return out


def integer_extremes(d: bytes, rng: random.Random) -> list[bytes]:
    """8 bytes all ones or all zeros: timestamps, validity, sequence numbers."""
    out = []
    for i in _sample(rng, list(range(1, max(1, len(d) - 8))), 12):
        out += [_set(d, i, b"\xff" * 8), _set(d, i, b"\x00" * 8)]
    return out


def junk_appended(d: bytes, rng: random.Random) -> list[bytes]:
    return [d + rng.randbytes(k) for k in (1, 16, 1000)]


def type_byte(d: bytes, rng: random.Random) -> list[bytes]:
    """The type byte set to every other value: each schema gets the others' bytes."""
    return [bytes([t]) + d[1:] for t in range(256) if t != d[0]] if d else []


def duplicated(d: bytes, rng: random.Random) -> list[bytes]:
    """The whole datagram twice, a field-sized run twice, one byte twice."""
    n = len(d)
    out = [d + d]
    if n >= 2:
        i = rng.randrange(n - 1)
        j = rng.randrange(i + 1, min(n, i + 64) + 1)
        k = rng.randrange(n)
        out += [d[:j] + d[i:j] + d[j:], d[:k] + d[k:k + 1] + d[k:]]
    return out


STACKED = 150


def stacked(d: bytes, rng: random.Random) -> list[bytes]:
    """Two to four changes at once, at random places.

    Some faults need two fields broken at once (a length and what it
    counts, a flag and the field it enables); stacked changes reach such
    pairs, as AFL's "havoc" stage does.
    """
    return [_stack(d, rng) for _ in range(STACKED)]


def _stack(d: bytes, rng: random.Random) -> bytes:
    m = bytearray(d)
    for _ in range(rng.randint(2, 4)):
        if not m:
            break
        i = rng.randrange(len(m))
        op = rng.randrange(6)
        if op <= 1:
            m[i] ^= rng.randrange(1, 256)
        elif op == 2:
            m[i] = rng.choice((0x00, 0xFF))
        elif op == 3 and i + 2 <= len(m):
            length = (len(m) - i - 2) & 0xFFFF  # what follows, as a length field would say
            m[i:i + 2] = rng.choice((0, 1, 0xFFFF, length)).to_bytes(2, "big")
        elif op == 4:
            del m[i:i + rng.randint(1, 8)]
        else:
            m[i:i] = rng.randbytes(rng.randint(1, 8))
    return bytes(m)


def corpus(recorded: Iterable[bytes], budget: int, seed: int, per_kind: int = 4) -> list[bytes]:
    """About `budget` mutated datagrams from a listener's recordings.

    Up to `per_kind` distinct recordings of each message type (first byte)
    are mutated, so rare kinds (a Login Request, a Relay Request) get as
    many mutations as frequent ones (capsules); then a seeded sample, in a
    seeded order, so the kinds interleave.
    """
    rng = random.Random(seed)
    by_kind: dict[int, set[bytes]] = defaultdict(set)
    for d in recorded:
        if d:
            by_kind[d[0]].add(d)
    out: list[bytes] = []
    for kind in sorted(by_kind):
        distinct = sorted(by_kind[kind])
        for d in rng.sample(distinct, min(per_kind, len(distinct))):
            out += mutations(d, rng)
    if len(out) > budget:
        out = rng.sample(out, budget)
    else:
        rng.shuffle(out)
    return out


# -- sending -----------------------------------------------------------------

_RECORD = struct.Struct(">B16sHI")  # family, address, port, payload length


def write_batch(path: Path, items: Iterable[tuple[str, int, bytes]]) -> int:
    """Write (address, port, payload) records for SENDER; returns their number."""
    count = 0
    with open(path, "wb") as f:
        for address, port, payload in items:
            if ":" in address:
                family, packed = 6, socket.inet_pton(socket.AF_INET6, address)
            else:
                family, packed = 4, socket.inet_pton(socket.AF_INET, address).ljust(16, b"\0")
            f.write(_RECORD.pack(family, packed, port, len(payload)) + payload)
            count += 1
    return count


def interleave(*streams: list[tuple[str, int, bytes]]) -> list[tuple[str, int, bytes]]:
    """Round-robin over several targets' datagrams, so every listener is hit
    through the whole round rather than one after the other."""
    out = []
    for i in range(max((len(s) for s in streams), default=0)):
        out += [s[i] for s in streams if i < len(s)]
    return out


# Run as `python -c SENDER BATCH SECONDS` inside the sending namespace: one
# socket per family (one source address and port each), paced to spread the
# batch over SECONDS. Prints "<sent> <send errors>".
SENDER = r"""
import socket, struct, sys, time
data = open(sys.argv[1], "rb").read()
seconds = float(sys.argv[2])
record = struct.Struct(">B16sHI")
items = []
off = 0
while off < len(data):
    family, packed, port, n = record.unpack_from(data, off)
    off += record.size
    if family == 4:
        address = (socket.inet_ntop(socket.AF_INET, packed[:4]), port)
    else:
        address = (socket.inet_ntop(socket.AF_INET6, packed), port)
    items.append((family, address, data[off:off + n]))
    off += n
socks = {}
rate = max(len(items) / seconds, 1.0)
errors = 0
start = time.monotonic()
for i, (family, address, payload) in enumerate(items):
    if family not in socks:
        socks[family] = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6,
                                      socket.SOCK_DGRAM)
    try:
        socks[family].sendto(payload, address)
    except OSError:
        errors += 1
    if i % 16 == 15:
        ahead = start + (i + 1) / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
print(len(items), errors)
"""
