"""A thin Trio driver for a sans-I/O datagram service (AS, NMS): one socket
per listen address, one receive task per socket, one timer task."""

from __future__ import annotations

import logging
import socket
import time
from typing import Callable, Protocol

import trio

from cyphonic.config import Address, format_address
from cyphonic.wire.common import MAX_DATAGRAM

log = logging.getLogger("cyphonic.udp")

Outgoing = list[tuple[bytes, Address]]


class DatagramService(Protocol):
    def receive(self, data: bytes, source: Address, now: float) -> Outgoing: ...


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


async def open_udp(address: Address) -> trio.socket.SocketType:
    family = family_of(address[0])
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        # One socket per family: v4 peers never appear as v4-mapped addresses.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind(address)
    return sock


class UdpServer:
    def __init__(self, service: DatagramService, listen: list[Address], name: str) -> None:
        self.service = service
        self.listen = listen
        self.name = name
        self._sockets: dict[int, trio.socket.SocketType] = {}

    async def send(self, out: Outgoing) -> None:
        for data, dest in out:
            sock = self._sockets.get(family_of(dest[0]))
            if sock is None:
                continue
            try:
                await sock.sendto(data, dest)
            except OSError as exc:
                log.warning("%s: cannot send to %s: %s", self.name, format_address(dest), exc)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for address in self.listen:
                sock = await open_udp(address)
                self._sockets[sock.family] = sock
                nursery.start_soon(self._receive, sock)
                log.info("%s listening on %s", self.name, format_address(address))
            if hasattr(self.service, "handle_timer"):
                nursery.start_soon(self._timers)
            task_status.started()

    async def _receive(self, sock: trio.socket.SocketType) -> None:
        while True:
            try:
                data, source = await sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                log.debug("%s: receive error %s", self.name, exc)
                continue
            out = self.service.receive(data, (source[0], source[1]), time.time())
            if out:
                await self.send(out)

    async def _timers(self) -> None:
        while True:
            deadline = self.service.next_timer()
            wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.time()))
            await trio.sleep(wait)
            out = self.service.handle_timer(time.time())
            if out:
                await self.send(out)
