"""The compiled per-packet loops (cyphonic.fastpath) against the pure-Python
ones they stand in for: the same datagrams out of the same TUN frames, and
the same TUN writes, drops, counters and endpoint out of the same received
datagrams, hostile ones included (Hypothesis). The coalescer alone:
test_fastpath_coalesce.py."""

from __future__ import annotations

import dataclasses
import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyphonic import crypto, fastpath
from cyphonic.core.relay import RelayLink, RelayService
from cyphonic.core.replay import COUNTER_LIMIT, ReplayWindow
from tests.support.dataplane import CN, CN_ADDR, MN, MN_ADDR, Node, handshake, read_tun, socket_batch
from tests.support.packets import (
    ACK,
    CWR,
    FIN,
    PSH,
    SYN,
    URG,
    partial_frame,
    payload_of,
    tcp_packet,
    timestamps,
    tso_frame,
    udp_packet,
    uso_frame,
    with_vnet,
)

TRS = ("203.0.113.20", 7002)
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_extension_is_built():
    """The install step builds it; a missing build is a failure, not a skip."""
    assert fastpath.available(), fastpath.MISSING


# --- replay window ------------------------------------------------------------------------------

counters = st.one_of(st.integers(0, 5000), st.integers(COUNTER_LIMIT - 3000, COUNTER_LIMIT + 5))


@given(st.lists(st.tuples(counters, st.booleans()), max_size=400), st.integers(0, 400))
def test_replay_window_answers_like_the_python_one(ops, convert_at):
    """check/update give the same answers and `highest`, also for a C window
    made from a Python one midway (what a tunnel gets when the compiled
    loops first see it)."""
    python = ReplayWindow()
    compiled: fastpath.ReplayWindow | None = None
    for i, (counter, deliver) in enumerate(ops):
        if i == convert_at:
            compiled = fastpath.ReplayWindow(python)
        if i < convert_at:
            reference = fastpath.ReplayWindow(python)
            assert reference.highest == python.highest
        ok = python.check(counter)
        if compiled is not None:
            assert compiled.check(counter) == ok
        if ok and deliver:
            newest = python.update(counter)
            if compiled is not None:
                assert compiled.update(counter) == newest
                assert compiled.highest == python.highest


@given(st.integers(0, 2**40), st.lists(st.integers(0, 2200), min_size=1, max_size=200))
def test_replay_window_refuses_every_replay_within_and_beyond_the_window(base, steps):
    window = fastpath.ReplayWindow()
    seen = []
    counter = base
    for step in steps:
        counter += step
        if window.check(counter):
            window.update(counter)
            seen.append(counter)
    for c in seen:
        assert not window.check(c)
    if window.highest >= 2048:
        assert not window.check(window.highest - 2048)


# --- sending: frames -> datagrams ---------------------------------------------------------------

FLAGS = st.sampled_from([ACK, ACK | PSH, ACK | PSH | FIN, ACK | CWR, ACK | URG, SYN, ACK | PSH | CWR])


@st.composite
def tun_frames(draw):
    """A TUN read as the kernel hands it over with offloads, or a damaged one."""
    kind = draw(st.sampled_from(["tso", "uso", "single", "single-udp"]))
    v6 = draw(st.booleans())
    # segments x size, not bytes: Hypothesis favours small integers, and
    # a super-packet of one segment tests little
    gso = draw(st.sampled_from([536, 1000, 1348, 1368] if kind == "tso" else [100, 1200, 1372]))
    if kind in ("tso", "uso"):
        size = draw(st.integers(0, 20)) * gso + draw(st.integers(0, gso))
    else:
        size = draw(st.integers(0, 1300))
    payload = payload_of(size, draw(st.integers(0, 99)))
    if kind in ("tso", "single"):
        ip_options = b"" if v6 else draw(st.sampled_from([b"", b"\x01\x01\x01\x00"]))
        packet = tcp_packet(
            v6,
            payload,
            draw(st.integers(0, 2**32 - 1)),
            flags=draw(FLAGS),
            options=draw(st.sampled_from([b"", timestamps()])),
            ident=draw(st.integers(0, 0xFFFF)),
            ip_options=ip_options,
        )
        frame = tso_frame(packet, gso) if kind == "tso" else None
        frame = frame or partial_frame(packet)
    else:
        packet = udp_packet(v6, payload, ident=draw(st.integers(0, 0xFFFF)))
        frame = uso_frame(packet, gso) if kind == "uso" else partial_frame(packet)
    damage = draw(st.sampled_from(["none", "none", "vnet", "truncate", "flip"]))
    if damage == "vnet":
        field = draw(st.sampled_from(["gso_type", "hdr_len", "gso_size"]))
        limit = 0xFF if field == "gso_type" else 0xFFFF
        frame = with_vnet(frame, **{field: draw(st.integers(0, limit))})
    elif damage == "truncate":
        frame = frame[: draw(st.integers(0, len(frame)))]
    elif damage == "flip":
        i = draw(st.integers(0, len(frame) - 1))
        frame = frame[:i] + bytes([frame[i] ^ draw(st.integers(1, 255))]) + frame[i + 1 :]
    return frame


