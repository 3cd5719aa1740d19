"""The one Trio driver of the sans-I/O datagram services (AS, NMS, TRS):
one socket per listen address, one receive task per socket, one timer task."""

from __future__ import annotations

import logging
import socket
import time
from typing import Protocol, runtime_checkable

import trio

from cyphonic.config import Address, format_address
from cyphonic.crypto import PacketBuffer
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.kernel import batch as batch_io
from cyphonic.wire.common import MAX_DATAGRAM, TYPE
from cyphonic.wire.relay import SEALED

log = logging.getLogger("cyphonic.udp")

Outgoing = list[tuple[bytes, Address]]
RELAYED = TYPE["Relayed"]


class DatagramService(Protocol):
    """What the AS, the NMS and the TRS each are: datagrams and time in,
    datagrams out (aioquic's receive_datagram / get_timer / handle_timer)."""

    drops: Drops  # what the service refused, and why

    def receive(self, data: bytes, source: Address, now: float) -> Outgoing:
        """Datagrams to send in answer to one received."""
        ...

    def next_timer(self) -> float | None:
        """When `handle_timer` has work next (None: nothing pending)."""
        ...

    def handle_timer(self, now: float) -> Outgoing:
        """Retransmissions and expiry due by `now`."""
        ...


@runtime_checkable
class BatchForwarder(DatagramService, Protocol):
    """A service that forwards data frames unchanged (the TRS): the driver
    reads GRO batches and hands it each frame where it lies."""

    def forward_at(self, buf: PacketBuffer, start: int, end: int, source: Address, now: float) -> Address | None:
        """Where the data frame in buf[start:end] goes (None: dropped)."""
        ...

    def forward_run(
        self, buf: PacketBuffer, start: int, n: int, size: int, source: Address, now: float
    ) -> tuple[int, Address | None]:
        """The end of the run of data frames from buf[start] that go to one
        place, and that place ((start, None): none, ask `forward_at`)."""
        ...


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


SOCKET_BUFFER = 4 << 20
SO_SNDBUFFORCE, SO_RCVBUFFORCE = 32, 33  # not exported by Python's socket module


