"""Batch I/O on UDP sockets: many datagrams per system call (DESIGN §10).

- `send_segments`: datagrams for one destination in one `sendmsg` with the
  UDP_SEGMENT control message (UDP GSO): all but the last the same size.
- `enable_gro` + `receive_into`: UDP GRO; one `recvmsg_into` returns a run
  of datagrams from one source and their size in a control message.
- `send_run`: the data path's GSO send of datagrams already laid end to end.
- `gro_batches`: the readers' loop: every GRO batch, the socket drained on
  each wake-up.
Both are probed: a socket without them works one datagram per call.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import AsyncIterator

import trio

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MAX_GSO_BYTES = 65507 - 512  # headroom under the 64 KB IP limit
MAX_GSO_SEGMENTS = 64
_GRO_CMSG = socket.CMSG_SPACE(4)
_SEG = struct.Struct("=H")


def gso_supported(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        return True
    except OSError:
        return False


def enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False


def send_segments(sock: socket.socket, datagrams: list[bytes], address, gso: bool) -> int:
    """Send `datagrams` to `address`; returns how many went out. Runs of
    equal size share one system call when `gso` is on."""
    if not gso or len(datagrams) == 1:
        sent = 0
        for d in datagrams:
            try:
                sock.sendto(d, address)
            except BlockingIOError:
                break
            sent += 1
        return sent
    sent = 0
    i, n = 0, len(datagrams)
    while i < n:
        size = len(datagrams[i])
        j, total = i + 1, size
        # extend the run while sizes match; a shorter one may end it
        while j < n and j - i < MAX_GSO_SEGMENTS and total + len(datagrams[j]) <= MAX_GSO_BYTES:
            length = len(datagrams[j])
            if length > size:
                break
            total += length
            j += 1
            if length < size:
                break
        run = datagrams[i:j]
        try:
            if len(run) == 1:
                sock.sendto(run[0], address)
            else:
                sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, _SEG.pack(size))], 0, address)
        except BlockingIOError:
            return sent
        sent += len(run)
        i = j
    return sent


def receive_batch(sock: socket.socket, buffer: bytearray) -> tuple[list[bytes], tuple] | None:
    """(datagrams, source) of one GRO read, as separate bytes (for callers
    that keep them; the data path uses `receive_into` and opens in place)."""
    got = receive_into(sock, buffer)
    if got is None:
        return None
    n, size, source = got
    view = memoryview(buffer)
    return [bytes(view[k : min(k + size, n)]) for k in range(0, n, size)] or [b""], source


def send_run(sock: socket.socket, view: memoryview, size: int, address, gso: bool) -> int:
    """Send the datagrams laid end to end in `view`, each `size` bytes but
    the last: one `sendmsg` with UDP GSO, else one `sendto` each. Returns
    how many went out."""
    n = len(view)
    count = -(-n // size)
    try:
        if gso and count > 1:
            sock.sendmsg([view], [(SOL_UDP, UDP_SEGMENT, _SEG.pack(size))], 0, address)
            return count
        for sent, k in enumerate(range(0, n, size)):
            try:
                sock.sendto(view[k : k + size], address)
            except BlockingIOError:
                return sent
        return count
    except BlockingIOError:
        return 0


def receive_into(sock: socket.socket, buffer: bytearray) -> tuple[int, int, tuple] | None:
    """(bytes, datagram size, source) of one GRO read into `buffer`, or None
    when the socket is empty. The datagrams lie end to end, each `size`
    bytes but the last."""
    try:
        n, ancdata, _flags, source = sock.recvmsg_into([buffer], _GRO_CMSG)
    except BlockingIOError:
        return None
    size = n
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            size = struct.unpack_from("=i", data)[0] or n
    return n, max(size, 1), source


async def gro_batches(sock: socket.socket, buffer: bytearray) -> AsyncIterator[tuple[int, int, tuple[str, int], float]]:
    """(bytes, datagram size, source, time of the wake-up) of every GRO read
    into `buffer`, which the next one overwrites: the socket is drained on
    each wake-up. Receive errors (an ICMP error reported on the socket) are
    skipped."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        now = time.time()
        while True:
            try:
                batch = receive_into(sock, buffer)
            except OSError:
                continue
            if batch is None:
                break
            n, size, source = batch
            yield n, size, (source[0], source[1]), now
