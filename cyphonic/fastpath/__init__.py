"""The data path's per-packet loops, compiled (DESIGN section 10).

A small C extension built with cffi when pip installs the package or
builds its wheel (setup.py; `python -m cyphonic.fastpath.build` in a
checkout): segmenting and sealing a TUN
super-packet into the GSO send buffer (seal.c), opening a GRO batch in
place with the replay window (open.c, replay.c) and coalescing TCP
segments into TUN writes (coalesce.c). Cryptography stays libsodium's,
PyNaCl's own copy (`crypto.native_functions`).

The pure-Python loops (node/packet.py, core/offload.py, core/replay.py)
are the reference and the fallback: the config key `packet_loops` picks
one, and tests/unit/test_fastpath*.py prove that both produce and accept
the same bytes. This module is the thin typed layer the data path calls;
node/compiled_loops.py drives it.
"""

from __future__ import annotations

import logging
from typing import Any

from cyphonic import crypto
from cyphonic.config import kind
from cyphonic.core.replay import COUNTER_LIMIT, WINDOW
from cyphonic.core.replay import ReplayWindow as PythonReplayWindow

try:
    from cyphonic.fastpath._fastpath import ffi, lib  # type: ignore[import-not-found]

    MISSING = ""
except ImportError as exc:  # not built: the pure-Python loops run
    ffi = lib = None
    MISSING = str(exc)

log = logging.getLogger("cyphonic.packet")

MAX_FLOWS = 64  # the coalescer's held flows (core/offload.MAX_FLOWS)


def available() -> bool:
    """Was the extension built (and does it load)?"""
    return lib is not None


@kind('"auto", "compiled" or "python"')
def config_choice(value: Any, base: Any = None) -> str:
    """The config key `packet_loops` (node, adapter, TRS), checked."""
    if value not in ("auto", "compiled", "python"):
        raise ValueError('must be "auto", "compiled" or "python"')
    if value == "compiled" and not available():
        raise ValueError(f"the compiled loops are not built (python -m cyphonic.fastpath.build): {MISSING}")
    return value


def chosen(choice: str) -> bool:
    """Run the compiled loops for a checked `packet_loops`? ("auto" where
    they are built; a warning where they are not)."""
    if choice == "auto" and not available():
        log.warning("compiled packet loops not built, running the Python ones: %s", MISSING)
    return choice != "python" and available()


def pointer(data: Any) -> Any:
    """A `unsigned char *` to a buffer (bytearray, bytes, memoryview); the
    caller keeps `data` alive."""
    return ffi.from_buffer("unsigned char[]", data)


class ReplayWindow:
    """core.replay.ReplayWindow's interface on the C ring that the compiled
    receive loop updates: the Python path (control messages, previous
    keys) and the compiled one share one window per key generation."""

    __slots__ = ("c",)

    def __init__(self, source: PythonReplayWindow | ReplayWindow | None = None) -> None:
        self.c = ffi.new("struct fp_replay *")
        if isinstance(source, ReplayWindow):
            ffi.memmove(self.c, source.c, ffi.sizeof("struct fp_replay"))
        elif source is not None and source.highest >= 0:
            self.c.highest, self.c.seen = source.highest, 1
            bits = source._bits
            for offset in range(min(WINDOW, source.highest + 1)):
                if (bits >> offset) & 1:
                    counter = source.highest - offset
                    slot = counter % WINDOW
                    self.c.bits[slot // 64] |= 1 << (slot % 64)

    @property
    def highest(self) -> int:
        return int(self.c.highest) if self.c.seen else -1

    def check(self, counter: int, _limit: int = COUNTER_LIMIT) -> bool:
        return bool(lib.fp_replay_check(self.c, counter, _limit))

    def update(self, counter: int) -> bool:
        return bool(lib.fp_replay_update(self.c, counter))


class Coalescer:
    """core.offload.Coalescer's interface, writing to a TUN fd from C.
    `failed(errno)` is told of each TUN write that failed."""

    def __init__(self, fd: int, failed) -> None:
        self.c = ffi.gc(lib.fp_coalescer_new(fd), lib.fp_coalescer_free)
        if self.c == ffi.NULL:
            raise MemoryError("fp_coalescer_new")
        self.failed = failed

    def add(self, packet, tunnel: object) -> None:
        self._report(lib.fp_coalescer_add(self.c, pointer(packet), len(packet), id(tunnel)))

    def flush(self) -> None:
        self._report(lib.fp_coalescer_flush(self.c))

    def _report(self, failures: int) -> None:
        if failures:
            self.failed(lib.fp_coalescer_errno(self.c), failures)


_MAC = None


def relay_mac_run(buf, start: int, n: int, size: int, head: bytes, mac_key: bytes) -> int:
    """crypto.relay_mac_run in C (`buf` a crypto.PacketBuffer)."""
    global _MAC
    if _MAC is None:
        _MAC = ffi.cast("fp_mac_fn", crypto.native_functions(crypto.CHACHA20_POLY1305)[2])
    return lib.fp_relay_run(pointer(buf.data), start, n, size, head, mac_key, len(mac_key), _MAC)


class TunnelLoops:
    """The compiled loops' view of one tunnel's current keys: a sender and
    a receiver struct pointing at the End Keys, the C replay window that
    replaced the tunnel's, and the relay framing in use. Rebuilt when a
    rekey rotates the keys (`cipher` is no longer the tunnel's)."""

    def __init__(self, tunnel) -> None:
        cipher = tunnel.cipher
        self.cipher = cipher
        encrypt, decrypt, mac = crypto.native_functions(cipher.suite)
        send_key, recv_key = cipher.native_keys()
        s = self.sender = ffi.new("struct fp_sender *")
        s.encrypt = ffi.cast("fp_encrypt_fn", encrypt)
        s.key = ffi.cast("unsigned char *", send_key)
        s.remote_index = tunnel.remote_index
        s.mac = ffi.cast("fp_mac_fn", mac)
        self.send_relay: object = None
        if not isinstance(tunnel.replay, ReplayWindow):
            tunnel.replay = ReplayWindow(tunnel.replay)
        self.replay = tunnel.replay
        r = self.receiver = ffi.new("struct fp_receiver *")
        r.decrypt = ffi.cast("fp_decrypt_fn", decrypt)
        r.key = ffi.cast("unsigned char *", recv_key)
        r.local_index = tunnel.local_index
        r.replay = self.replay.c
        r.limit = COUNTER_LIMIT
        r.mac = ffi.cast("fp_mac_fn", mac)
        self.receive_relay: object = None
        self._refs: dict[str, object] = {}  # buffers the structs point into

    def current(self, tunnel) -> bool:
        return self.cipher is tunnel.cipher and self.replay is tunnel.replay

    def set_send_relay(self, relay) -> None:
        """Frame for the TRS through `relay` (None: direct)."""
        s = self.sender
        if relay is None:
            s.pre = 0
        else:
            head, key = pointer(relay.head), pointer(relay.mac_key)
            self._refs["send"] = (head, key)
            s.pre, s.relay_head, s.mac_key, s.mac_key_len = len(relay.head), head, key, len(relay.mac_key)
        self.send_relay = relay

    def set_receive_relay(self, link) -> None:
        """Take relayed frames of `link`'s session (None: direct capsules)."""
        r = self.receiver
        if link is None:
            r.relayed = 0
        else:
            key = pointer(link.mac_key)
            self._refs["receive"] = key
            r.relayed, r.session, r.own_flags = 1, link.session_id, link.flags
            r.mac_key, r.mac_key_len = key, len(link.mac_key)
        self.receive_relay = link
