"""The Signaling machine driven step by step with a fake clock: every node,
the AS, the NMS and the TRS are sans-I/O objects on an in-memory network
that delivers datagrams (or loses them) and jumps time to the next timer.
No sockets, no sleeps: each retransmission, refresh, punch and expiry
decision is seen at the instant the machine makes it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from cyphonic import crypto
from cyphonic.auth.service import AuthenticationService
from cyphonic.core.relay import RelayService
from cyphonic.core.signaling import events as ev
from cyphonic.core.signaling import paths, punching, routes
from cyphonic.core.signaling.machine import SignalingMachine
from cyphonic.nms.service import NodeManagementService
from cyphonic.store import Store
from cyphonic.wire.common import TYPE
from cyphonic.wire.tunnel import DATA_TYPES
from tests.unit.test_services import DOMAIN, NOW, Pki

AS, NMS, TRS = ("203.0.113.1", 7000), ("203.0.113.1", 7001), ("203.0.113.2", 7002)


@dataclass
class Host:
    machine: SignalingMachine
    address: tuple[str, int]
    locators: list[str]
    events: list = field(default_factory=list)
    tunnels: dict = field(default_factory=dict)  # the data plane's table, by local index


class Net:
    """Datagrams in flight, in order; `lose` drops those a predicate picks."""

    def __init__(self, tmp_path, trs: bool = False) -> None:
        self.now = NOW
        self.pki = Pki()
        nms_key, trs_key = crypto.random_key(), crypto.random_key()
        store = Store(tmp_path / "as.sqlite", ipaddress.ip_network("10.96.0.0/16"), ipaddress.ip_network("fd7c:1f00::/64"))
        self.services = {
            AS: AuthenticationService(identity=self.pki.as_id, certificate=self.pki.as_cert, ca_public=self.pki.ca.sign_public,
                                      store=store, domain=DOMAIN, nms_key=nms_key, revoked=frozenset),
            NMS: NodeManagementService(nms_key, refresh=10, trs=[TRS] if trs else [], trs_key=trs_key if trs else None),
        }
        if trs:
            self.services[TRS] = RelayService(trs_key, [TRS])
        self.hosts: dict[tuple[str, int], Host] = {}
        self.flight: list[tuple[bytes, tuple, tuple]] = []  # (datagram, source, dest)
        self.lose = lambda datagram, source, dest: False
        self.sent: list[tuple[bytes, tuple, tuple]] = []
        self.send_log: list[tuple[float, tuple]] = []  # (when, dest) of every datagram sent

    def node(self, name: str, address: tuple[str, int], locators: list[str] | None = None, **kw) -> Host:
        cert, ident = self.pki.issue(name)
        machine = SignalingMachine(ident, cert, self.pki.ca.sign_public, auth=[AS], nms=[NMS], families={"ipv4"},
                                   port=address[1], now=self.now, **kw)
        host = self.hosts[address] = Host(machine, address, [address[0]] if locators is None else locators)
        return host

    # -- moving datagrams and time ------------------------------------------------

    def _collect(self, host: Host) -> None:
        m = host.machine
        while (event := m.next_event()) is not None:
            host.events.append(event)
            if isinstance(event, ev.RegistrationDue):
                m.register(self.now, host.locators)
            elif isinstance(event, ev.TunnelEstablished):
                host.tunnels[event.tunnel.local_index] = event.tunnel
        for action in m.datagrams_to_send():
            if isinstance(action, ev.Send):
                self.flight.append((action.datagram, host.address, action.dest))
            else:  # the data plane seals control capsules under the End Key
                dest = action.to or action.tunnel.endpoint
                datagram = action.tunnel.seal(action.type, action.body)
                if action.tunnel.relayed and action.to is None:
                    datagram = action.tunnel.path.relay.wrap(datagram, sealed=True)
                self.flight.append((datagram, host.address, dest))

    def settle(self, until: float | None = None) -> None:
        """Deliver everything; then jump to the next timer, up to `until`."""
        for _ in range(10000):
            for host in self.hosts.values():
                self._collect(host)
            if self.flight:
                datagram, source, dest = self.flight.pop(0)
                self.sent.append((datagram, source, dest))
                self.send_log.append((self.now, dest))
                if not self.lose(datagram, source, dest):
                    self._deliver(datagram, source, dest)
                continue
            timers = [t for h in self.hosts.values() if (t := h.machine.next_timer()) is not None]
            timers += [t for s in self.services.values() if hasattr(s, "next_timer") and (t := s.next_timer()) is not None]
            due = min(timers, default=None)
            if due is None or until is None or due > until:
                if until is not None:
                    self.now = max(self.now, until)
                return
            self.now = max(self.now, due)
            for host in self.hosts.values():
                host.machine.handle_timer(self.now)
            for address, service in self.services.items():
                if hasattr(service, "handle_timer"):
                    for datagram, dest in service.handle_timer(self.now) or []:
                        self.flight.append((datagram, address, dest))
        raise AssertionError("the network never settled")

    def _deliver(self, datagram: bytes, source, dest) -> None:
        service = self.services.get(dest)
        if service is not None:
            out = service.receive(datagram, source, self.now)
            out = [] if out is None else [(out, source)] if isinstance(out, bytes) else out
            for reply, to in out:
                self.flight.append((reply, dest, to))
            return
        host = self.hosts.get(dest)
        if host is None:
            return
        if datagram[0] in DATA_TYPES:
            self._data(host, datagram, source)
            return
        inner = host.machine.receive(datagram, source, self.now)
        if inner is not None:
            self._data(host, inner, source, via_relay=True)

    def _data(self, host: Host, datagram: bytes, source, via_relay: bool = False) -> None:
        """The data plane's part: open, and hand Tunnel Updates to the machine."""
        index = int.from_bytes(datagram[1:5], "little")
        tunnel = host.tunnels.get(index)
        if tunnel is None:
            return
        plain = tunnel.open(datagram, source, self.now) if not via_relay else tunnel.open(datagram, source, self.now)
        if plain is not None and datagram[0] in (TYPE["TunnelUpdate"], TYPE["TunnelUpdateAck"]):
            host.machine.tunnel_message(tunnel, datagram[0], plain, self.now)

    def up(self, *hosts: Host) -> None:
        for host in hosts:
            host.machine.login(self.now)
        self.settle()

    def of(self, host: Host, kind: type) -> list:
        return [e for e in host.events if isinstance(e, kind)]


