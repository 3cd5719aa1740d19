"""Packet Handling Module (seed): encapsulates virtual-IP packets from the
TUN into Capsule Messages and back.

Two data paths share this module (DESIGN section 10):
- offload: the TUN hands over GSO super-packets behind a virtio header; each
  is cut into segments that are sealed one by one and sent with UDP GSO;
  received GRO batches are opened and in-order TCP segments coalesced into
  one TUN write, flushed at the end of every batch.
- plain: one packet per read, per send and per write (any kernel).
The reader drains the TUN until EAGAIN on each wake-up and seals and sends
in place: no channel hop per packet.

On the offload path the per-packet loops run compiled where the extension
is built (node.compiled_loops, cyphonic.fastpath); the Python loops here are
their reference and fallback, and produce the same bytes. The tunnel table
is node.tunnel_table.

The per-packet path reads only a tunnel's current keys. Rekeying
(core.rekey), the keys it retires or has not yet used (looked up only when
an index is not a current one) and probes of a direct path (sent at the end
of a receive batch) stay off it.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
import time
from collections.abc import Callable

import trio

from cyphonic import crypto, fastpath
from cyphonic.core import offload
from cyphonic.core import tunnel as core
from cyphonic.core.replay import COUNTER_LIMIT
from cyphonic.crypto import RELAY_TAG, PacketBuffer
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.kernel.batch import MAX_GSO_BYTES, MAX_GSO_SEGMENTS, send_run, send_segments
from cyphonic.node.compiled_loops import CompiledLoops
from cyphonic.node.control_messages import TunnelControl
from cyphonic.node.relayed_frames import RelayedFrames
from cyphonic.node.tunnel_table import TunnelTable
from cyphonic.wire.common import TYPE
from cyphonic.wire.relay import RELAYED_HEADER
from cyphonic.wire.tunnel import CAPSULE_HEADER, CAPSULE_HEADER_STRUCT, DATA_TYPES, OVERHEAD

log = logging.getLogger("cyphonic.packet")

Address = tuple[str, int]
TUN_READ = 65535 + offload.VNET_HDR_LEN
RELAYED = TYPE["Relayed"]
# Test-only: drop this fraction of received outer datagrams (the kernel has
# no netem); read once, so the hot path pays one float comparison.
TEST_LOSS = float(os.environ.get("CYPHONIC_TEST_LOSS", "0") or 0)


class PacketHandlingModule(TunnelTable, TunnelControl, RelayedFrames):
    def __init__(
        self, tun_fd: int, sockets: dict[int, socket.socket], *, vnet: bool = False, gso: bool = False
    ) -> None:
        RelayedFrames.__init__(self)
        self.tun_fd = tun_fd
        self.sockets = sockets
        self.vnet = vnet
        self.gso = gso
        TunnelTable.__init__(self)
        self.drops = Drops(log)
        self.coalescer: offload.Coalescer | fastpath.Coalescer = offload.Coalescer(self._write_frame)
        self._tun_buffer = bytearray(TUN_READ)
        self._out = PacketBuffer(MAX_GSO_BYTES + 2048)
        # the run being built in _out: one peer, equal-size datagrams
        self._run_tunnel: core.Tunnel | None = None
        self._run_length = self._run_count = self._run_inner = self._run_size = 0
        self._run_short = False
        self.loss = TEST_LOSS
        # the compiled per-packet loops (node.compiled_loops), when in use
        self.compiled: CompiledLoops | None = None
        # the Signaling Module's hook for a peer's Tunnel Update or its Ack
        self.on_tunnel_message: Callable[[core.Tunnel, int, bytes], None] | None = None
        # mobility: when the first authenticated datagram came after the
        # host's last move (None: none yet; the first packet on the new path)
        self.heard_after_move: float | None = 0.0
        if self.loss:
            log.warning("test loss hook active: dropping %.2f%% of received datagrams", self.loss * 100)

    # -- sending --------------------------------------------------------------

    def _socket_for(self, tunnel: core.Tunnel) -> socket.socket:
        return self.sockets[socket.AF_INET6 if ":" in tunnel.endpoint[0] else socket.AF_INET]

    def send(self, tunnel: core.Tunnel, type_: int, plaintext: bytes) -> None:
        if type_ != core.CAPSULE:
            self._send_control(tunnel, type_, plaintext)
            return
        try:
            datagram = tunnel.seal(type_, plaintext)
        except core.CounterExhausted:
            self._exhausted(tunnel)
            return
        self.send_many(tunnel, [datagram], len(plaintext))
        tunnel.last_data_sent = tunnel.last_sent

    def send_direct(
        self, tunnel: core.Tunnel, type_: int, plaintext: bytes, address: Address, ttl: int | None = None
    ) -> None:
        """A capsule straight to `address`, around the relay (a punch);
        `ttl` limits how far it goes (per packet, the socket is shared)."""
        v6 = ":" in address[0]
        sock = self.sockets.get(socket.AF_INET6 if v6 else socket.AF_INET)
        if sock is None:
            return
        level, option = (socket.IPPROTO_IPV6, socket.IPV6_HOPLIMIT) if v6 else (socket.IPPROTO_IP, socket.IP_TTL)
        cmsg = [(level, option, struct.pack("i", ttl))] if ttl else []
        try:
            sock.sendmsg([tunnel.seal(type_, plaintext)], cmsg, 0, address)
        except core.CounterExhausted:
            self._exhausted(tunnel)
        except OSError as exc:
            self.drops("send failed", address, str(exc))

    def send_many(self, tunnel: core.Tunnel, datagrams: list[bytes], inner_bytes: int, sealed: bool = False) -> None:
        """`sealed`: through the TRS, sealed under the Tunnel Key (a frame
        that may move this end's endpoint there), not only MAC'd."""
        relay = tunnel.path.relay
        if relay is not None and tunnel.relayed:  # relayed implies a relay link; this narrows it
            datagrams = [relay.wrap(d, sealed) for d in datagrams]
        try:
            sent = send_segments(self._socket_for(tunnel), datagrams, tunnel.endpoint, self.gso)
        except OSError as exc:
            self.drops("send failed", tunnel.endpoint, str(exc))
            return
        if sent < len(datagrams):
            self.drops("socket send buffer full")
        tunnel.tx_bytes += inner_bytes
        tunnel.tx_packets += sent
        tunnel.last_sent = time.time()

    async def tun_reader(self) -> None:
        """TUN -> tunnel: drain the device on every wake-up. On the offload
        path the sealed datagrams of successive reads join one run while
        they go to the same peer at the same size (a stream of equal UDP
        packets is one system call per ~40); the run goes out when that
        changes and at the end of the drain: nothing waits for a wake-up."""
        while True:
            await trio.lowlevel.wait_readable(self.tun_fd)
            self.drain_tun()

    def drain_tun(self) -> None:
        """Everything the TUN holds, sealed and sent (node.data_thread calls
        this on its own wake-ups)."""
        fd = self.tun_fd
        buffer = self._tun_buffer
        view = memoryview(buffer)
        while True:
            if self.vnet:
                try:
                    n = os.readv(fd, [buffer])
                except BlockingIOError:
                    break
                self.send_frame_sealed(view[:n])
                continue
            try:
                frame = os.read(fd, TUN_READ)
            except BlockingIOError:
                break
            tunnel = self._route(frame)
            if tunnel is None:
                self.drops("no tunnel for destination")
                continue
            self.send(tunnel, core.CAPSULE, frame)
        self.flush_run()

    def send_frame_sealed(self, frame: memoryview, tunnel: core.Tunnel | None = None) -> None:
        """One TUN-shaped frame (virtio header + IP packet, up to a 64 KB
        super-packet) into `tunnel`, or the one its addresses route to:
        each segment is written straight into the send buffer behind its
        capsule header and sealed in place. `flush_run` sends what is left."""
        if self.compiled is not None:
            self.compiled.send_frame(frame, tunnel)
            return
        try:
            packet, parts = offload.plan(frame)
        except ParseError as exc:
            self.drops("unusable TUN frame", None, str(exc))
            return
        if tunnel is None:
            tunnel = self._route(packet)  # every segment has the super-packet's addresses
        if tunnel is None:
            self.drops("no tunnel for destination")
            return
        if tunnel is not self._run_tunnel:
            self.flush_run()
            self._run_tunnel = tunnel
        # relayed: each capsule framed for the TRS where it lies, its
        # relay head before it and its relay MAC behind it (one run too)
        relay = tunnel.path.relay if tunnel.relayed else None
        pre, post = (RELAYED_HEADER, RELAY_TAG) if relay is not None else (0, 0)
        out = self._out
        data, cipher, pack = out.data, tunnel.cipher, CAPSULE_HEADER_STRUCT.pack_into
        try:
            for header, start, end in parts:
                hl = len(header)
                plain = hl + end - start
                length = pre + OVERHEAD + plain + post
                if length > MAX_GSO_BYTES:
                    self.drops("unusable TUN frame", None, "segment larger than one datagram")
                    return
                pos = self._run_length
                # GSO: every datagram of a run has the first one's size but the last
                if pos and (
                    length > self._run_size
                    or self._run_short
                    or pos + length > MAX_GSO_BYTES
                    or self._run_count == MAX_GSO_SEGMENTS
                ):
                    self.flush_run()
                    self._run_tunnel = tunnel
                    pos = 0
                capsule = pos + pre
                pack(data, capsule, core.CAPSULE, tunnel.remote_index, tunnel.next_counter())
                body = capsule + CAPSULE_HEADER
                data[body : body + hl] = header
                data[body + hl : body + plain] = packet[start:end]
                cipher.seal_at(out, capsule, CAPSULE_HEADER, plain)
                if relay is not None:
                    data[pos:capsule] = relay.head
                    crypto.relay_mac_into(relay.mac_key, out, pos, pre + OVERHEAD + plain)
                if not pos:
                    self._run_size = length
                elif length < self._run_size:
                    self._run_short = True
                self._run_length = pos + length
                self._run_count += 1
                self._run_inner += plain
        except core.CounterExhausted:
            self._exhausted(tunnel)

    def flush_run(self) -> None:
        if self.compiled is not None:
            self.compiled.flush_run()
            return
        tunnel, length = self._run_tunnel, self._run_length
        count, inner = self._run_count, self._run_inner
        self._run_tunnel, self._run_length, self._run_count, self._run_inner = None, 0, 0, 0
        self._run_short = False
        if not length:
            return
        assert tunnel is not None  # send_frame_sealed sets the run's tunnel before it adds bytes
        self._send_run(tunnel, length, self._run_size, count, inner)

    def _send_run(self, tunnel: core.Tunnel, length: int, size: int, count: int, inner: int) -> None:
        """The run of `count` datagrams in the send buffer's first `length` bytes."""
        try:
            sent = send_run(self._socket_for(tunnel), self._out.view[:length], size, tunnel.endpoint, self.gso)
        except OSError as exc:
            self.drops("send failed", tunnel.endpoint, str(exc))
            return
        if sent < count:
            self.drops("socket send buffer full")
        tunnel.tx_bytes += inner
        tunnel.tx_packets += sent
        tunnel.last_sent = tunnel.last_data_sent = time.time()

    # -- receiving ------------------------------------------------------------

    def receive_batch(
        self,
        buf: PacketBuffer,
        n: int,
        size: int,
        source: Address,
        now: float,
        other: Callable[[int, int], None],
    ) -> None:
        """One GRO read: the datagrams in buf[:n], `size` bytes each but the
        last, opened where they lie; `other(start, end)` gets each one that
        is not data (signaling). The caller must `flush` before it reuses `buf`."""

        def one(start: int, end: int) -> None:
            self.receive_one(buf, start, end, source, now, other)

        if self.compiled is not None:
            self.compiled.receive_batch(buf, n, size, source, now, one)
        else:
            for start in range(0, n, size):
                one(start, min(start + size, n))

    def receive_one(
        self, buf: PacketBuffer, start: int, end: int, source: Address, now: float, other: Callable[[int, int], None]
    ) -> None:
        """One datagram of a batch on the Python path: data, relayed data,
        or `other` (signaling)."""
        kind = buf.data[start]
        try:
            if kind in DATA_TYPES:
                self.receive_at(buf, start, end, source, now)
                return
            if kind == RELAYED and self.receive_relayed_at(buf, start, end, source, now):
                return  # a relayed data frame, opened where it lies
        except (ParseError, AuthenticationError) as exc:
            # the methods count their own; this boundary keeps the reader alive
            self.drops(f"{type(exc).__name__} at the listener", source, str(exc).splitlines()[0])
            return
        other(start, end)

    def receive(self, data: bytes, source: Address, now: float, via_relay: bool = False) -> None:
        """One datagram given as bytes (its own buffer: what is delivered may
        stay referenced until `flush`)."""
        self.receive_at(PacketBuffer(data=bytearray(data)), 0, len(data), source, now, via_relay)

    def receive_at(
        self, buf: PacketBuffer, start: int, end: int, source: Address, now: float, via_relay: bool = False
    ) -> None:
        """A Capsule Message / Keep Alive / Keep Alive Ack / Tunnel Update
        lying in buf[start:end]; opened in place. The caller must `flush`
        before it reuses the buffer."""
        if self.loss and random.random() < self.loss:
            self.drops("test loss hook")
            return
        length = end - start
        if length < OVERHEAD:
            self.drops("truncated capsule", source)
            return
        type_, index, counter = CAPSULE_HEADER_STRUCT.unpack_from(buf.data, start)
        tunnel = self.by_index.get(index)
        try:
            if tunnel is not None:
                plain = tunnel.open_at(buf, start, length, source, now, via_relay)
            else:
                tunnel = self._others.get(index)
                if tunnel is not None:
                    plain = self._open_other(tunnel, index, buf, start, length, source, now, via_relay)
                else:
                    replaced = self._replaced.get(index)
                    if replaced is None or replaced[1] <= now or type_ != core.CAPSULE:
                        self.drops("capsule for unknown tunnel", source)
                        return
                    tunnel = replaced[0]
                    plain = tunnel.open_at(buf, start, length, source, now, via_relay)
        except AuthenticationError as exc:
            self.drops("unauthenticated capsule", source, exc.reason)
            return
        if plain is None:
            self.drops("counter at its limit" if counter >= COUNTER_LIMIT else "replayed capsule", source)
            return
        tunnel.rx_packets += 1
        if self.heard_after_move is None:
            self.heard_after_move = now
        body = start + CAPSULE_HEADER
        if type_ == core.CAPSULE:
            self._deliver(tunnel, buf.view[body : body + plain], source)
        else:
            self._control(tunnel, type_, bytes(buf.view[body : body + plain]), source, now, via_relay)

    def _deliver(self, tunnel: core.Tunnel, packet: memoryview, source: Address) -> None:
        version = packet[0] >> 4 if packet else 0
        # A peer may only speak from its own virtual IP: no spoofing others.
        if (
            version == 4
            and len(packet) >= 20
            and packet[12:16] == tunnel.peer.vip4_bytes
            or version == 6
            and len(packet) >= 40
            and packet[8:24] == tunnel.peer.vip6_bytes
        ):
            pass
        else:
            self.drops("inner source is not the peer's virtual IP", source)
            return
        tunnel.rx_bytes += len(packet)
        if self.vnet:
            self.coalescer.add(packet, tunnel)
            return
        try:
            os.write(self.tun_fd, offload.finish_checksum(packet))
        except OSError as exc:
            self.drops("TUN write failed", source, str(exc))

    def flush(self) -> None:
        """End of a receive batch: write what the coalescer holds; probe
        the direct addresses the batch brought."""
        if self.vnet:
            self.coalescer.flush()
        if self._probes:
            self._send_probes()

    def _write_frame(self, frame: bytes) -> None:
        try:
            os.write(self.tun_fd, frame)
        except OSError as exc:
            self.drops("TUN write failed", None, str(exc))
