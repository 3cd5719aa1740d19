"""Bad datagrams and bad TUN frames on both data paths: each one counted, the rest delivered.

Issue "Data plane at kernel-offload speed": "a receive batch may mix forged,
replayed, truncated and foreign datagrams: each bad one is counted and
dropped alone, the rest of the batch is delivered". A TUN frame the module
cannot use is counted as well, and the frames after it are still sent.
The two nodes are `tests.support.dataplane`'s (the `pair` fixture).
"""

from __future__ import annotations

import ipaddress
import random
import struct
import time

import pytest

from cyphonic.core import tunnel as core
from tests.support.dataplane import CN, MN, MN_ADDR, PATHS, Checker, handshake, pump, read_tun, socket_batch
from tests.support.packets import ACK, GSO_TCPV6, NEEDS_CSUM, TCP, UDP, VNET, ipv4_header
from tests.support.traffic import TcpFlow, UdpFlow

# --- a receive batch with bad datagrams among good ones --------------------------------------------


@PATHS
def test_bad_datagrams_in_a_batch_are_counted_and_the_rest_delivered(pair):
    mn, cn = pair
    vnet = mn.module.vnet
    rng = random.Random(7)
    while True:  # a bulk write of at least 6 segments, no CWR
        flow = TcpFlow(rng, False, MN, CN, 40001, 5201)
        frames, metas = flow.write(plain=not vnet)
        if len(metas) >= 6 and not flow.cwr_starts:
            break
    udp = UdpFlow(rng, True, MN, CN, 40002, 5202)
    good = pump(mn, frames)
    assert len(good) == len(metas)
    uframes, umetas = udp.write(plain=not vnet)
    ugood = pump(mn, uframes)

    # another tunnel's keys: a capsule that opens nowhere here
    other_mn, other_cn = handshake(time.time())
    other_mn.send_counter = 10**6  # fresh to cn's window: only the key is wrong
    foreign_key = other_mn.seal(core.CAPSULE, b"\x45" + bytes(39))
    forged_tag = bytearray(good[2])
    forged_tag[-1] ^= 1
    forged_body = bytearray(good[3])
    forged_body[40] ^= 0x80
    forged_counter = bytearray(good[1])
    struct.pack_into("<Q", forged_counter, 5, 10**9)  # a far-future counter that does not open
    own_index = struct.pack("<I", cn.tunnel.local_index)
    assert other_mn.remote_index != cn.tunnel.local_index
    wrong_index = bytearray(good[4])
    wrong_index[1:5] = struct.pack("<I", (cn.tunnel.local_index + 1) & 0xFFFFFFFF)
    spoof = bytearray(flow._packet(0, ACK, b"spoofed", 1))
    spoof[12:16] = ipaddress.IPv4Address("10.64.0.99").packed  # not the peer's virtual IP
    spoofed = mn.tunnel.seal(core.CAPSULE, bytes(spoof))

    batch = [
        bytes(forged_counter),  # forged before the genuine one: must not move the window
        good[0],
        bytes(forged_tag),
        good[1],
        good[0],  # replayed
        good[2][:20],  # truncated below the capsule overhead
        bytes(forged_body),
        good[2],
        good[3][:-1],  # truncated: the tag no longer checks
        foreign_key[:1] + own_index + foreign_key[5:],  # sealed under another tunnel's key
        foreign_key,  # an index cn does not know
        bytes(wrong_index),
        good[3],
        ugood[0],
        spoofed,
        good[4],
        good[5],
        good[1],  # replayed
        *good[6:],
        *ugood[1:],
        b"",  # empty: the socket reader skips it
    ]
    socket_batch(cn, batch, MN_ADDR, time.time())
    assert dict(cn.module.drops.counts) == {
        "unauthenticated capsule": 5,  # forged counter, tag, body; cut tag; foreign key
        "replayed capsule": 2,
        "truncated capsule": 1,
        "capsule for unknown tunnel": 2,
        "inner source is not the peer's virtual IP": 1,
    }
    for m in metas:
        flow.fate(m, True)
    for m in umetas:
        udp.fate(m, True)
    check = Checker([flow, udp], vnet)
    written = read_tun(cn)
    for frame in written:
        check(frame)
    flow.verify()
    udp.verify()
    if vnet:
        # the bad ones in between did not split the run of good segments
        tcp_frames = [f for f in written if f[VNET.size + 9] == TCP]
        assert len(tcp_frames) == 1
    assert cn.tunnel.rx_packets == len(good) + len(ugood) + 1  # + the spoofed one, which opened
    assert cn.tunnel.endpoint == MN_ADDR


