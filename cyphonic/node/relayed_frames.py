"""Relayed data frames on the batch data path (protocols/relay.md): a
frame the TRS forwarded from the peer is checked (its relay MAC) where it
lies in the receive buffer and its capsule opened in place, like any
capsule; the sending side builds its frames in the send buffer
(PacketHandlingModule.send_frame_sealed). A mixin of PacketHandlingModule.

Only data frames of sessions our installed tunnels use take this path.
Sealed frames (handshakes, binds, updates), frames of unknown sessions and
frames whose inner datagram is not a capsule go to the Signaling Module,
which refuses or handles them as before."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cyphonic import crypto
from cyphonic.core import tunnel as core
from cyphonic.core.relay import RelayLink
from cyphonic.crypto import RELAY_TAG, PacketBuffer
from cyphonic.wire.relay import FROM_RESPONDER, RELAYED_HEAD, RELAYED_HEADER, SEALED
from cyphonic.wire.tunnel import DATA_TYPES, OVERHEAD

if TYPE_CHECKING:
    from cyphonic.drops import Drops

Address = tuple[str, int]
SHORTEST = RELAYED_HEADER + OVERHEAD + RELAY_TAG


class RelayedFrames:
    # What this mixin uses from PacketHandlingModule. For the type checker
    # only: a definition here would shadow the real one.
    if TYPE_CHECKING:
        drops: Drops

        def receive_at(
            self, buf: PacketBuffer, start: int, end: int, source: Address, now: float, via_relay: bool = False
        ) -> None: ...

    def __init__(self) -> None:
        self._relay_links: dict[int, RelayLink] = {}  # session id -> the link of an installed tunnel

    def _link_relay(self, tunnel: core.Tunnel) -> None:
        relay = tunnel.path.relay
        if relay is not None:
            self._relay_links[relay.session_id] = relay

    def _unlink_relay(self, tunnel: core.Tunnel) -> None:
        relay = tunnel.path.relay
        if relay is not None and self._relay_links.get(relay.session_id) is relay:
            del self._relay_links[relay.session_id]

    def receive_relayed_at(self, buf: PacketBuffer, start: int, end: int, source: Address, now: float) -> bool:
        """A Relayed frame in buf[start:end]: True if it was a data frame of
        one of our sessions (delivered, or dropped for a bad MAC), False if
        the Signaling Module must have it."""
        if end - start < SHORTEST:
            return False
        _, session, flags = RELAYED_HEAD.unpack_from(buf.data, start)
        link = self._relay_links.get(session)
        if (
            link is None
            or flags & SEALED
            or flags & FROM_RESPONDER == link.flags
            or buf.data[start + RELAYED_HEADER] not in DATA_TYPES
        ):
            return False
        if not crypto.relay_mac_ok_at(link.mac_key, buf, start, end - start - RELAY_TAG):
            self.drops("relayed frame with a bad MAC", source)
            return True
        self.receive_at(buf, start + RELAYED_HEADER, end - RELAY_TAG, source, now, via_relay=True)
        return True