@pytest.fixture
def net(tmp_path):
    return Net(tmp_path)


MN, CN = ("198.51.100.10", 4500), ("192.0.2.10", 4500)


def test_login_then_registration_then_refresh_every_interval(net):
    mn = net.node("mn", MN)
    net.up(mn)
    assert [type(e) for e in mn.events[:1]] == [ev.LoggedIn]
    mn.machine.register(net.now, mn.locators)
    net.settle()
    [registered] = net.of(mn, ev.Registered)
    assert registered.family == "ipv4" and registered.nat is False and registered.first
    start = net.now
    net.settle(until=start + 10.5)
    assert len(net.of(mn, ev.RegistrationDue)) == 1  # after the NMS's refresh interval, not before
    net.settle(until=start + 30.5)
    assert len(net.of(mn, ev.RegistrationDue)) == 3
    assert len(net.of(mn, ev.Registered)) == 4


def test_a_lost_login_answer_is_retransmitted_with_backoff_then_the_round_retried(net):
    mn = net.node("mn", MN)
    net.lose = lambda d, s, dest: dest == AS
    start = net.now
    mn.machine.login(start)
    net.settle(until=start + 6.2)
    times = [round(t - start, 1) for t, dest in net.send_log if dest == AS]
    assert times == [0.0, 0.3, 0.9, 2.1, 4.1]  # 0.3, 0.6, 1.2, 2.0 between them
    assert not net.of(mn, ev.LoggedIn)
    net.lose = lambda d, s, dest: False
    net.settle(until=start + 8)  # the next round, 1 s after the first gave up
    assert net.of(mn, ev.LoggedIn)
    assert round(net.send_log[5][0] - start, 1) == 7.1


def registered_pair(net, mn_locators=None, cn_locators=None, **kw):
    mn = net.node("mn", MN, mn_locators, **kw)
    cn = net.node("cn", CN, cn_locators, **kw)
    net.up(mn, cn)
    for host in (mn, cn):
        host.machine.register(net.now, host.locators)
    net.settle()
    return mn, cn


def test_direct_route_selection_opens_the_tunnel_from_the_mn(net):
    mn, cn = registered_pair(net)
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle()
    [selected] = net.of(mn, ev.RouteSelected)
    assert selected.fqdn == f"cn.{DOMAIN}"
    [mine] = net.of(mn, ev.TunnelEstablished)
    [theirs] = net.of(cn, ev.TunnelEstablished)
    assert mine.tunnel.path.process == "TunnelRequestToCN" and mine.tunnel.path.initiator
    assert mine.tunnel.remote_index == theirs.tunnel.local_index and mine.tunnel.endpoint == CN
    assert mn.machine.paths[mine.tunnel.path.path_id].state == paths.ESTABLISHED
    assert cn.machine.paths[theirs.tunnel.path.path_id].state == paths.ANSWERED


