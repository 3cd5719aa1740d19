"""A UDP socket stand-in that records what the data plane sends."""

from __future__ import annotations


class RecordingSocket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data, address):
        self.sent.append((bytes(data), address))
        return len(data)

    def sendmsg(self, buffers, ancdata, flags, address):
        self.sent.append((b"".join(bytes(b) for b in buffers), address))
        return 0
