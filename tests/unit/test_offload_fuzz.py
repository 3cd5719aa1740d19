"""Bad input to the offload data plane's packet surgery (cyphonic.core.offload), fuzzed.

Random bytes and mutated headers raise only ParseError from `segment` and
nothing from `finish_checksum`, `single_frame` or the `Coalescer`, which
writes every byte it was given exactly once; impossible sizes in an
otherwise real header are refused (DESIGN section 10).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from cyphonic.core import offload
from cyphonic.errors import ParseError
from tests.support.checksum import l3_of
from tests.support.coalescer import Sink, check_written_frame
from tests.support.packets import (
    GSO_ECN,
    GSO_NONE,
    UDP,
    VNET,
    good_tso,
    tcp_packet,
    tso_frame,
    udp_packet,
    uso_frame,
    with_vnet,
)

FUZZ = settings(max_examples=int(os.environ.get("CYPHONIC_FUZZ_EXAMPLES", "300")), deadline=None)


FILL = bytes(range(251)) * 270  # > 64 KB of cheap, non-repeating-per-word filler


@st.composite
def valid_frames(draw, max_gso: int = 9000) -> bytes:
    """A TSO or USO read, any size and segment size (possibly past the segment limit)."""
    v6 = draw(st.booleans())
    start = draw(st.integers(0, 250))
    size = draw(st.integers(0, 66000))
    if draw(st.booleans()):
        payload = FILL[start : start + min(size, 65535 - (72 if v6 else 52))]
        packet = tcp_packet(v6, payload, draw(st.integers(0, 2**32 - 1)), flags=draw(st.integers(0, 255)))
        return tso_frame(packet, draw(st.integers(1, max_gso)))
    payload = FILL[start : start + min(size, 65535 - (48 if v6 else 28))]
    return uso_frame(udp_packet(v6, payload), draw(st.integers(1, max_gso)))


@st.composite
def mutated(draw, frames) -> bytes:
    frame = bytearray(draw(frames))
    for _ in range(draw(st.integers(1, 6))):
        # mostly the headers: vnet, IP, L4
        position = draw(st.one_of(st.integers(0, 100), st.integers(0, max(0, len(frame) - 1))))
        if position < len(frame):
            frame[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    return bytes(frame)


FRAMES = st.one_of(st.binary(max_size=200), mutated(valid_frames()), valid_frames())


@FUZZ
@given(frame=FRAMES)
@example(frame=with_vnet(good_tso(), gso_size=0))
@example(frame=with_vnet(good_tso(size=60000), gso_size=1))
def test_segment_raises_only_parse_error(frame):
    try:
        segments = offload.segment(frame)
    except ParseError:
        return
    packet = frame[VNET.size :]
    _flags, gso_type, _hdr_len, gso_size, _start, _offset = VNET.unpack_from(frame)
    if gso_type & ~GSO_ECN == GSO_NONE:
        assert segments == [packet]
        return
    l3, proto = l3_of(packet)
    header = l3 + (8 if proto == UDP else (packet[l3 + 12] >> 4) * 4)
    assert len(segments) == -(-(len(packet) - header) // gso_size) <= 257
    assert all(len(s) <= header + gso_size and s[: l3 + 4] != b"" for s in segments)
    assert b"".join(s[header:] for s in segments) == packet[header:]


@FUZZ
@given(packet=st.one_of(st.binary(max_size=200), mutated(valid_frames()).map(lambda f: f[VNET.size :])))
def test_finish_checksum_and_single_frame_never_raise(packet):
    assert len(offload.finish_checksum(packet)) == len(packet)
    frame = offload.single_frame(packet)
    assert len(frame) == len(packet) + VNET.size
    if frame[: VNET.size] == offload.PLAIN_HEADER:
        assert frame[VNET.size :] == packet


@st.composite
def received_runs(draw) -> list[bytes]:
    """What a receive batch hands the coalescer: segments of a few reads,
    some lost, duplicated, swapped or with a header byte changed, and junk."""
    out: list[bytes] = []
    for _ in range(draw(st.integers(1, 3))):
        frame = draw(valid_frames(max_gso=3000))
        try:
            segments = offload.segment(frame)
        except ParseError:
            continue
        out += segments[: draw(st.integers(0, 12))]
    for _ in range(draw(st.integers(0, 6))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        action = draw(st.sampled_from(["drop", "dup", "swap", "byte", "cut"]))
        if action == "drop":
            del out[i]
        elif action == "dup":
            out.insert(draw(st.integers(0, len(out))), out[i])
        elif action == "swap":
            j = draw(st.integers(0, len(out) - 1))
            out[i], out[j] = out[j], out[i]
        elif action == "byte":
            p = bytearray(out[i])
            if p:
                p[draw(st.integers(0, min(len(p) - 1, 80)))] = draw(st.integers(0, 255))
            out[i] = bytes(p)
        else:
            out[i] = out[i][: draw(st.integers(0, len(out[i])))]
    if draw(st.booleans()):
        out.insert(draw(st.integers(0, len(out))), draw(st.binary(max_size=80)))
    return out


@FUZZ
@given(packets=received_runs(), tunnels=st.lists(st.sampled_from("ab"), min_size=40, max_size=40))
def test_coalescer_never_raises_and_writes_every_byte_once(packets, tunnels):
    sink = Sink()
    c = offload.Coalescer(sink)
    for p, t in zip(packets, tunnels * 10, strict=False):
        c.add(p, t)
    c.flush()
    # every packet comes out once: a merged frame carries one header for k segments
    written = 0
    for f in sink.frames:
        flags, gso_type, hdr_len, gso_size, start, offset = VNET.unpack_from(f)
        body = f[VNET.size :]
        written += len(body)
        if gso_type != GSO_NONE:
            check_written_frame(f)
            k = -(-(len(body) - hdr_len) // gso_size)
            written += (k - 1) * hdr_len
    assert written == sum(len(p) for p in packets)
    before = len(sink.frames)
    c.flush()
    assert len(sink.frames) == before  # nothing held after a flush


@FUZZ
@given(frame=valid_frames(), cut=st.sampled_from(["gso_size", "segments"]))
def test_impossible_sizes_in_a_real_header_are_refused(frame, cut):
    assume(VNET.unpack_from(frame)[1] != GSO_NONE)
    if cut == "gso_size":
        with pytest.raises(ParseError):
            offload.segment(with_vnet(frame, gso_size=0))
        return
    packet = frame[VNET.size :]
    l3, proto = l3_of(packet)
    header = l3 + (8 if proto == UDP else (packet[l3 + 12] >> 4) * 4)
    assume(len(packet) - header >= 2000)  # thousands of one-byte segments
    with pytest.raises(ParseError):
        offload.segment(with_vnet(frame, gso_size=1))