def size_buffers(sock, size: int = SOCKET_BUFFER) -> None:
    """Large send/receive buffers. As root the *FORCE variants pass
    net.core.[rw]mem_max (208 KB by default, a few GRO batches): a burst
    must not overflow them (UDP loss in the overlay came from there)."""
    for force, opt in ((SO_SNDBUFFORCE, socket.SO_SNDBUF), (SO_RCVBUFFORCE, socket.SO_RCVBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)


def open_udp(address: Address) -> socket.socket:
    """A bound, non-blocking UDP socket with large buffers."""
    family = family_of(address[0])
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        # One socket per family: v4 peers never appear as v4-mapped addresses.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    size_buffers(sock)
    sock.bind(address)
    sock.setblocking(False)
    return sock


class UdpServer:
    """Each wake-up drains its socket (a relay forwards many datagrams per
    wake-up); replies go out with non-blocking sends: a full send buffer
    drops a datagram, as the network would."""

    def __init__(self, service: DatagramService, listen: list[Address], name: str) -> None:
        self.service = service
        self.listen = listen
        self.name = name
        self._sockets: dict[int, socket.socket] = {}
        self._gso: dict[int, bool] = {}
        self.send_drops = 0

    def send(self, out: Outgoing) -> None:
        for data, dest in out:
            sock = self._sockets.get(family_of(dest[0]))
            if sock is None:
                continue
            try:
                sock.sendto(data, dest)
            except BlockingIOError:
                self.send_drops += 1
            except OSError as exc:  # counted and rate-limited: a dead route must not log per datagram
                self.service.drops("send failed", format_address(dest), str(exc))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        relay = isinstance(self.service, BatchForwarder)
        async with trio.open_nursery() as nursery:
            for address in self.listen:
                sock = open_udp(address)
                self._sockets[sock.family] = sock
                if relay and batch_io.enable_gro(sock):
                    self._gso[sock.family] = batch_io.gso_supported(sock)
                    nursery.start_soon(self._forward, sock)
                    continue
                nursery.start_soon(self._receive, sock)
                log.info("%s listening on %s", self.name, format_address(address))
            nursery.start_soon(self._timers)
            task_status.started()

    async def _receive(self, sock: socket.socket) -> None:
        service, send = self.service, self.send
        drops = service.drops
        while True:
            await trio.lowlevel.wait_readable(sock)
            now = time.time()
            while True:
                try:
                    data, source = sock.recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                    log.debug("%s: receive error %s", self.name, exc)
                    continue
                try:
                    out = service.receive(data, (source[0], source[1]), now)
                except (ParseError, AuthenticationError) as exc:
                    # the service should have caught it; the listener must not die of it
                    drops(f"{type(exc).__name__} at the listener", source, str(exc).splitlines()[0])
                    continue
                if out:
                    send(out)

    async def _forward(self, sock: socket.socket) -> None:
        """The relay's receive loop (DESIGN §10, protocols/relay.md): GRO
        batches read into one buffer; each run of one session side's data
        frames is checked where it lies (`forward_run`: one call for its
        MACs, compiled where built) and forwarded unchanged, consecutive
        frames to one destination in one GSO send; a frame that ends a run
        goes alone through `forward_at`, anything else through `receive`."""
        service = self.service
        assert isinstance(service, BatchForwarder)  # run() starts this loop only for one
        buf = PacketBuffer(MAX_DATAGRAM)
        data, view = buf.data, buf.view
        async for n, size, source, now in batch_io.gro_batches(sock, data):
            # start, end, destination of the frames to send as one
            run: tuple[int, int, Address | None] = (0, 0, None)
            start = 0
            while start < n:
                end = min(start + size, n)
                if end - start > 6 and data[start] == RELAYED and not data[start + 5] & SEALED:
                    # a run of one session side's frames, MACs checked in one call
                    after, dest = service.forward_run(buf, start, n, size, source, now)
                    if after > start:
                        if dest == run[2] and start == run[1]:
                            run = (run[0], after, dest)
                        else:
                            self._send_run(view, run, size)
                            run = (start, after, dest)
                        start = after
                        continue
                    dest = service.forward_at(buf, start, end, source, now)
                    if dest is not None and dest == run[2] and start == run[1]:
                        run = (run[0], end, dest)
                    else:
                        self._send_run(view, run, size)
                        run = (start, end, dest) if dest is not None else (0, 0, None)
                    start = end
                    continue
                self._send_run(view, run, size)
                run = (0, 0, None)
                frame, start = bytes(view[start:end]), end
                try:
                    out = service.receive(frame, source, now)
                except (ParseError, AuthenticationError) as exc:
                    service.drops(f"{type(exc).__name__} at the listener", source, str(exc).splitlines()[0])
                    continue
                if out:
                    self.send(out)
            self._send_run(view, run, size)

    def _send_run(self, view: memoryview, run: tuple[int, int, Address | None], size: int) -> None:
        start, end, dest = run
        if dest is None or end <= start:
            return
        family = family_of(dest[0])
        sock = self._sockets.get(family)
        if sock is None:
            return
        count = -(-(end - start) // size)
        try:
            sent = batch_io.send_run(sock, view[start:end], size, dest, self._gso.get(family, False))
        except OSError as exc:  # counted and rate-limited, as in send()
            self.service.drops("send failed", format_address(dest), str(exc), count=count)
            return
        self.send_drops += count - sent

    async def _timers(self) -> None:
        while True:
            deadline = self.service.next_timer()
            # at least once a second: a datagram received meanwhile may have
            # set an earlier deadline than the one we sleep towards
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.time()))
            await trio.sleep(wait)
            out = self.service.handle_timer(time.time())
            if out:
                self.send(out)
