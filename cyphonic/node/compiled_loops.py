"""The Packet Handling Module's per-packet loops in compiled code
(cyphonic.fastpath), driven from Python once per TUN read and once per run
of a GRO batch instead of once per packet.

- Sending: a TUN frame is routed here (a dict lookup) and the C loop cuts,
  seals and frames its segments into the GSO send buffer; the run goes out
  through the module's `_send_run`, as on the Python path.
- Receiving: the datagrams of one GRO batch that are data capsules of one
  installed tunnel (directly, or through its relay session) are opened in
  one C call; the first one that is not goes to the module's Python path
  (control messages, other keys, replaced tunnels, signaling) and the next
  run starts after it. The node's coalescer is the C one, so what either
  path delivers joins the same flows in order.
- The adapter keeps its own delivery (its inner-address check and LAN
  framing): the C loop opens and the module's `_deliver` takes each
  plaintext (`coalesce=False`).

Every decision and drop is the Python path's (tests/unit/test_fastpath.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from cyphonic import fastpath
from cyphonic.core import offload
from cyphonic.core import tunnel as core
from cyphonic.crypto import RELAY_TAG, PacketBuffer
from cyphonic.errors import ParseError
from cyphonic.kernel.batch import MAX_GSO_BYTES, MAX_GSO_SEGMENTS
from cyphonic.wire.common import TYPE
from cyphonic.wire.relay import FROM_RESPONDER, RELAYED_HEAD, RELAYED_HEADER, SEALED
from cyphonic.wire.tunnel import OVERHEAD
from cyphonic.wire.virtio import VNET_HDR_LEN

if TYPE_CHECKING:
    from cyphonic.node.packet import PacketHandlingModule

log = logging.getLogger("cyphonic.packet")

Address = tuple[str, int]
CAPSULE = core.CAPSULE
RELAYED = TYPE["Relayed"]
SHORTEST_RELAYED = RELAYED_HEADER + OVERHEAD + RELAY_TAG
SPANS = 1024  # plaintexts one C call hands back without a coalescer

# the receiver's drop counters -> the Python path's drop reasons
_DROPS = (
    ("drop_unauthenticated", "unauthenticated capsule", "capsule does not open under the End Key"),
    ("drop_replayed", "replayed capsule", ""),
    ("drop_limit", "counter at its limit", ""),
    ("drop_spoofed", "inner source is not the peer's virtual IP", ""),
    ("drop_mac", "relayed frame with a bad MAC", ""),
    ("drop_loss", "test loss hook", ""),
)


def plan_error(frame) -> str:
    """Why core/offload.plan refuses `frame` (the drop's detail)."""
    try:
        offload.plan(frame)
    except ParseError as exc:
        return str(exc)
    return "refused by the compiled loop"  # the tests hold C and Python to the same checks


class CompiledLoops:
    def __init__(self, module: PacketHandlingModule, coalesce: bool) -> None:
        if not fastpath.available():
            raise RuntimeError(f"the compiled data path is not built: {fastpath.MISSING}")
        ffi = fastpath.ffi
        self.module = module
        self.coalesce = coalesce
        self._co = ffi.NULL
        if coalesce:
            coalescer = fastpath.Coalescer(module.tun_fd, self._write_failed)
            module.coalescer = coalescer
            self._co = coalescer.c
        run = self.run = ffi.new("struct fp_run *")
        run.max_bytes, run.max_segments = MAX_GSO_BYTES, MAX_GSO_SEGMENTS
        self.run_tunnel: core.Tunnel | None = None
        self._out = fastpath.pointer(module._out.data)
        self._resume = ffi.new("uint32_t *")
        self._spans = ffi.new("uint32_t[]", 2 * SPANS)
        self._buffers: dict[int, tuple[PacketBuffer, object]] = {}
        self._loss = min(int(module.loss * 2**32), 2**32 - 1)

    def loops(self, tunnel: core.Tunnel) -> fastpath.TunnelLoops:
        """The tunnel's compiled state for its current keys."""
        fast = tunnel.fast
        if fast is None or not fast.current(tunnel):
            fast = tunnel.fast = fastpath.TunnelLoops(tunnel)
            r = fast.receiver
            r.tunnel_key = id(tunnel)
            r.loss, r.rng = self._loss, tunnel.local_index | 1
            r.spans, r.spans_max = self._spans, SPANS
            if self.coalesce:  # the node checks the inner source here; the adapter in its _deliver
                vip4, vip6 = fastpath.pointer(tunnel.peer.vip4_bytes), fastpath.pointer(tunnel.peer.vip6_bytes)
                fast._refs["vip"] = (vip4, vip6)
                r.vip4, r.vip6 = vip4, vip6
        return fast

    # -- sending --------------------------------------------------------------

    def send_frame(self, frame: memoryview, tunnel: core.Tunnel | None = None) -> None:
        module, lib = self.module, fastpath.lib
        n = len(frame)
        if tunnel is None:
            tunnel = module._route(frame[VNET_HDR_LEN:]) if n >= VNET_HDR_LEN + 20 else None
            if tunnel is None:
                if lib.fp_check_frame(fastpath.pointer(frame), n) != lib.FP_DONE:
                    module.drops("unusable TUN frame", None, plan_error(frame))
                else:
                    module.drops("no tunnel for destination")
                return
        if tunnel is not self.run_tunnel:
            self.flush_run()
            self.run_tunnel = tunnel
        fast = self.loops(tunnel)
        relay = tunnel.path.relay if tunnel.relayed else None
        if relay is not fast.send_relay:
            fast.set_send_relay(relay)
        s, resume, data = fast.sender, self._resume, fastpath.pointer(frame)
        s.counter, s.limit = tunnel.send_counter, core.SEND_LIMIT
        resume[0] = 0
        while True:
            rc = lib.fp_seal_frame(s, self.run, self._out, data, n, resume)
            if rc != lib.FP_FLUSH:
                break
            self.flush_run()
            self.run_tunnel = tunnel
        tunnel.send_counter = s.counter
        if rc == lib.FP_DONE:
            return
        if rc == lib.FP_E_COUNTER:
            module._exhausted(tunnel)
        elif rc == lib.FP_E_FRAME:
            module.drops("unusable TUN frame", None, plan_error(frame))
        else:
            module.drops("unusable TUN frame", None, "segment larger than one datagram")

    def flush_run(self) -> None:
        run, tunnel = self.run, self.run_tunnel
        length, size, count, inner = run.length, run.size, run.count, run.inner
        run.length = run.count = run.size = run.short_ = run.inner = 0
        self.run_tunnel = None
        if length:
            assert tunnel is not None  # send_frame sets the run's tunnel before it adds bytes
            self.module._send_run(tunnel, length, size, count, inner)

    # -- receiving ------------------------------------------------------------

    def receive_batch(
        self,
        buf: PacketBuffer,
        n: int,
        size: int,
        source: Address,
        now: float,
        one: Callable[[int, int], None],
    ) -> None:
        """The datagrams in buf[:n], `size` bytes each but the last: runs of
        one tunnel's data in C, every other datagram through `one(start, end)`."""
        module, lib, data = self.module, fastpath.lib, buf.data
        by_index, links = module.by_index, module._relay_links
        ptr = self._pointer(buf)
        pos = 0
        while pos < n:
            end = min(pos + size, n)
            kind, tunnel, link = data[pos], None, None
            if kind == CAPSULE and end - pos >= OVERHEAD:
                tunnel = by_index.get(int.from_bytes(data[pos + 1 : pos + 5], "little"))
            elif kind == RELAYED and end - pos >= SHORTEST_RELAYED:
                _, session, flags = RELAYED_HEAD.unpack_from(data, pos)
                link = links.get(session)
                inner = pos + RELAYED_HEADER
                if (
                    link is not None
                    and not flags & SEALED
                    and flags & FROM_RESPONDER != link.flags
                    and data[inner] == CAPSULE
                ):
                    tunnel = by_index.get(int.from_bytes(data[inner + 1 : inner + 5], "little"))
            if tunnel is not None:
                fast = self.loops(tunnel)
                if link is not fast.receive_relay:
                    fast.set_receive_relay(link)
                r = fast.receiver
                after = lib.fp_open_run(r, self._co, ptr, pos, n, size)
                self._account(tunnel, r, buf, source, now, link is not None)
                if after > pos:
                    pos = after
                    continue
            one(pos, end)
            pos = end

    def _account(self, tunnel: core.Tunnel, r, buf: PacketBuffer, source: Address, now: float, relayed: bool) -> None:
        module = self.module
        if r.rx_packets:
            tunnel.rx_packets += r.rx_packets
            tunnel.last_received = now
            if module.heard_after_move is None:
                module.heard_after_move = now
            if r.newest and source != tunnel.endpoint:
                tunnel._newest_from(source, relayed, now)
            if self.coalesce:
                tunnel.rx_bytes += r.rx_bytes
            else:
                view, spans = buf.view, self._spans
                for k in range(r.spans_used):
                    start = spans[2 * k]
                    module._deliver(tunnel, view[start : start + spans[2 * k + 1]], source)
        for field, reason, detail in _DROPS:
            count = getattr(r, field)
            if count:
                module.drops(reason, source, detail, count=count)
        if r.write_failed:
            self._write_failed(fastpath.lib.fp_coalescer_errno(self._co), r.write_failed)

    def _write_failed(self, errno: int, count: int) -> None:
        self.module.drops("TUN write failed", None, str(OSError(errno, os.strerror(errno))), count=count)

    def _pointer(self, buf: PacketBuffer):
        cached = self._buffers.get(id(buf))
        if cached is None or cached[0] is not buf:
            if len(self._buffers) > 8:  # a reader's buffer lives as long as the reader
                self._buffers.clear()
            cached = self._buffers[id(buf)] = (buf, fastpath.pointer(buf.data))
        return cached[1]