def relay_pair():
    key = crypto.random_key()
    return RelayLink(0x0BADCAFE, key, responder=False, sequence=1), RelayLink(
        0x0BADCAFE, key, responder=True, sequence=1
    )


def through_relay(tunnel, link) -> None:
    tunnel.path.relay, tunnel.path.peer_address, tunnel.endpoint = link, TRS, TRS


def sent_by(tunnel, frames, compiled: bool):
    node = Node(MN, MN_ADDR, tunnel, vnet=True, compiled=compiled)
    try:
        for frame in frames:
            node.module.send_frame_sealed(memoryview(frame))
        node.module.flush_run()
        return node.wire.datagrams, node.wire.calls, dict(node.module.drops.counts), tunnel.send_counter
    finally:
        node.close()


@SETTINGS
@given(st.lists(tun_frames(), min_size=1, max_size=6), st.booleans(), st.sampled_from([0, 7, 2**40]))
def test_sealing_makes_the_same_datagrams(frames, relayed, counter):
    """Segments, headers, capsules, relay framing, GSO runs (system calls)
    and drops: identical."""
    tunnel, _ = handshake(time.time())
    if relayed:
        through_relay(tunnel, relay_pair()[0])
    tunnel.send_counter = counter
    python = sent_by(tunnel, frames, compiled=False)
    tunnel.send_counter = counter
    compiled = sent_by(tunnel, frames, compiled=True)
    assert compiled == python


def test_an_exhausted_counter_stops_both_at_the_same_segment():
    from cyphonic.core.tunnel import SEND_LIMIT

    frame = tso_frame(tcp_packet(False, payload_of(20 * 1368)), 1368)
    results = []
    for compiled in (False, True):
        tunnel, _ = handshake(time.time())
        tunnel.send_counter = SEND_LIMIT - 5
        node = Node(MN, MN_ADDR, tunnel, vnet=True, compiled=compiled)
        node.module.send_frame_sealed(memoryview(frame))
        node.module.flush_run()
        results.append((len(node.wire.datagrams), tunnel.send_counter))
        node.close()
    assert results[0] == results[1] == (5, SEND_LIMIT)


# --- receiving: datagrams -> TUN writes ---------------------------------------------------------