def test_the_path_is_announced_as_directed_before_the_tunnel_is_selected(net):
    mn, cn = registered_pair(net)
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle()
    kinds = [type(e) for e in mn.events if isinstance(e, (ev.RouteDirected, ev.RouteSelected))]
    assert kinds == [ev.RouteDirected, ev.RouteSelected]
    [directed] = net.of(mn, ev.RouteDirected)
    assert directed.peer == net.of(mn, ev.RouteSelected)[0].peer


def test_reverse_route_selection_the_cn_behind_napt_opens_it(net):
    mn, cn = registered_pair(net, cn_locators=["192.168.20.10"])
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle()
    assert net.of(mn, ev.RouteSelected)
    [theirs] = net.of(cn, ev.TunnelEstablished)
    assert theirs.tunnel.path.process == "TunnelRequestToNATcn" and theirs.tunnel.path.initiator


def test_a_lost_tunnel_response_is_retransmitted_and_answered_the_same(net):
    mn, cn = registered_pair(net)
    lost = []

    def lose_first_response(datagram, source, dest):
        if datagram[0] == TYPE["TunnelResponse"] and not lost:
            lost.append(datagram)
            return True
        return False

    net.lose = lose_first_response
    start = net.now
    mn.machine.route_to(f"cn.{DOMAIN}", start)
    net.settle(until=start + 1)
    requests = [d for d, s, dest in net.sent if d[0] == TYPE["TunnelRequest"]]
    responses = [d for d, s, dest in net.sent if d[0] == TYPE["TunnelResponse"]]
    assert len(requests) == 2 and requests[0] == requests[1]  # the same request again
    assert len(responses) == 2 and responses[0] == responses[1]  # answered the same: one tunnel
    assert len(net.of(cn, ev.TunnelEstablished)) == 1
    [mine] = net.of(mn, ev.TunnelEstablished)
    assert net.of(mn, ev.RouteSelected) and mine.tunnel.established - start == pytest.approx(0.3)


def test_an_unknown_name_fails_as_unknown(net):
    mn, _ = registered_pair(net)
    mn.machine.route_to(f"nobody.{DOMAIN}", net.now)
    net.settle()
    [failed] = net.of(mn, ev.RouteFailed)
    assert failed.unknown and failed.fqdn == f"nobody.{DOMAIN}"


def test_a_silent_peer_fails_the_route_after_the_tunnel_request_attempts(net):
    mn, cn = registered_pair(net)
    net.lose = lambda d, s, dest: dest == CN and d[0] == TYPE["TunnelRequest"]
    start = net.now
    mn.machine.route_to(f"cn.{DOMAIN}", start)
    net.settle(until=start + 20)
    [failed] = net.of(mn, ev.RouteFailed)
    assert "does not answer" in failed.reason
    sent = [d for d, s, dest in net.sent if d[0] == TYPE["TunnelRequest"]]
    assert len(sent) == paths.OPEN_ATTEMPTS
    assert f"cn.{DOMAIN}" not in mn.machine.selections


def test_a_responder_mn_gives_up_when_the_peer_never_opens(net):
    mn, cn = registered_pair(net, cn_locators=["192.168.20.10"])
    net.lose = lambda d, s, dest: d[0] == TYPE["TunnelRequest"]
    start = net.now
    mn.machine.route_to(f"cn.{DOMAIN}", start)
    net.settle(until=start + routes.RESPONDER_WAIT + 1)
    [failed] = net.of(mn, ev.RouteFailed)
    assert "did not open the tunnel" in failed.reason


def test_an_announced_path_never_used_is_forgotten_at_the_next_refresh_after_its_lifetime(net):
    mn, cn = registered_pair(net, cn_locators=["192.168.20.10"])
    net.lose = lambda d, s, dest: d[0] == TYPE["TunnelRequest"]
    mn.machine.route_to(f"cn.{DOMAIN}", net.now)
    net.settle(until=net.now + 1)
    [path_id] = [p for p, e in mn.machine.paths.items() if e.state == paths.ANNOUNCED]
    net.settle(until=net.now + paths.PATH_LIFETIME + 11)
    assert path_id not in mn.machine.paths


@pytest.fixture
def relay_net(tmp_path):
    return Net(tmp_path, trs=True)


def test_both_behind_napt_relay_then_punch_direct(relay_net):
    net = relay_net
    mn, cn = registered_pair(net, mn_locators=["192.168.1.10"], cn_locators=["192.168.2.10"])
    start = net.now
    mn.machine.route_to(f"cn.{DOMAIN}", start)
    net.settle(until=start + 0.01)
    [mine] = net.of(mn, ev.TunnelEstablished)
    assert mine.tunnel.path.process == "TunnelRequestToTRS" and mine.tunnel.endpoint == TRS
    net.settle(until=start + 1)
    # both ends announced their NAPT mapping and punched straight at the other's
    punches = [(s, dest) for d, s, dest in net.sent if dest in (MN, CN) and s in (MN, CN)]
    assert punches, "no punch went straight between the two ends"
    finished = net.of(mn, ev.PunchFinished) + net.of(cn, ev.PunchFinished)
    assert len(finished) == 2