@PATHS
def test_forged_and_replayed_datagrams_from_elsewhere_do_not_move_the_endpoint(pair):
    mn, cn = pair
    good = mn.tunnel.seal(core.CAPSULE, bytes(1))
    forged = bytearray(good)
    forged[-3] ^= 4
    socket_batch(cn, [bytes(forged)], ("203.0.113.66", 9), time.time())
    assert cn.module.drops.counts["unauthenticated capsule"] == 1
    socket_batch(cn, [good], MN_ADDR, time.time())
    socket_batch(cn, [good], ("203.0.113.66", 9), time.time())
    assert cn.module.drops.counts["replayed capsule"] == 1
    assert cn.tunnel.endpoint == MN_ADDR and cn.tunnel.rx_packets == 1


# --- TUN frames and inner packets the module cannot use -----------------------------------------


@pytest.mark.parametrize("pair", ["offload"], indirect=True)
def test_unusable_tun_frames_are_counted_and_the_next_ones_sent(pair):
    mn, _cn = pair
    rng = random.Random(3)
    flow = TcpFlow(rng, True, MN, CN, 40001, 5201)
    while True:
        frames, metas = flow.write(plain=False)
        if len(metas) > 10:
            break
    packet = frames[0][VNET.size :]
    bad = [
        VNET.pack(NEEDS_CSUM, GSO_TCPV6, 72, 0, 40, 16) + packet,  # gso_size 0
        VNET.pack(NEEDS_CSUM, GSO_TCPV6, 72, 1, 40, 16) + packet,  # tens of thousands of segments
        frames[0][:25],
        VNET.pack(NEEDS_CSUM, 3, 72, 1000, 40, 16) + packet,  # UFO
    ]
    sent = pump(mn, bad + frames)
    assert mn.module.drops.counts["unusable TUN frame"] == len(bad)
    assert len(sent) == len(metas)


@pytest.mark.parametrize("pair", ["offload"], indirect=True)
def test_peer_sending_tcp_data_offset_4_does_not_kill_the_receive_loop(pair):
    """An authenticated peer's two in-sequence TCP segments with a 16-byte
    header used to crash Coalescer._emit out of flush (before db4d827)."""
    mn, cn = pair
    src, dst = MN.vip4.packed, CN.vip4.packed

    def short_header(seq: int) -> bytes:
        th = struct.pack("!HHIIBBH", 40000, 5201, seq, 1, 4 << 4, ACK, 100)  # 16 bytes: no checksum field
        return ipv4_header(TCP, 16 + 200, src=src, dst=dst, ident=1) + th + bytes(200)

    batch = [mn.tunnel.seal(core.CAPSULE, short_header(0)), mn.tunnel.seal(core.CAPSULE, short_header(200))]
    batch.append(
        mn.tunnel.seal(core.CAPSULE, ipv4_header(UDP, 8, src=src, dst=dst, ident=2) + struct.pack("!HHHH", 1, 2, 8, 0))
    )
    socket_batch(cn, batch, MN_ADDR, time.time())
    assert len(read_tun(cn)) == 3


@pytest.mark.parametrize("doff", [0, 2, 4])
@pytest.mark.parametrize("pair", ["offload"], indirect=True)
def test_tun_frame_with_tcp_data_offset_below_5_is_counted_not_fatal(pair, doff):
    mn, _cn = pair
    flow = TcpFlow(random.Random(4), False, MN, CN, 40001, 5201)
    while True:
        frames, metas = flow.write(plain=False)
        if len(metas) > 2:
            break
    bad = bytearray(frames[0])
    bad[VNET.size + 20 + 12] = doff << 4
    try:
        sent = pump(mn, [bytes(bad)] + frames)
    except BaseExceptionGroup as group:
        crash = group.subgroup((struct.error, IndexError))
        if crash is None:
            raise
        pytest.fail(f"tun_reader died: {crash.exceptions[0]!r}")
    assert mn.module.drops.counts["unusable TUN frame"] == 1
    assert len(sent) == len(metas)


@PATHS
def test_a_tunnel_a_new_path_replaced_still_delivers_what_was_in_flight_then_nothing(pair):
    from cyphonic.node import tunnel_table
    from tests.support.packets import ipv4_udp

    mn, cn = pair
    in_flight = [mn.tunnel.seal(core.CAPSULE, ipv4_udp(str(MN.vip4), str(CN.vip4), bytes([i]) * 40)) for i in range(3)]
    # a new path's tunnel replaces the old one at cn (mn switches a moment later)
    _, new_cn = handshake(time.time())
    assert cn.module.install(new_cn) is cn.tunnel
    read_tun(cn)
    socket_batch(cn, in_flight[:2], MN_ADDR, time.time())
    assert len(read_tun(cn)) == 2  # the old path's data still arrives
    keepalive = mn.tunnel.seal(core.KEEPALIVE, b"")
    socket_batch(cn, [keepalive], MN_ADDR, time.time())
    assert cn.module.drops.counts["capsule for unknown tunnel"] == 1  # data only: nothing answered on it
    later = time.time() + tunnel_table.REPLACED_FOR + 0.1
    socket_batch(cn, in_flight[2:], MN_ADDR, later)
    assert not read_tun(cn)
    assert cn.module.drops.counts["capsule for unknown tunnel"] == 2
