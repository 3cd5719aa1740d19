"""Signaling with the AS and the NMS (seed: authentication, registration,
route selection). After the type byte every signaling message carries a
version and a transaction id, so retransmissions are matched and duplicates
suppressed. Bodies marked `sealed` are XChaCha20-Poly1305 under the key the
sequence names; their plaintext schemas are the `*Body` structs below.
"""

from construct import (
    Bytes,
    Const,
    Enum,
    Flag,
    GreedyBytes,
    Int8ub,
    Int16ub,
    Int32ub,
    Int64ub,
    PascalString,
    Prefixed,
    PrefixedArray,
    Struct,
    Terminated,
)

from cyphonic.wire.common import Fqdn, Locator, MessageType

Header = Struct(
    "type" / MessageType,
    "version" / Const(1, Int8ub),
    "txid" / Int32ub,
)

Blob = Prefixed(Int16ub, GreedyBytes)

# --- AS: Login Request / Response / Reject --------------------------------

LoginRequest = Struct(
    "header" / Header,
    "certificate" / Blob,
    "nonce" / Bytes(16),
    "timestamp" / Int64ub,
    "ephemeral" / Bytes(32),
    "signature" / Bytes(64),  # by the node's identity over all bytes before it
    Terminated,
)

LoginResponse = Struct(
    "header" / Header,
    "certificate" / Blob,  # the AS's own certificate, issued by the same CA
    "ephemeral" / Bytes(32),
    "sealed" / Blob,  # LoginGrant under the login key (X25519 of both ephemerals)
    "signature" / Bytes(64),  # by the AS over request nonce + all bytes before it
    Terminated,
)

LoginGrant = Struct(
    "fqdn" / Fqdn,
    "vip4" / Bytes(4),
    "vip6" / Bytes(16),
    "vip4_prefix" / Int8ub,  # the overlay's IPv4 prefix length (routed to the TUN)
    "vip6_prefix" / Int8ub,
    "session_key" / Bytes(32),  # MN–NMS session key
    "ticket" / Blob,  # Ticket sealed under the AS–NMS key; opaque to the node
    "expires" / Int64ub,
    Terminated,
)

RejectReason = Enum(
    Int8ub,
    malformed=1,
    unknown_ca=2,
    expired=3,
    not_yet_valid=4,
    revoked=5,
    bad_signature=6,
    wrong_role=7,
    stale=8,
    pool_exhausted=9,
    unavailable=10,  # the AS cannot decide now (revocation list, database): retry later
)

LoginReject = Struct(
    "header" / Header,
    "reason" / RejectReason,
    "certificate" / Blob,
    "signature" / Bytes(64),  # by the AS over request nonce + all bytes before it
    Terminated,
)

Ticket = Struct(
    "fqdn" / Fqdn,
    "vip4" / Bytes(4),
    "vip6" / Bytes(16),
    "session_key" / Bytes(32),
    "expires" / Int64ub,  # never after the certificate's not_after
    "serial" / Int64ub,  # the certificate's: the NMS refuses a revoked one
    "issued" / Int64ub,  # AS clock, microseconds: a newer ticket always wins at the NMS
    Terminated,
)

# --- NMS: every node->NMS request carries its ticket ------------------------
# The NMS needs no session table to authenticate a request: the ticket gives
# it the session key, so an NMS restart loses nothing but soft state.

NmsRequest = Struct(
    "header" / Header,
    "ticket" / Blob,
    "sealed" / GreedyBytes,  # body under the MN–NMS session key
)

NmsReply = Struct(
    "header" / Header,
    "sealed" / GreedyBytes,  # body under the session key of the receiver
)

RegistrationBody = Struct(
    "sequence" / Int64ub,  # strictly increasing: a replay never moves a locator
    "locators" / PrefixedArray(Int8ub, Locator),
    Terminated,
)

RegistrationAck = Struct(
    "observed" / Locator,
    "nat" / Flag,
    "refresh" / Int16ub,  # seconds until the node should register again
    Terminated,
)

# Freshness: every request or direction that makes its receiver create
# state carries the sender's clock; a receiver refuses it outside
# core.freshness.MAX_SKEW and remembers its id until then (a replay is refused).
DirectionRequestBody = Struct(
    "timestamp" / Int64ub,
    "target" / Fqdn,
    Terminated,
)

Process = Enum(
    Int8ub,
    TunnelRequestToCN=1,  # direct: MN opens the tunnel to CN
    TunnelRequestToNATcn=2,  # reverse: CN behind NAPT opens it to MN
    TunnelRequestToTRS=3,  # relay (TRS)
)

Role = Enum(Int8ub, initiator=1, responder=2)

RouteDirectionBody = Struct(
    "timestamp" / Int64ub,  # NMS clock
    "process" / Process,
    "role" / Role,
    "path_id" / Int32ub,
    "peer_fqdn" / Fqdn,
    "peer_vip4" / Bytes(4),
    "peer_vip6" / Bytes(16),
    "peer_locator" / Locator,
    "tunnel_key" / Bytes(32),  # MN–CN key (direct) / Tunnel Key (relay)
    "temporary_key" / Bytes(32),  # Temp Key (relay only; zeros otherwise)
    Terminated,
)

ErrorCode = Enum(
    Int8ub,
    not_registered=1,
    unknown_peer=2,
    unreachable=3,
    bad_request=4,
    rate_limited=5,  # too many route selections from this node: retry later
    in_progress=6,  # the peer is selecting a route to this node now: its path is coming
)

SignalingErrorBody = Struct(
    "code" / ErrorCode,
    "detail" / PascalString(Int8ub, "utf8"),
    Terminated,
)

AckBody = Struct("timestamp" / Int64ub, "path_id" / Int32ub, Terminated)

# --- AS: Node Information Request / Response (an adapter's general nodes) ----
# The adapter asks exactly as a node logs in (its certificate, a fresh nonce,
# an ephemeral key, its signature); the list comes back sealed under the
# login key of that exchange, so MACs and names never cross the wire in the
# clear. A refusal is a LoginReject.

NodeInformationRequest = Struct(
    "header" / Header,
    "certificate" / Blob,  # the adapter's certificate (role adapter)
    "nonce" / Bytes(16),
    "timestamp" / Int64ub,
    "ephemeral" / Bytes(32),
    "signature" / Bytes(64),  # by the adapter's identity over all bytes before it
    Terminated,
)

NodeInformationResponse = Struct(
    "header" / Header,
    "certificate" / Blob,  # the AS's own certificate
    "ephemeral" / Bytes(32),
    "sealed" / Blob,  # NodeInformationBody under the login key (X25519 of both ephemerals)
    "signature" / Bytes(64),  # by the AS over request nonce + all bytes before it
    Terminated,
)

GeneralNodeEntry = Struct(
    "mac" / Bytes(6),
    "fqdn" / Fqdn,
    "ipv6" / Flag,  # the adapter also serves it IPv6 (RA, DHCPv6)
    "vip4" / Bytes(4),
    "vip6" / Bytes(16),
)

NodeInformationBody = Struct(
    "nodes" / PrefixedArray(Int16ub, GeneralNodeEntry),
    Terminated,
)
