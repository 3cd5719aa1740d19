"""The node's data path on its own thread (node/data_thread.py): real UDP
sockets over loopback, the TUNs as socketpairs, the compiled loops; the
Trio thread keeps signaling and whatever the compiled loops hand over."""

from __future__ import annotations

import random
import socket
import threading
import time

import trio

from cyphonic.core import tunnel as core
from cyphonic.kernel import batch as batch_io
from cyphonic.node import data_thread
from tests.support.dataplane import CN, MN, Checker, Node, force_buffers, handshake, read_tun
from tests.support.traffic import flows_from


def loopback_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    force_buffers(s)
    s.bind(("127.0.0.1", 0))
    batch_io.enable_gro(s)
    return s


async def test_the_data_thread_carries_every_byte_and_hands_the_rest_to_trio():
    now = time.time()
    mn_tunnel, cn_tunnel = handshake(now)
    a, b = loopback_socket(), loopback_socket()
    mn_tunnel.endpoint, cn_tunnel.endpoint = b.getsockname(), a.getsockname()
    mn = Node(MN, a.getsockname(), mn_tunnel, True, udp=a, compiled=True)
    cn = Node(CN, b.getsockname(), cn_tunnel, True, udp=b, compiled=True)
    handed: list[tuple[str, int, str]] = []  # (node, type, thread) of what reached the Trio thread
    trio_thread = threading.current_thread().name

    def handler(name: str, node: Node):
        def handle(data: bytes, source, when: float) -> None:
            handed.append((name, data[0], threading.current_thread().name))

        return handle

    tunnel_messages: list[tuple[int, str]] = []  # what reached cn's Signaling Module, on which thread
    cn.module.on_tunnel_message = lambda tunnel, kind, body: tunnel_messages.append(
        (kind, threading.current_thread().name)
    )
    drained_on: set[str] = set()
    drain = mn.module.drain_tun

    def recording_drain() -> None:
        drained_on.add(threading.current_thread().name)
        drain()

    mn.module.drain_tun = recording_drain  # type: ignore[method-assign]
    rng = random.Random(7)
    flows = flows_from(rng, MN, CN, 40000)
    check = Checker(flows, True)
    sent = 0
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(data_thread.run, mn.module, [a], handler("mn", mn))
            nursery.start_soon(data_thread.run, cn.module, [b], handler("cn", cn))
            while sent < 5000:
                flow = rng.choice(flows)
                frames, metas = flow.write(plain=False)
                for frame in frames:
                    while True:
                        try:
                            mn.app.send(frame)
                            break
                        except BlockingIOError:
                            await trio.sleep(0.001)
                for m in metas:
                    flow.fate(m, True)
                sent += len(metas)
                for frame in read_tun(cn):
                    check(frame)
            # a Keep Alive and a Tunnel Update (control messages: opened on
            # the data thread in order with the data; the Update's effect on
            # the Trio thread) and a stranger's datagram (signaling)
            a.sendto(mn_tunnel.seal(core.KEEPALIVE, b""), b.getsockname())
            a.sendto(mn_tunnel.seal(core.TUNNEL_UPDATE, b"\0" * 8), b.getsockname())
            stranger = loopback_socket()
            stranger.sendto(b"\x01junk", b.getsockname())
            with trio.fail_after(10):
                while cn_tunnel.rx_packets < sent + 2 or not handed or not tunnel_messages or not mn_tunnel.rx_packets:
                    await trio.sleep(0.01)
                    for frame in read_tun(cn):
                        check(frame)
            nursery.cancel_scope.cancel()
        stranger.close()
    finally:
        for node in (mn, cn):
            node.close()
        a.close()
        b.close()
    for flow in flows:
        flow.verify()
    assert dict(cn.module.drops.counts) == {} and dict(mn.module.drops.counts) == {}
    # every capsule was opened, none dropped as a replay though the Keep
    # Alive and the Update were sealed before thousands of data capsules
    # overtook them on mn's side; the Ack came back
    assert cn_tunnel.rx_packets == sent + 2 and mn_tunnel.rx_packets == 1
    assert handed == [("cn", 0x01, trio_thread)]  # only the stranger's datagram went to signaling
    assert tunnel_messages == [(core.TUNNEL_UPDATE, trio_thread)]
    assert drained_on and trio_thread not in drained_on  # the TUN was read on the data thread only
    # and the nursery closed: cancelling stopped both threads' loops
