"""Tunnel messages between MN and CN (seed: tunnel establishment, data).

Tunnel Request/Response carry a hello sealed (XChaCha20-Poly1305, random
nonce) under the MN–CN key; the End Key comes from the X25519 agreement of
the two ephemeral keys in the hellos. Capsule Message (data), Keep Alive,
Keep Alive Ack, Tunnel Update and its Ack, Rekey Request and Rekey
Response share one layout: receiver index, 64-bit counter (the nonce),
ChaCha20-Poly1305-IETF ciphertext + 16-byte tag, with the 13 header bytes as
associated data. 29 bytes of overhead per packet.
"""

import struct

from construct import Bytes, GreedyBytes, Int8ub, Int32ub, Int32ul, Int64ub, Int64ul, Struct, Terminated

from cyphonic.wire.common import Fqdn, Locator, MessageType

TunnelRequest = Struct(
    "type" / MessageType,
    "path_id" / Int32ub,
    "sender_index" / Int32ub,
    "sealed" / GreedyBytes,  # TunnelHello under the MN–CN key; AAD = 9 header bytes
)

TunnelResponse = Struct(
    "type" / MessageType,
    "path_id" / Int32ub,
    "sender_index" / Int32ub,
    "receiver_index" / Int32ub,
    "sealed" / GreedyBytes,  # TunnelHello under the MN–CN key; AAD = 13 header bytes
)

TunnelHello = Struct(
    "fqdn" / Fqdn,
    "vip4" / Bytes(4),
    "vip6" / Bytes(16),
    "ephemeral" / Bytes(32),
    "timestamp" / Int64ub,
    # cipher suites (crypto.SUITE_BITS): in the Tunnel Request the ones the
    # initiator offers, in the Tunnel Response the one the responder chose
    "suites" / Int8ub,
    Terminated,
)

# Little-endian so the hot path packs the header with one struct call and
# the counter is the nonce's low 8 bytes as is.
Capsule = Struct(
    "type" / MessageType,
    "receiver_index" / Int32ul,
    "counter" / Int64ul,
    "sealed" / GreedyBytes,
)

CAPSULE_HEADER = 13
TAG = 16
OVERHEAD = CAPSULE_HEADER + TAG

# The hot path's encoder/decoder of the Capsule header; tests prove it
# builds and accepts exactly what the `Capsule` schema does.
CAPSULE_HEADER_STRUCT = struct.Struct("<BIQ")

# The types with the Capsule layout: the data plane's, not signaling's.
DATA_TYPES = frozenset(
    int(MessageType.encmapping[name])
    for name in (
        "CapsuleMessage",
        "KeepAlive",
        "KeepAliveAck",
        "TunnelUpdate",
        "RekeyRequest",
        "RekeyResponse",
        "TunnelUpdateAck",
    )
)

# Plaintext of a Tunnel Update: the sender's new locator (mobility, and
# the address a hole punch aims at) and a nonce; the Tunnel Update Ack
# echoes the nonce, which ends the update's retransmissions.
UPDATE_NONCE = 8
TunnelUpdateBody = Struct("locator" / Locator, "nonce" / Bytes(UPDATE_NONCE), Terminated)
TunnelUpdateAckBody = Struct("nonce" / Bytes(UPDATE_NONCE), Terminated)

# Plaintext of a Keep Alive that probes a direct path (empty otherwise); the
# Keep Alive Ack that answers it carries the same bytes back.
PROBE_CHALLENGE = 8
Probe = Struct("challenge" / Bytes(PROBE_CHALLENGE), Terminated)

# Rekeying (protocols/tunnel.md#rekeying): both sealed under the current End
# Key. The initiator offers its next receiver index and a fresh X25519 key...
RekeyRequestBody = Struct(
    "sender_index" / Int32ub,  # the index the responder puts in capsules under the new keys
    "ephemeral" / Bytes(32),
    Terminated,
)

# ... and the responder answers with its own.
RekeyResponseBody = Struct(
    "sender_index" / Int32ub,  # the index the initiator puts in capsules under the new keys
    "receiver_index" / Int32ub,  # the request's sender_index: which request this answers
    "ephemeral" / Bytes(32),
    Terminated,
)
