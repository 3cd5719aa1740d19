"""sd_notify: tell systemd (a `Type=notify` unit) the daemon's state.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket
named by $NOTIFY_SOCKET (an abstract name when it starts with "@"); see
sd_notify(3). It is this small function rather than a dependency: the
pure-Python `sdnotify` package is unmaintained since 2017, and
systemd-python needs libsystemd's headers and a compiler to install.
Without $NOTIFY_SOCKET (not started by systemd) every call does nothing.
"""

from __future__ import annotations

import os
import signal
import socket
from types import FrameType


def notify(*fields: str) -> bool:
    """Send `fields` ("READY=1", "STATUS=…") as one datagram; False when
    there is no socket to send to or the send fails (systemd then sees
    nothing, and a notify unit times out: the journal says why)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    message = "\n".join(field.replace("\n", " ") for field in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError:
        return False
    return True


def ready(status: str) -> bool:
    """The daemon is ready for its dependants; `status` is the line that
    `systemctl status` shows."""
    return notify("READY=1", f"STATUS={status}")


def stopping(status: str = "stopping") -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


def stopping_on_sigterm() -> None:
    """Under systemd, send STOPPING=1 when `systemctl stop` sends SIGTERM,
    then die of it as before (the default action: the kernel closes the
    TUN and the sockets). Elsewhere SIGTERM is left alone."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        stopping()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, handler)