def test_punches_are_eight_keep_alives_the_first_two_with_a_short_ttl(relay_net):
    net = relay_net
    mn, cn = registered_pair(net, mn_locators=["192.168.1.10"], cn_locators=["192.168.2.10"])
    sent = []
    original = mn.machine.datagrams_to_send

    def recording():
        out = original()
        sent.extend((net.now, a) for a in out if isinstance(a, ev.SendOnTunnel) and a.to is not None)
        return out

    mn.machine.datagrams_to_send = recording
    net.lose = lambda d, s, dest: s in (MN, CN) and dest in (MN, CN)  # NAPTs that let nothing through
    start = net.now
    mn.machine.route_to(f"cn.{DOMAIN}", start)
    net.settle(until=start + 1)
    assert [a.ttl for _, a in sent] == [punching.PUNCH_TTL] * 2 + [None] * 6
    gaps = [round(b[0] - a[0], 3) for a, b in zip(sent, sent[1:])]
    assert gaps == [punching.PUNCH_INTERVAL] * 7
    [finished] = net.of(mn, ev.PunchFinished)
    assert not finished.direct


def test_a_ticket_close_to_its_expiry_means_a_new_login_then_registration(net):
    net.services[AS].ticket_lifetime = 400  # the machine logs in again 300 s before expiry
    mn = net.node("mn", MN)
    net.up(mn)
    mn.machine.register(net.now, mn.locators)
    net.settle()
    first = mn.machine.grant
    start = net.now
    net.settle(until=start + 95)
    assert len(net.of(mn, ev.LoggedIn)) == 1
    net.settle(until=start + 115)  # the refresh at +110 finds less than 300 s left
    assert len(net.of(mn, ev.LoggedIn)) == 2 and mn.machine.grant.ticket != first.ticket
    # and registers under the new ticket at once
    assert net.services[NMS].registry[mn.machine.grant.fqdn].session_key == mn.machine.grant.session_key


def test_a_lost_ack_brings_the_route_direction_again_and_the_cn_acks_it_to_the_nms(net):
    mn, cn = registered_pair(net)
    lost = []

    def lose_first_ack(datagram, source, dest):
        if source == CN and dest == NMS and datagram[0] == TYPE["RouteDirectionAck"] and not lost:
            lost.append(datagram)
            return True
        return False

    net.lose = lose_first_ack
    start = net.now
    mn.machine.route_to(f"cn.{DOMAIN}", start)
    net.settle(until=start + 1)
    directions = [d for d, s, dest in net.sent if dest == CN and d[0] == TYPE["RouteDirectionToCN"]]
    acks = [dest for d, s, dest in net.sent if s == CN and d[0] == TYPE["RouteDirectionAck"]]
    assert len(directions) == 2 and directions[0] == directions[1]  # the NMS sent it again
    assert acks == [NMS, NMS]
    assert net.of(mn, ev.RouteSelected) and len(net.of(cn, ev.TunnelEstablished)) == 1


def test_a_dual_stack_node_registers_one_family_after_the_other_and_both_hold(net):
    """One sequence orders all of a node's registrations at the NMS: sent
    over two sockets at once they could arrive reversed and the later one
    would be refused as stale; so the second waits for the first's answer."""
    nms6 = ("2001:db8::1", 7001)
    net.services[nms6] = net.services[NMS]
    cert, ident = net.pki.issue("mn")
    machine = SignalingMachine(ident, cert, net.pki.ca.sign_public, auth=[AS], nms=[NMS, nms6],
                               families={"ipv4", "ipv6"}, port=4500, now=net.now)
    mn = net.hosts[MN] = Host(machine, MN, ["198.51.100.10", "2001:db8:a::10"])
    net.up(mn)
    machine.register(net.now, mn.locators)
    assert machine.registering
    net.settle()
    kinds = [(d[0], dest) for d, s, dest in net.sent if d[0] in (TYPE["RegistrationRequest"], TYPE["RegistrationResponse"])]
    first, second = kinds[0][1], kinds[2][1]
    assert kinds == [(TYPE["RegistrationRequest"], first), (TYPE["RegistrationResponse"], MN),
                     (TYPE["RegistrationRequest"], second), (TYPE["RegistrationResponse"], MN)]
    assert {first, second} == {NMS, nms6}
    assert set(machine.registered) == {"ipv4", "ipv6"} and not machine.registering
    assert net.services[NMS].drops.counts["stale registration"] == 0
