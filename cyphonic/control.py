"""The local control socket: `cyphonic status` talks to a running daemon.

An abstract Unix socket belongs to the network namespace it was bound in,
so inside a namespace `cyphonic status` finds that namespace's daemon with
no argument and no file path to agree on. It also has no file mode: any
local user in the namespace can connect. So every connection is hostile
until its credentials (SO_PEERCRED) say otherwise: only root, the daemon's
own uid and members of `control_group` are answered; a client that breaks
the rules is a counted drop, never an exception out of the daemon.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from cyphonic import config
from cyphonic.drops import Drops
from cyphonic.errors import ConfigError

log = logging.getLogger("cyphonic.control")

NAMES = {
    "node": "\0cyphonic/node",
    "adapter": "\0cyphonic/adapter",
    "cloud": "\0cyphonic/cloud",
    "trs": "\0cyphonic/trs",
}
MAX_REQUEST = 4096
MAX_CLIENTS = 16  # connections beyond this are closed at once
TIMEOUT = 2.0  # for a whole exchange: request in, reply out
# whatever a client can make our socket calls raise
CLIENT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)

Handler = Callable[[dict], dict]


def address(name: str) -> str:
    return NAMES.get(name, f"\0cyphonic/{name}")


def group_id(group: str) -> int:
    """A group name, or a numeric gid (which needs no entry in /etc/group)."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no such group '{group}'") from None


@config.kind("group name or gid (must exist), or empty")
def existing_group(value: Any, base: Path) -> str:
    """Config converter for `control_group`: empty, or a group that exists."""
    if value == "":
        return value
    group_id(config.text(value, base))
    return value


@dataclass(frozen=True)
class Peer:
    """Who is on the other end, as the kernel saw it at connect()."""

    pid: int
    uid: int
    gid: int

    @classmethod
    def of(cls, sock: trio.socket.SocketType) -> Peer:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return cls(*struct.unpack("3i", raw))

    def groups(self) -> set[int]:
        """Supplementary groups, which SO_PEERCRED does not carry, read
        from /proc right after accept(). (Only if the caller exited and a
        member's new process took its pid in between would this see the
        wrong process: a race the caller cannot steer.) Unreadable: none."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("Groups:"):
                    return {int(g) for g in line.split()[1:]}
        except (OSError, ValueError):
            pass
        return set()

    def __str__(self) -> str:
        return f"pid {self.pid} uid {self.uid}"


@dataclass(frozen=True)
class Access:
    """Root, the daemon's own uid and members of one group read the status."""

    uid: int
    group: str | None = None
    gid: int | None = None

    @classmethod
    def configured(cls, group: str | None) -> Access:
        try:
            return cls(os.geteuid(), group, group_id(group)) if group else cls(os.geteuid())
        except ValueError as exc:
            raise ConfigError("control_group", str(exc)) from None

    def refusal(self, peer: Peer) -> str | None:
        if peer.uid in (0, self.uid):
            return None
        if self.gid is not None and (peer.gid == self.gid or self.gid in peer.groups()):
            return None
        who = "root" if self.uid == 0 else f"root, uid {self.uid}"
        who += f" and group {self.group}" if self.group else ""
        return f"permission denied: uid {peer.uid} may not read this daemon (it answers {who} only)"


async def serve(name: str, handler: Handler, group: str | None = None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Answer on the control socket until cancelled; hands back its Drops.
    `group` (a name or a gid) may read the status too; unknown: ConfigError."""
    server = _Server(handler, Access.configured(group), Drops(log))
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(address(name))
    sock.listen(MAX_CLIENTS)
    task_status.started(server.drops)
    await server.run(trio.SocketListener(sock))


class _Server:
    def __init__(self, handler: Handler, access: Access, drops: Drops) -> None:
        self.handler = handler
        self.access = access
        self.drops = drops
        self.clients = 0

    async def run(self, listener: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # out of file descriptors and the like: wait, not die
                    self.drops("accept failed", detail=exc.strerror or str(exc))
                    await trio.sleep(0.1)
                    continue
                if self.clients >= MAX_CLIENTS:
                    self.drops("too many clients")
                    await stream.aclose()
                    continue
                self.clients += 1
                nursery.start_soon(self._answer, stream)

    async def _answer(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await self._exchange(stream)
        finally:
            self.clients -= 1

    async def _exchange(self, stream: trio.SocketStream) -> None:
        """One request, one reply. Only the socket calls are guarded: an
        exception from the handler is a bug and propagates."""
        peer = None
        with trio.move_on_after(TIMEOUT) as timer:
            try:
                peer = Peer.of(stream.socket)
                line = await _receive_line(stream)
            except CLIENT_GONE as exc:
                self.drops("client gone", peer, type(exc).__name__)
                return
            reply = self._reply(peer, line)
            try:
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except CLIENT_GONE as exc:
                self.drops("client gone", peer, type(exc).__name__)
        if timer.cancelled_caught:
            self.drops("timeout", peer)

    def _reply(self, peer: Peer, line: bytes) -> dict:
        """The handler's answer, or an error for a refused peer or a bad request."""
        refusal = self.access.refusal(peer)
        if refusal:
            self.drops("permission denied", peer)
            return {"error": refusal}
        try:
            request = json.loads(line.decode() or "{}")
            if not isinstance(request, dict):
                raise ValueError("request must be an object")
        except (ValueError, RecursionError) as exc:  # UnicodeError and JSONDecodeError are ValueErrors
            self.drops("bad request", peer, str(exc))
            return {"error": f"bad request: {exc}"}
        try:
            return self.handler(request)
        except Exception as exc:  # a bug in a status page must not take the daemon down
            log.exception("control request failed")
            return {"error": f"internal error: {type(exc).__name__}: {exc}"}


async def _receive_line(stream: trio.SocketStream) -> bytes:
    """Up to the first newline, end of stream or MAX_REQUEST bytes."""
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST:
        chunk = await stream.receive_some(MAX_REQUEST - len(data))
        if not chunk:
            break
        data += chunk
    return data.partition(b"\n")[0]


def query(name: str, request: dict | None = None, timeout: float = 3.0) -> dict:
    """Blocking client for the CLI."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address(name))
        sock.sendall(json.dumps(request or {}).encode() + b"\n")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)