@st.composite
def received(draw):
    """What mn sent for some frames, then lost, duplicated, reordered,
    damaged and joined by strangers on the way."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    frames = [
        tso_frame(
            tcp_packet(v6, payload_of(rng.randrange(0, 20000)), 1000 + 50000 * i, flags=ACK), 1368 if not v6 else 1348
        )
        for i, v6 in enumerate(draw(st.lists(st.booleans(), min_size=1, max_size=4)))
    ]
    frames += [partial_frame(udp_packet(rng.random() < 0.5, payload_of(rng.randrange(0, 1300)))) for _ in range(2)]
    return frames, rng, draw(st.sampled_from(["none", "dup", "flip", "truncate", "index", "stranger", "spoof"]))


def damaged(datagrams: list[bytes], rng: random.Random, how: str) -> list[bytes]:
    out = list(datagrams)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(out))
        d = out[i]
        if how == "dup":
            out.insert(rng.randrange(len(out) + 1), d)
        elif how == "flip":
            k = rng.randrange(len(d))
            out[i] = d[:k] + bytes([d[k] ^ 0x40]) + d[k + 1 :]
        elif how == "truncate":
            out[i] = d[: rng.randrange(len(d))]
        elif how == "index":
            out[i] = d[:1] + rng.randbytes(4) + d[5:]
        elif how == "stranger":
            out.insert(i, rng.randbytes(rng.randrange(1, 100)))
    for i in range(len(out) - 1):
        if rng.random() < 0.1:
            j = min(len(out) - 1, i + rng.randrange(1, 8))
            out[i], out[j] = out[j], out[i]
    return out


def received_by(tunnel, link, batches, compiled: bool):
    node = Node(CN, CN_ADDR, tunnel, vnet=True, compiled=compiled)
    try:
        if link is not None:
            node.module.remove(tunnel)
            through_relay(tunnel, link)
            node.module.install(tunnel)
        signaling, written = [], []
        for datagrams, source in batches:
            signaling += socket_batch(node, datagrams, source, 1000.0)
            written += read_tun(node)
        return (
            written,
            signaling,
            dict(node.module.drops.counts),
            tunnel.rx_packets,
            tunnel.rx_bytes,
            tunnel.replay.highest,
            tunnel.endpoint,
            [(t is tunnel, a) for t, a in node.module._probes],
        )
    finally:
        node.close()


@SETTINGS
@given(received(), st.booleans(), st.booleans())
def test_opening_makes_the_same_tun_writes_and_drops(case, relayed, moved):
    """The same frames written to the TUN (coalesced alike), the same drops
    by reason, counters, replay window and endpoint (a capsule from a new
    address moves a direct tunnel, probes a relayed one)."""
    frames, rng, how = case
    mn_tunnel, cn_tunnel = handshake(time.time())
    links = relay_pair() if relayed else (None, None)
    if relayed:
        through_relay(mn_tunnel, links[0])
    sender = Node(MN, MN_ADDR, mn_tunnel, vnet=True)
    for frame in frames:
        if how == "spoof" and rng.random() < 0.3:
            frame = frame[:22] + bytes([frame[22] ^ 1]) + frame[23:]  # inner source address
        sender.module.send_frame_sealed(memoryview(frame))
    sender.module.flush_run()
    sender.close()
    datagrams = damaged(sender.wire.datagrams, rng, how)
    source = TRS if relayed else (("192.0.2.99", 4600) if moved else MN_ADDR)
    cut = rng.randrange(len(datagrams) + 1)
    batches = [(datagrams[:cut], source), (datagrams[cut:], source)]
    twin = dataclasses.replace(cn_tunnel, replay=ReplayWindow(), candidates={}, probes=[])
    python = received_by(cn_tunnel, links[1], batches, compiled=False)
    compiled = received_by(twin, links[1], batches, compiled=True)
    assert compiled == python
    assert how != "none" or python[3] == len(datagrams)


# --- the TRS: runs of frames -> forwarded as frame by frame -------------------------------------


def relay_setup(mac_run):
    from tests.unit.test_relay_service import NMS, NOW, bind, relay_request

    nms_key, tunnel_key = crypto.random_key(), crypto.random_key()
    trs = RelayService(nms_key, [("203.0.113.20", 7002)], mac_run)
    assert trs.receive(relay_request(nms_key, 0xC0FFEE, tunnel_key), NMS, NOW)
    mn = RelayLink(0xC0FFEE, tunnel_key, responder=False, sequence=1000)
    cn = RelayLink(0xC0FFEE, tunnel_key, responder=True, sequence=5000)
    bind(trs, mn, cn)
    return trs, mn, cn


FRAME_KINDS = ["good", "good", "good", "good", "bad mac", "from cn", "stranger", "sealed", "head flip"]


@SETTINGS
@given(st.lists(st.sampled_from(FRAME_KINDS), min_size=1, max_size=40), st.integers(22, 300), st.integers(0, 2**32))
def test_the_relay_forwards_runs_as_it_forwards_single_frames(kinds, size, seed):
    """One GRO batch (equal sizes but the last) through `forward_run` (C and
    Python MAC runs) with `forward_at` for what ends a run, against
    `forward_at` frame by frame: the same destination for every frame, the
    same drops, the same counters."""
    from tests.unit.test_relay_service import CN as CN_AT
    from tests.unit.test_relay_service import MN as MN_AT
    from tests.unit.test_relay_service import NOW

    rng = random.Random(seed)
    runs = [crypto.relay_mac_run, fastpath.relay_mac_run]
    services = [relay_setup(run) for run in [crypto.relay_mac_run, *runs]]
    trs0, mn, cn = services[0]
    for trs, _, _ in services[1:]:  # the same session and keys everywhere
        trs.sessions = {
            k: dataclasses.replace(v, sides={s: dataclasses.replace(x) for s, x in v.sides.items()})
            for k, v in trs0.sessions.items()
        }
    body = size - 22
    frames = []
    for i, kind in enumerate(kinds):
        last = i == len(kinds) - 1
        inner = rng.randbytes(rng.randrange(0, body + 1) if last else body)
        frame = (cn if kind == "from cn" else mn).wrap(inner)
        if kind == "bad mac":
            frame = frame[:-1] + bytes([frame[-1] ^ 1])
        elif kind == "stranger":
            frame = frame[:1] + b"\xde\xad\xbe\xef" + frame[5:]
        elif kind == "sealed":
            frame = frame[:5] + bytes([frame[5] | 0x80]) + frame[6:]
        elif kind == "head flip":
            frame = frame[:5] + bytes([frame[5] ^ 0x02]) + frame[6:]
        frames.append(frame)
    data = b"".join(frames)
    n = len(data)

    def frame_by_frame(trs):
        buf = crypto.PacketBuffer(data=bytearray(data))
        return [trs.forward_at(buf, k, min(k + size, n), MN_AT, NOW) for k in range(0, n, size)]

    def in_runs(trs):
        buf = crypto.PacketBuffer(data=bytearray(data))
        out, k = [], 0
        while k < n:
            after, dest = trs.forward_run(buf, k, n, size, MN_AT, NOW)
            if after > k:
                out += [dest] * -(-(after - k) // size)
                k = after
                continue
            out.append(trs.forward_at(buf, k, min(k + size, n), MN_AT, NOW))
            k += size
        return out

    expected = frame_by_frame(trs0)
    for trs, _, _ in services[1:]:
        assert in_runs(trs) == expected
        assert trs.drops.counts == trs0.drops.counts
        for k, session in trs.sessions.items():
            assert session.sides == trs0.sessions[k].sides
    assert all(d in (CN_AT, None) for d in expected)
