"""Both data paths fuzzed, both directions: nothing raises, every drop is counted.

Random and mangled datagrams reach the receiver (and authenticated
capsules carrying mangled inner packets, as from a hostile or broken peer);
random and mangled frames reach the sender's TUN reader. The two nodes are
`tests.support.dataplane`'s (the `pair` fixture).
"""

from __future__ import annotations

import collections
import os
import random
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cyphonic.core import offload
from cyphonic.core import tunnel as core
from cyphonic.wire.tunnel import DATA_TYPES
from tests.support.dataplane import CN, MN, MN_ADDR, PATHS, pump, read_tun, socket_batch
from tests.support.traffic import flows_from

FUZZ = settings(
    max_examples=int(os.environ.get("CYPHONIC_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def mangled(draw, datagrams: list[bytes]) -> bytes:
    d = bytearray(draw(st.sampled_from(datagrams)))
    for _ in range(draw(st.integers(0, 4))):
        d[draw(st.integers(0, len(d) - 1))] ^= 1 << draw(st.integers(0, 7))
    if draw(st.booleans()):
        d = d[: draw(st.integers(0, len(d)))]
    return bytes(d)


def sample_frames(vnet: bool) -> list[bytes]:
    rng = random.Random(5)
    out = []
    for flow in flows_from(rng, MN, CN, 40000):
        for _ in range(3):
            out += flow.write(plain=not vnet)[0]
    return out


SAMPLES = {True: sample_frames(True), False: sample_frames(False)}


@PATHS
@FUZZ
@given(data=st.data())
def test_receive_never_raises_and_counts_what_it_drops(pair, data):
    """Random and mangled datagrams (outer fuzz), and authenticated capsules
    carrying mangled inner packets (a hostile or broken peer)."""
    mn, cn = pair
    vnet = mn.module.vnet
    frames = data.draw(st.lists(st.sampled_from(SAMPLES[vnet]), min_size=1, max_size=3))
    packets = [p for f in frames for p in (offload.segment(f) if vnet else [f])]
    good = [mn.tunnel.seal(core.CAPSULE, p) for p in packets]
    inner = [offload.finish_checksum(p) for p in packets]
    batch = data.draw(
        st.lists(
            st.one_of(
                st.binary(max_size=80),
                mangled(good),
                st.sampled_from(good),
                mangled(inner).map(lambda p: ("inner", p)),
            ),
            max_size=30,
        )
    )
    datagrams = [mn.tunnel.seal(core.CAPSULE, item[1]) if isinstance(item, tuple) else item for item in batch]
    before = cn.tunnel.rx_packets
    drops_before = collections.Counter(cn.module.drops.counts)
    socket_batch(cn, datagrams, MN_ADDR, time.time())
    read_tun(cn)
    drops = collections.Counter(cn.module.drops.counts) - drops_before
    opened = cn.tunnel.rx_packets - before
    considered = sum(1 for d in datagrams if d and d[0] in DATA_TYPES)
    # each datagram handed to the module is opened or counted, never both,
    # never neither; an opened one may then be dropped for its inner source
    inner_drops = drops.pop("inner source is not the peer's virtual IP", 0)
    assert opened + sum(drops.values()) == considered
    assert inner_drops <= opened
    assert set(drops) <= {
        "truncated capsule",
        "capsule for unknown tunnel",
        "unauthenticated capsule",
        "replayed capsule",
    }


@st.composite
def mangled_frames(draw, vnet: bool) -> bytes:
    f = bytearray(draw(st.sampled_from(SAMPLES[vnet])))
    for _ in range(draw(st.integers(1, 5))):
        position = draw(st.integers(0, min(len(f) - 1, 100)))
        f[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        f = f[: draw(st.integers(0, len(f)))]
    return bytes(f)


@PATHS
@FUZZ
@given(data=st.data())
def test_sending_bad_tun_frames_never_raises(pair, data):
    mn, _cn = pair
    vnet = mn.module.vnet
    frames = data.draw(st.lists(st.one_of(st.binary(min_size=1, max_size=200), mangled_frames(vnet)), max_size=6))
    pump(mn, frames)  # tun_reader must survive every one of them
    assert set(mn.module.drops.counts) <= {
        "unusable TUN frame",
        "no tunnel for destination",
        "send failed",
        "socket send buffer full",
    }
