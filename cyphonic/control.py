"""The local control socket: `cyphonic status` talks to a running daemon.

An abstract Unix socket belongs to the network namespace it was bound in,
so inside a namespace `cyphonic status` finds that namespace's daemon with
no argument and no file path to agree on.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Callable

import trio

log = logging.getLogger("cyphonic.control")

NAMES = {"node": "\0cyphonic/node", "cloud": "\0cyphonic/cloud", "trs": "\0cyphonic/trs"}
MAX_REQUEST = 4096


def address(name: str) -> str:
    return NAMES.get(name, f"\0cyphonic/{name}")


async def serve(name: str, handler: Callable[[dict], dict], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(address(name))
    sock.listen(16)
    listener = trio.SocketListener(sock)
    task_status.started()
    async with trio.open_nursery() as nursery:
        while True:
            stream = await listener.accept()
            nursery.start_soon(_answer, stream, handler)


async def _answer(stream: trio.SocketStream, handler: Callable[[dict], dict]) -> None:
    async with stream:
        with trio.move_on_after(2):
            data = b""
            while b"\n" not in data and len(data) < MAX_REQUEST:
                chunk = await stream.receive_some(MAX_REQUEST)
                if not chunk:
                    break
                data += chunk
            try:
                request = json.loads(data.decode() or "{}")
                if not isinstance(request, dict):
                    raise ValueError("request must be an object")
                reply = handler(request)
            except (ValueError, UnicodeError) as exc:
                reply = {"error": f"bad request: {exc}"}
            await stream.send_all(json.dumps(reply).encode() + b"\n")


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
