"""The per-peer supervisor's decisions, with `now` passed in."""

import ipaddress

from cyphonic import crypto
from cyphonic.core import liveness
from cyphonic.core import tunnel as core

T0 = 1_800_000_000.0


def make_tunnel() -> core.Tunnel:
    peer = core.PeerInfo("cn.cyphonic.test", ipaddress.IPv4Address("10.96.0.3"), ipaddress.IPv6Address("fd7c:1f00::3"))
    path = core.Path(1, "TunnelRequestToCN", True, peer, ("192.0.2.10", 4500), bytes(32))
    key = crypto.random_key()
    return core.Tunnel(path, 1, 2, ("192.0.2.10", 4500), crypto.DataCipher(key, key), T0, last_received=T0, last_sent=T0)


def test_an_idle_tunnel_sends_keepalives_then_dies_when_unanswered():
    t = make_tunnel()
    assert liveness.liveness(t, T0 + 5, keepalive=10) == "ok"
    assert liveness.liveness(t, T0 + 10, keepalive=10) == "keepalive"
    t.last_sent = T0 + 10
    assert liveness.liveness(t, T0 + 15, keepalive=10) == "ok"
    assert liveness.liveness(t, T0 + 32.5, keepalive=10) == "dead"


def test_an_answered_tunnel_stays_alive():
    t = make_tunnel()
    t.last_received = t.last_sent = T0 + 30
    assert liveness.liveness(t, T0 + 35, keepalive=10) == "ok"


def test_only_a_tunnel_that_carried_data_until_it_died_is_rerouted():
    t = make_tunnel()
    assert not liveness.carried_traffic(t, T0 + 40, keepalive=10)  # only keepalives ever
    t.tx_bytes, t.last_data_sent = 1000, T0 + 20
    assert liveness.carried_traffic(t, T0 + 40, keepalive=10)
    assert not liveness.carried_traffic(t, T0 + 80, keepalive=10)  # data stopped long before


def test_data_sent_and_nothing_back_draws_probes_then_fails_the_path_within_a_second():
    t = make_tunnel()  # the supervisor looks every 100 ms; data goes out all the time, nothing comes back
    seen = {}
    for step in range(1, 13):
        now = T0 + step / 10
        t.last_data_sent = t.last_sent = now - 0.01
        action = liveness.liveness(t, now, keepalive=10)
        seen.setdefault(action, round(now - T0, 1))
        if action == "probe":
            t.probed = now
        if action == "failed":
            t.failed_at = now
    # unanswered since the first look (0.1 s): probes from 0.5 s, failed at 1.1 s, probed on after
    assert seen == {"ok": 0.1, "probe": 0.5, "failed": 1.1}
    t.last_received = T0 + 1.25  # an Ack: the path works again
    t.last_data_sent = T0 + 1.2
    assert liveness.liveness(t, T0 + 1.3, keepalive=10) == "ok"
    assert t.failed_at is None and t.unanswered_since is None


def test_a_ping_a_second_apart_is_no_failure():
    t = make_tunnel()
    for second in range(10):  # each request answered 1 ms later; the supervisor looks every 100 ms
        for tick in range(10):
            now = T0 + second + tick / 10 + 0.0005  # a look between a request and its answer
            if tick == 0:
                t.last_data_sent = t.last_sent = now - 0.0004
                assert liveness.liveness(t, now, keepalive=10) == "ok"
                t.last_received = now + 0.0005
            else:
                assert liveness.liveness(t, now, keepalive=10) == "ok"


def test_one_way_traffic_that_is_answered_by_probe_acks_never_fails():
    t = make_tunnel()
    now = T0
    for step in range(100):  # 10 s of a one-way stream, each probe answered
        now = T0 + step * 0.1
        t.last_data_sent = now
        action = liveness.liveness(t, now, keepalive=10)
        assert action != "failed"
        if action == "probe":
            t.probed = t.last_received = now + 0.001


def test_without_an_uplink_a_tunnel_neither_fails_nor_dies():
    t = make_tunnel()
    t.last_data_sent = T0 + 100
    assert liveness.liveness(t, T0 + 100, keepalive=10, offline=True) == "ok"
    assert liveness.liveness(t, T0 + 100, keepalive=10) == "dead"  # with an uplink: silent far too long


def test_a_flow_in_that_stops_at_once_draws_one_probe():
    t = make_tunnel()
    t.rx_packets = 50
    assert liveness.liveness(t, T0 + 0.1, keepalive=10) == "ok"  # flowing: 50 since the last look
    t.last_received = T0 + 0.1
    assert liveness.liveness(t, T0 + 0.3, keepalive=10) == "ok"
    assert liveness.liveness(t, T0 + 0.55, keepalive=10) == "probe"  # silent since the flow stopped
    t.probed = T0 + 0.55
    assert liveness.liveness(t, T0 + 0.8, keepalive=10) == "ok"  # once per silence
    t.last_received = T0 + 5  # a lone datagram later, no flow: no probe after it
    t.rx_packets += 1
    assert liveness.liveness(t, T0 + 5.1, keepalive=10) == "ok"
    assert liveness.liveness(t, T0 + 6, keepalive=10) == "ok"
