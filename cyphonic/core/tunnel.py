"""The per-tunnel data state, sans I/O: the End Keys in use (and those of a
rekey), counters and the replay window, the endpoint and its moves, the
direct candidates of a relayed tunnel. core.handshake makes a Tunnel;
core.rekey rotates its keys; core.liveness judges it.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cyphonic import crypto
from cyphonic.core.relay import RelayLink
from cyphonic.core.replay import COUNTER_LIMIT, ReplayWindow
from cyphonic.errors import AuthenticationError
from cyphonic.wire import tunnel as wire
from cyphonic.wire.common import TYPE

if TYPE_CHECKING:
    from cyphonic.core.rekey import Pending  # rekey imports this module

# Counters are nonces and never wrap (protocols/tunnel.md#counter-limits):
# no counter at or above COUNTER_LIMIT is sealed or accepted, and data, Keep
# Alives and Tunnel Updates already stop at SEND_LIMIT, which leaves the
# last 2**16 counters for the rekey messages that retire the keys.
SEND_LIMIT = COUNTER_LIMIT - 2**16

# relay -> direct: at most this many direct addresses are probed at once,
# each at most once per PROBE_INTERVAL seconds
MAX_CANDIDATES = 4
PROBE_INTERVAL = 0.1

_pack_header = wire.CAPSULE_HEADER_STRUCT.pack


class CounterExhausted(Exception):
    """The send counter reached its limit: nothing more goes under these keys."""


@dataclass(frozen=True)
class PeerInfo:
    fqdn: str
    vip4: ipaddress.IPv4Address
    vip6: ipaddress.IPv6Address
    # packed forms, computed once: the data path compares them per packet
    vip4_bytes: bytes = field(init=False, repr=False, compare=False)
    vip6_bytes: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vip4_bytes", self.vip4.packed)
        object.__setattr__(self, "vip6_bytes", self.vip6.packed)


@dataclass
class Path:
    """What the NMS told this node about one route (Route Direction)."""

    path_id: int
    process: str
    initiator: bool
    peer: PeerInfo
    peer_address: tuple[str, int]  # the peer, or the TRS on a relayed path
    tunnel_key: bytes  # seals the hellos: MN–CN key, or the Temp Key when relayed
    relay: RelayLink | None = None  # on a relayed path


@dataclass(slots=True)
class Keys:
    """One generation of End Keys: the indices that name it, its send
    counter and its replay window."""

    local_index: int
    remote_index: int
    cipher: crypto.DataCipher
    send_counter: int = 0
    replay: ReplayWindow = field(default_factory=ReplayWindow)


@dataclass(slots=True)
class Candidate:
    """A direct address the peer's newest datagram came from while the
    tunnel is relayed: the challenge a probe carries there, and when."""

    challenge: bytes
    probed: float = -math.inf


# the seed's Route Direction processes, by what opened the tunnel
PATH_NAMES = {"TunnelRequestToCN": "direct", "TunnelRequestToNATcn": "reverse", "TunnelRequestToTRS": "direct"}


@dataclass
class Tunnel:
    """An established tunnel: End Keys, counters, endpoint and counters.

    The current keys live in the tunnel's own fields (the data path reads
    them per packet); rekeying (core.rekey) rotates them."""

    path: Path
    local_index: int
    remote_index: int
    endpoint: tuple[str, int]
    cipher: crypto.DataCipher
    established: float
    send_counter: int = 0
    replay: ReplayWindow = field(default_factory=ReplayWindow)
    tx_bytes: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    rx_packets: int = 0
    last_received: float = 0.0
    last_sent: float = 0.0
    last_data_sent: float = 0.0
    punching: bool = False
    announced: float = -math.inf  # when we last told the peer where the NMS sees us (a punch round)
    punch_retry: float = 0.0  # relayed: seconds until the next punch round (0: not yet failed)
    punch_due: float = 0.0  # ... and when it is due
    # mobility: the nonce of our Tunnel Update still waiting for its Ack;
    # when the path last drew a probe, and when it was declared failed
    update_nonce: bytes | None = None
    probed: float = -math.inf
    failed_at: float | None = None
    unanswered_since: float | None = None  # the supervisor first saw data unanswered
    # the supervisor's view of arrivals: rx_packets at its last look, and
    # the last look that found datagrams flowing in
    rx_mark: int = 0
    rx_flowing: float = -math.inf
    # rekeying (core.rekey): the keys before the last rotation, which still
    # open what was in flight until `previous_until` (inf: until the peer is
    # seen using the new ones); the responder's next keys, which open only,
    # until the initiator's first datagram under them
    previous: Keys | None = None
    previous_until: float = math.inf
    next: Keys | None = None
    rekey_pending: Pending | None = None  # the initiator's request in flight
    rekey_answered: tuple[bytes, bytes] | None = None  # the responder's last (request, response)
    rekeys: int = 0
    # relay -> direct: candidate addresses, and the (tunnel, address) pairs
    # the data path must probe (it shares one list among its tunnels)
    candidates: dict[tuple[str, int], Candidate] = field(default_factory=dict)
    probes: list = field(default_factory=list)
    owner: Any = None  # whose tunnel it is where a process runs several identities (the adapter's general nodes)
    fast: Any = None  # the compiled loops' state for the current keys (fastpath.TunnelLoops)

    @property
    def peer(self) -> PeerInfo:
        return self.path.peer

    def next_counter(self, limit: int = SEND_LIMIT) -> int:
        c = self.send_counter
        if c >= limit:
            raise CounterExhausted(f"send counter at {c}")
        self.send_counter = c + 1
        return c

    def seal(self, type_: int, plaintext: bytes, limit: int = SEND_LIMIT) -> bytes:
        """A capsule under the current keys (CounterExhausted at `limit`:
        only rekey messages may pass SEND_LIMIT)."""
        c = self.send_counter  # next_counter, inlined: this is the per-packet path
        if c >= limit:
            raise CounterExhausted(f"send counter at {c}")
        self.send_counter = c + 1
        return self.cipher.seal(_pack_header(type_, self.remote_index, c), plaintext)

    def open(self, datagram: bytes, source: tuple[str, int], now: float) -> bytes | None:
        """Plaintext of an authenticated, fresh capsule (None if replayed),
        under whichever keys its index names.

        Moves the endpoint only for a datagram that opened and is newer than
        every counter seen: a replay from elsewhere moves nothing."""
        buf = crypto.PacketBuffer(data=bytearray(datagram))
        index = wire.CAPSULE_HEADER_STRUCT.unpack_from(buf.data, 0)[1] if len(datagram) >= wire.CAPSULE_HEADER else -1
        if index == self.local_index or index < 0:
            length = self.open_at(buf, 0, len(datagram), source, now)
        else:
            length = self.open_other(index, buf, 0, len(datagram), source, now)
        if length is None:
            return None
        return bytes(buf.view[wire.CAPSULE_HEADER : wire.CAPSULE_HEADER + length])

    @property
    def relayed(self) -> bool:
        """Sending through the TRS (a relayed path not yet punched direct)."""
        return self.path.relay is not None and self.endpoint == self.path.peer_address

    @property
    def path_name(self) -> str:
        """ "direct", "reverse" or "relay", as status, metrics and the bench name it: a
        relayed path punched direct is "direct"."""
        return "relay" if self.relayed else PATH_NAMES.get(self.path.process, self.path.process)

    def open_at(
        self,
        buf: crypto.PacketBuffer,
        start: int,
        length: int,
        source: tuple[str, int],
        now: float,
        via_relay: bool = False,
    ) -> int | None:
        """`open` for a capsule lying in a PacketBuffer: opened in place;
        returns the plaintext length (None if replayed). A capsule that came
        through the TRS never moves a tunnel that a punch made direct."""
        counter = wire.CAPSULE_HEADER_STRUCT.unpack_from(buf.data, start)[2]
        if not self.replay.check(counter):
            return None
        plain = self.cipher.open_at(buf, start, length, wire.CAPSULE_HEADER)
        if self.replay.update(counter) and source != self.endpoint:
            self._newest_from(source, via_relay, now)
        self.last_received = now
        return plain

    def open_other(
        self,
        index: int,
        buf: crypto.PacketBuffer,
        start: int,
        length: int,
        source: tuple[str, int],
        now: float,
        via_relay: bool = False,
    ) -> int | None:
        """`open_at` for a capsule under the previous or the next keys
        (`index` says which). The next keys are the peer's newest and may
        move the endpoint; the previous ones never do."""
        keys = self.next if self.next is not None and self.next.local_index == index else self.previous
        if keys is None or keys.local_index != index:
            raise AuthenticationError("index of keys this tunnel no longer holds")
        counter = wire.CAPSULE_HEADER_STRUCT.unpack_from(buf.data, start)[2]
        if not keys.replay.check(counter):
            return None
        plain = keys.cipher.open_at(buf, start, length, wire.CAPSULE_HEADER)
        if keys.replay.update(counter) and keys is self.next and source != self.endpoint:
            self._newest_from(source, via_relay, now)
        self.last_received = now
        return plain

    def _newest_from(self, source: tuple[str, int], via_relay: bool, now: float) -> None:
        """The newest datagram so far came from another address than the
        endpoint. Through the TRS: it never moves a tunnel a punch made
        direct. Directly while relayed: only a confirmed probe moves it
        (`confirm`). Directly while direct: the peer moved (mobility)."""
        if via_relay:
            return
        if self.relayed:
            candidate = self.candidates.get(source)
            if candidate is None or now - candidate.probed >= PROBE_INTERVAL:
                self.challenge_for(source, now)
                self.probes.append((self, source))
            return
        self.endpoint = source

    def challenge_for(self, address: tuple[str, int], now: float) -> bytes:
        """The challenge a Keep Alive probing `address` carries (a punch is
        such a probe); the same until the tunnel moves."""
        candidate = self.candidates.get(address)
        if candidate is None:
            if len(self.candidates) >= MAX_CANDIDATES:
                del self.candidates[next(iter(self.candidates))]
            candidate = self.candidates[address] = Candidate(secrets.token_bytes(wire.PROBE_CHALLENGE))
        candidate.probed = now
        return candidate.challenge

    def confirm(self, source: tuple[str, int], echo: bytes) -> bool:
        """An authenticated Keep Alive Ack from `source` carried `echo`: if
        that is the challenge probed there, the direct path works both ways
        and the tunnel leaves the relay for it."""
        candidate = self.candidates.get(source)
        if candidate is None or not self.relayed or not hmac.compare_digest(candidate.challenge, echo):
            return False
        self.endpoint = source
        self.candidates.clear()
        return True

    def rotate(self, keys: Keys, now: float) -> None:
        """`keys` become the current keys; the current ones the previous
        (they open only). Endpoint, path and byte counters stay."""
        self.previous = Keys(self.local_index, self.remote_index, self.cipher, self.send_counter, self.replay)
        keys.cipher.take_buffers(self.cipher)  # the previous keys never seal again
        self.local_index, self.remote_index, self.cipher = keys.local_index, keys.remote_index, keys.cipher
        self.send_counter, self.replay = keys.send_counter, keys.replay
        self.established = now
        self.rekeys += 1

    def indices(self) -> list[int]:
        """Every index the tunnel receives on: current, previous, next."""
        return [self.local_index] + [k.local_index for k in (self.previous, self.next) if k is not None]


def new_index() -> int:
    return secrets.randbits(32)


CAPSULE = TYPE["CapsuleMessage"]
KEEPALIVE = TYPE["KeepAlive"]
KEEPALIVE_ACK = TYPE["KeepAliveAck"]
TUNNEL_UPDATE = TYPE["TunnelUpdate"]
REKEY_REQUEST = TYPE["RekeyRequest"]
REKEY_RESPONSE = TYPE["RekeyResponse"]
TUNNEL_UPDATE_ACK = TYPE["TunnelUpdateAck"]
