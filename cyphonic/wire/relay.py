"""Tunnel Relay Service messages (seed: "route selection via TRS", "tunnel
establishment via TRS"); the normative text is protocols/relay.md.

- Relay Request / Response: NMS <-> TRS, sealed under the NMS–TRS key; the
  NMS hands the TRS a session id and that session's Tunnel Key.
- Relayed: a node's datagram for its peer, sent to the TRS. The TRS
  forwards it unchanged to the other end of the session. Frames that may
  move an endpoint (Tunnel Request / Response / Update) are *sealed* under
  the Tunnel Key with a sequence number; data frames are only
  *authenticated* with it (their content is already end-to-end encrypted
  under the End Key, which the TRS never learns).
"""

import struct

from construct import Bytes, Flag, GreedyBytes, Int8ub, Int16ub, Int32ub, Int64ub, PrefixedArray, Struct, Terminated

from cyphonic.wire.common import Locator, MessageType
from cyphonic.wire.signaling import Header

RelayRequest = Struct(
    "header" / Header,
    "sealed" / GreedyBytes,  # RelayRequestBody under the NMS–TRS key; AAD = header
)

RelayRequestBody = Struct(
    "timestamp" / Int64ub,  # NMS clock: a replayed request never recreates a session
    "session_id" / Int32ub,
    "tunnel_key" / Bytes(32),
    "lifetime" / Int16ub,  # seconds a silent session is kept
    Terminated,
)

RelayResponse = Struct(
    "header" / Header,
    "sealed" / GreedyBytes,  # RelayResponseBody under the NMS–TRS key; AAD = header
)

RelayResponseBody = Struct(
    "session_id" / Int32ub,
    "accepted" / Flag,
    "locators" / PrefixedArray(Int8ub, Locator),  # where the nodes reach this TRS
    Terminated,
)

# flags of a Relayed frame
FROM_RESPONDER = 0x01  # else from the initiator
SEALED = 0x80  # `inner` is XChaCha20-Poly1305 under the Tunnel Key, with a sequence

RELAY_TAG = 16

Relayed = Struct(
    "type" / MessageType,
    "session_id" / Int32ub,
    "flags" / Int8ub,
    "inner" / GreedyBytes,  # SEALED: seal(SealedInner); else inner datagram + 16-byte MAC
)

# The fixed head of `Relayed` (type, session_id, flags) as a struct.Struct:
# a node and the TRS pack or unpack it once per relayed data packet, where a
# construct parse would cost more than the MAC. Same bytes as `Relayed`.
RELAYED_HEAD = struct.Struct("!BIB")
RELAYED_HEADER = RELAYED_HEAD.size


def session_of(frame: bytes) -> int | None:
    """The session id of a Relayed frame (None if it is too short to have one)."""
    return RELAYED_HEAD.unpack_from(frame)[1] if len(frame) >= RELAYED_HEADER else None


SealedInner = Struct(
    "sequence" / Int64ub,  # strictly increasing per sender: only a newer one moves an endpoint
    "datagram" / GreedyBytes,
)
