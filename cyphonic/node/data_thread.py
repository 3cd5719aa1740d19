"""The node's data path on a thread of its own (issue 16, latency).

Measured (bench/traversal.py): an idle ping spends most of its time in the
daemons between the kernel's wake-up and the first read, in Trio's
scheduler running from cold caches, not in the per-packet work. This thread
blocks in an epoll of its own on the TUN and the UDP sockets (level
triggered: no re-arming per wake-up) and runs the same drains the Trio
tasks do (`drain_tun`, `receive_batch` with the compiled loops).

One lock over the overlay's state keeps the two threads apart: the Trio
thread holds it except while its run loop waits for I/O (an Instrument
releases it in `before_io_wait` and takes it back in `after_io_wait`), and
this thread takes it for each wake-up, after letting a waiting Trio thread
go first (else a busy data path could keep it out). So every signaling
step, rekey, move and status read runs while the data path is still, and
a tunnel's counters and keys are never used by both at once (nonces never
repeat). Every datagram of the data path is opened here, in order,
control messages too (a Keep Alive handed over late would fall behind the
replay window under load); what reaches the Signaling Module (signaling
datagrams, Tunnel Updates and their Acks) is handed to the Trio thread
(`run_sync_soon`), where everything that calls Trio stays.

The daemon's nursery owns the thread: `run` starts it and, when cancelled,
wakes it through a pipe and waits for it to stop.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable

import trio

from cyphonic.crypto import PacketBuffer
from cyphonic.kernel import batch as batch_io
from cyphonic.node.packet import PacketHandlingModule
from cyphonic.wire.common import MAX_DATAGRAM

log = logging.getLogger("cyphonic.packet")

Address = tuple[str, int]
# what the Trio thread does with a signaling datagram the data thread hands over
Handler = Callable[[bytes, Address, float], None]


class OverlayLock(trio.abc.Instrument):
    """Held by the Trio thread except while its run loop waits for I/O."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.trio_waiting = False  # the data thread yields its next turn

    def before_io_wait(self, timeout: float) -> None:
        self.lock.release()

    def after_io_wait(self, timeout: float) -> None:
        self.trio_waiting = True
        self.lock.acquire()
        self.trio_waiting = False


async def run(packet: PacketHandlingModule, sockets: list[socket.socket], signaling: Handler) -> None:
    """The data path on its thread until cancelled. `signaling(data,
    source, now)` runs on the Trio thread for each signaling datagram."""
    token = trio.lowlevel.current_trio_token()
    tunnel_message = packet.on_tunnel_message
    if tunnel_message is not None:  # the Signaling Module's: on the Trio thread
        packet.on_tunnel_message = lambda tunnel, kind, body: token.run_sync_soon(tunnel_message, tunnel, kind, body)
    overlay = OverlayLock()
    overlay.lock.acquire()  # we are between two I/O waits: the Trio thread's turn
    trio.lowlevel.add_instrument(overlay)
    stop_read, stop_write = os.pipe()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_when_cancelled, stop_write)
            await trio.to_thread.run_sync(
                _loop, packet, sockets, overlay, token, signaling, stop_read, abandon_on_cancel=False
            )
            nursery.cancel_scope.cancel()
    finally:
        packet.on_tunnel_message = tunnel_message
        trio.lowlevel.remove_instrument(overlay)
        overlay.lock.release()
        os.close(stop_read)
        os.close(stop_write)


async def _stop_when_cancelled(stop_write: int) -> None:
    try:
        await trio.sleep_forever()
    finally:
        os.write(stop_write, b"x")


def _loop(
    packet: PacketHandlingModule,
    sockets: list[socket.socket],
    overlay: OverlayLock,
    token: trio.lowlevel.TrioToken,
    signaling: Handler,
    stop: int,
) -> None:
    poll = select.epoll()
    poll.register(stop, select.EPOLLIN)
    poll.register(packet.tun_fd, select.EPOLLIN)
    by_fd = {}
    for sock in sockets:
        poll.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = (sock, PacketBuffer(MAX_DATAGRAM))
    log.info("data path on its own thread")
    try:
        while True:
            events = poll.poll()
            while overlay.trio_waiting:
                os.sched_yield()
            with overlay.lock:
                for fd, _ in events:
                    if fd == stop:
                        return
                    if fd == packet.tun_fd:
                        packet.drain_tun()
                    else:
                        sock, buf = by_fd[fd]
                        _drain_socket(packet, sock, buf, token, signaling)
    finally:
        poll.close()


def _drain_socket(
    packet: PacketHandlingModule,
    sock: socket.socket,
    buf: PacketBuffer,
    token: trio.lowlevel.TrioToken,
    signaling: Handler,
) -> None:
    now = time.time()
    while True:
        try:
            batch = batch_io.receive_into(sock, buf.data)
        except OSError:
            continue  # an ICMP error reported on the socket
        if batch is None:
            return
        n, size, source = batch
        source = (source[0], source[1])

        def hand_over(start: int, end: int, source: Address = source) -> None:
            token.run_sync_soon(signaling, bytes(buf.data[start:end]), source, now)

        packet.receive_batch(buf, n, size, source, now, hand_over)
        packet.flush()
