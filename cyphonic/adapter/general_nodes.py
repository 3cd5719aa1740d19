"""General Node Management Module (seed): each general node's FQDN,
virtual IPs, keys, lease, tunnels and counters, and the two sequences that
fill them in.

- Get General Node information: the adapter asks the AS which general
  nodes are its own (Node Information Request/Response), at start and every
  `general_node_refresh` seconds, so `cyphonic adapter add|remove` reaches a
  running adapter.
- General Node configuration: on the first DHCP message from a known MAC
  the adapter logs that general node in to the AS and registers it with the
  NMS on its behalf, each general node with its own certificate and keys,
  through its own Signaling machine on the adapter's shared sockets.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from cyphonic import crypto
from cyphonic.adapter.lan_packets import LanPacketHandling, OwnedPackets
from cyphonic.core import tunnel as core
from cyphonic.core.login import LoginRefused
from cyphonic.core.node_information import GeneralNodeInfo, NodeInformationClient
from cyphonic.drops import Drops
from cyphonic.errors import AuthenticationError, ParseError
from cyphonic.keys import read_certificate
from cyphonic.node.demux import Demultiplexer
from cyphonic.node.errors import RouteError, UnknownPeer
from cyphonic.node.resolver import ResolverModule
from cyphonic.node.signaling import Fatal, SignalingModule

log = logging.getLogger("cyphonic.general")

Address = tuple[str, int]
REROUTE_EVERY = 2.0  # seconds between route selections a general node's packets may trigger
# packets a general node sends to a peer whose tunnel is being established
# (its DNS answer went out when the NMS named the path): held, then sent
STAGE_PACKETS = 64
STAGE_SECONDS = 5.0
MAX_PEERS = 64  # peer addresses remembered per general node (two per peer)


def mac_text(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


@dataclass(eq=False)
class GeneralNode:
    mac: bytes
    fqdn: str
    ipv6: bool
    signaling: SignalingModule
    resolver: ResolverModule
    state: str = "waiting"  # -> configuring -> ready, or refused
    lease4: float | None = None  # expiry of its DHCPv4 lease
    lease6: float | None = None
    vip4_bytes: bytes = b""
    vip6_bytes: bytes = b""
    # peer virtual IP -> FQDN: where its packets go, so a restarted adapter
    # can select the route again without a new DNS query
    peers: dict[bytes, str] = field(default_factory=dict)
    rerouted: float = 0.0
    scope: trio.CancelScope | None = None
    # peer virtual IP -> (since when, TUN-shaped frames held for its tunnel)
    staged: dict[bytes, tuple[float, list[bytes]]] = field(default_factory=dict)

    @property
    def vip4(self) -> ipaddress.IPv4Address | None:
        g = self.signaling.grant
        return g.vip4 if g else None

    @property
    def vip6(self) -> ipaddress.IPv6Address | None:
        g = self.signaling.grant
        return g.vip6 if g else None


class GeneralNodeManagement:
    def __init__(
        self,
        cfg: dict,
        *,
        identity: crypto.Identity,
        certificate: bytes,
        ca_public: bytes,
        domain: str,
        sockets: dict[int, socket.socket],
        packet: LanPacketHandling,
        demux: Demultiplexer,
        local_addresses: Callable[[set[str]], list[str]],
        on_ready: Callable[[GeneralNode], None],
        send: Callable[[bytes, Address], None],
    ) -> None:
        self.cfg = cfg
        self.send = send  # a datagram out of the shared sockets (the adapter's own Signaling Module)
        self.identity = identity
        self.certificate = certificate
        self.ca_public = ca_public
        self.domain = domain
        self.sockets = sockets
        self.packet = packet
        self.demux = demux
        self.local_addresses = local_addresses
        self.on_ready = on_ready
        self.by_mac: dict[bytes, GeneralNode] = {}
        self.by_vip: dict[bytes, GeneralNode] = {}  # every logged-in general node's virtual IPs
        self.drops = Drops(log)
        self.nursery: trio.Nursery | None = None
        self.fetched = trio.Event()
        self._peers_file = Path(str(cfg["leases"]) + ".peers")
        self._saved_peers = self._load_peers()

    # -- what DHCP, ARP and the data path ask ---------------------------------

    def known(self, mac: bytes) -> bool:
        return mac in self.by_mac

    def known6(self, mac: bytes) -> bool:
        gn = self.by_mac.get(mac)
        return gn is not None and gn.ipv6

    def address_of(self, mac: bytes) -> ipaddress.IPv4Address | None:
        gn = self.by_mac.get(mac)
        return gn.vip4 if gn is not None and gn.state == "ready" else None

    def address6_of(self, mac: bytes) -> ipaddress.IPv6Address | None:
        gn = self.by_mac.get(mac)
        return gn.vip6 if gn is not None and gn.ipv6 and gn.state == "ready" else None

    def neighbour(self, fqdn: str) -> core.PeerInfo | None:
        """Another general node on this LAN: its address is answered here,
        and the LAN carries its packets (no route selection, no tunnel)."""
        for gn in self.by_mac.values():
            if gn.fqdn == fqdn and gn.state == "ready" and gn.vip4 and gn.vip6:
                return core.PeerInfo(gn.fqdn, gn.vip4, gn.vip6)
        return None

    # -- Get General Node information ------------------------------------------

    async def fetch_forever(self) -> None:
        while True:
            infos = await self.fetch()
            if infos is not None:
                self.update(infos)
                self.fetched.set()
            await trio.sleep(self.cfg["general_node_refresh"])

    async def fetch(self) -> list[GeneralNodeInfo] | None:
        """This adapter's general nodes from the AS (retrying with backoff);
        None if the AS refused (signed)."""
        delay = 0.5
        auth = set(self.cfg["auth"])
        while True:
            client = NodeInformationClient(self.identity, self.certificate, self.ca_public, time.time())
            answered = trio.Event()
            result: list[Any] = []

            def receive(data: bytes, source: Address, now: float, client=client, answered=answered, result=result):
                if source not in auth:
                    self.drops("node information from a stranger", source)
                    return
                try:
                    result.append(client.accept(data, now))
                except LoginRefused as exc:
                    result.append(exc)
                except (AuthenticationError, ParseError) as exc:
                    self.drops("bad node information response", source, str(exc).splitlines()[0])
                    return
                answered.set()

            handler = (client.matches, receive)
            self.demux.handlers.append(handler)
            try:
                for address in self.cfg["auth"]:
                    self.send(client.request, address)
                with trio.move_on_after(delay):
                    await answered.wait()
            finally:
                self.demux.handlers.remove(handler)
            if result:
                if isinstance(result[0], LoginRefused):
                    log.error("the AS refused to list this adapter's general nodes: %s", result[0].reason)
                    return None
                return result[0]
            delay = min(delay * 2, 30.0)

    def update(self, infos: list[GeneralNodeInfo]) -> None:
        """The AS's list now: general nodes gone are removed, new ones
        added; one whose name or IPv6 flag changed starts again (logged in
        at once if it was, so its lease keeps working)."""
        wanted = {info.mac: info for info in infos}
        again = []
        for mac, gn in list(self.by_mac.items()):
            info = wanted.get(mac)
            if info is None or (info.fqdn, info.ipv6) != (gn.fqdn, gn.ipv6):
                if info is not None and info.fqdn == gn.fqdn:
                    self._saved_peers[mac_text(mac)] = gn.peers
                    if gn.state == "ready":
                        again.append(mac)
                self.remove(gn)
        for mac, info in wanted.items():
            if mac not in self.by_mac:
                self._add(info)
        for mac in again:
            self.configure(mac)

    def _add(self, info: GeneralNodeInfo) -> None:
        name = info.fqdn.split(".", 1)[0]
        directory = Path(self.cfg["general_nodes"])
        try:
            identity = crypto.Identity.load(directory / f"{name}.key")
            certificate = read_certificate(directory / f"{name}.crt")
        except (OSError, ValueError, ParseError) as exc:
            log.error("general node %s (%s): no usable key in %s: %s", info.fqdn, mac_text(info.mac), directory, exc)
            return
        packets = OwnedPackets(self.packet, None, self._installed)
        signaling = SignalingModule(
            self.cfg,
            identity,
            certificate,
            self.ca_public,
            self.sockets,
            packets,
            local_addresses=self.local_addresses,
        )
        r = self.cfg["resolver"]
        resolver = ResolverModule(
            self.domain,
            signaling,
            None,
            r["upstream"],
            r["ttl"],
            r["route_timeout"],
            neighbours=self.neighbour,
            early=True,  # the adapter holds the first packets (stage)
        )
        gn = GeneralNode(info.mac, info.fqdn, info.ipv6, signaling, resolver)
        packets.owner = gn
        signaling.on_directed = lambda peer: self._directed(gn, peer)
        gn.peers = self._saved_peers.get(mac_text(info.mac), {})
        self.by_mac[info.mac] = gn
        self.demux.add(signaling)
        assert self.nursery is not None, "the daemon sets the nursery first"
        signaling.nursery = self.nursery
        self.nursery.start_soon(self._run_machine, gn)
        log.info("general node %s at %s%s", info.fqdn, mac_text(info.mac), " (IPv6)" if info.ipv6 else "")

    async def _run_machine(self, gn: GeneralNode) -> None:
        with trio.CancelScope() as scope:
            gn.scope = scope
            await gn.signaling.run()

    def remove(self, gn: GeneralNode) -> None:
        log.info("general node %s at %s is no longer this adapter's", gn.fqdn, mac_text(gn.mac))
        self.by_mac.pop(gn.mac, None)
        for key in (gn.vip4_bytes, gn.vip6_bytes):
            self.by_vip.pop(key, None)
            self.packet.local.pop(key, None)
        for tunnel in self.packet.tunnels_of(gn):
            self.packet.remove(tunnel)
        self.demux.remove(gn.signaling)
        if gn.scope is not None:
            gn.scope.cancel()
        gn.state = "removed"

    # -- General Node configuration --------------------------------------------

    def configure(self, mac: bytes) -> None:
        """Log the general node at `mac` in and register it, once."""
        gn = self.by_mac.get(mac)
        if gn is None or gn.state in ("configuring", "ready"):
            return
        gn.state = "configuring"
        assert self.nursery is not None
        self.nursery.start_soon(self._configure, gn)

    async def _configure(self, gn: GeneralNode) -> None:
        started = time.perf_counter()
        try:
            grant = await gn.signaling.login()
        except Fatal as exc:
            gn.state = "refused"
            log.error("general node %s: %s", gn.fqdn, exc)
            return
        if gn.state != "configuring":  # removed meanwhile
            return
        gn.vip4_bytes, gn.vip6_bytes = grant.vip4.packed, grant.vip6.packed
        self.by_vip[gn.vip4_bytes] = gn
        if gn.ipv6:
            self.by_vip[gn.vip6_bytes] = gn
        await gn.signaling.register_all()
        gn.state = "ready"
        log.info(
            "general node %s logged in and registered on its behalf in %.1f ms: %s, %s",
            gn.fqdn,
            (time.perf_counter() - started) * 1000,
            grant.vip4,
            grant.vip6,
        )
        self.on_ready(gn)

    # -- peers, for the data path ----------------------------------------------

    def _installed(self, tunnel) -> None:
        gn, peer = tunnel.owner, tunnel.peer
        self.remember(gn, peer.vip4_bytes, peer.fqdn)
        self.remember(gn, peer.vip6_bytes, peer.fqdn)
        held = [frame for vip in (peer.vip4_bytes, peer.vip6_bytes) for frame in gn.staged.pop(vip, (0.0, []))[1]]
        for frame in held:
            self.packet.send_frame_sealed(memoryview(frame))
        if held:
            self.packet.flush_run()

    def _directed(self, gn: GeneralNode, peer: core.PeerInfo) -> None:
        """The route to `peer` is chosen, its tunnel not yet up: hold what
        the general node sends it until then."""
        now = time.monotonic()
        for vip, (since, _) in list(gn.staged.items()):
            if now - since > STAGE_SECONDS:
                del gn.staged[vip]
        for vip in (peer.vip4_bytes, peer.vip6_bytes):
            if any(vip):
                gn.staged.setdefault(vip, (now, []))

    def stage(self, gn: GeneralNode, destination: bytes, frame: bytes) -> bool:
        """Hold `frame` (TUN-shaped) for a tunnel being established to
        `destination`; False if none is."""
        entry = gn.staged.get(destination)
        if entry is None or time.monotonic() - entry[0] > STAGE_SECONDS:
            return False
        if len(entry[1]) < STAGE_PACKETS:
            entry[1].append(frame)
        else:
            self.drops("held packets for a tunnel being established: queue full")
        return True

    def remember(self, gn: GeneralNode, vip: bytes, fqdn: str) -> None:
        if gn.peers.get(vip) == fqdn or not any(vip):
            return
        if len(gn.peers) >= MAX_PEERS:
            del gn.peers[next(iter(gn.peers))]
        gn.peers[vip] = fqdn
        self.save_peers()

    def reroute(self, gn: GeneralNode, destination: bytes, now: float) -> bool:
        """A packet to a peer the general node talked to before, with no
        tunnel (the adapter restarted, the tunnel died): select the route
        again, at most every REROUTE_EVERY seconds. False: not a known peer."""
        fqdn = gn.peers.get(destination)
        if fqdn is None or gn.state != "ready":
            return False
        if now - gn.rerouted >= REROUTE_EVERY:
            gn.rerouted = now
            gn.staged[destination] = (time.monotonic(), [])
            assert self.nursery is not None
            self.nursery.start_soon(self._route, gn, fqdn)
        return True

    async def _route(self, gn: GeneralNode, fqdn: str) -> None:
        try:
            with trio.fail_after(self.cfg["resolver"]["route_timeout"] * 2):
                await gn.signaling.route_to(fqdn)
        except (RouteError, UnknownPeer, trio.TooSlowError) as exc:
            log.info("general node %s: route to %s not selected again: %s", gn.fqdn, fqdn, exc)

    def save_peers(self) -> None:
        document = {
            mac_text(gn.mac): {vip.hex(): fqdn for vip, fqdn in gn.peers.items()} for gn in self.by_mac.values()
        }
        tmp = self._peers_file.with_name(self._peers_file.name + ".tmp")
        try:
            tmp.write_text(json.dumps(document))
            os.replace(tmp, self._peers_file)
        except OSError as exc:
            log.warning("cannot save %s: %s", self._peers_file, exc)

    def _load_peers(self) -> dict[str, dict[bytes, str]]:
        try:
            document = json.loads(self._peers_file.read_text())
            return {
                mac: {bytes.fromhex(vip): str(fqdn) for vip, fqdn in peers.items()} for mac, peers in document.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring %s: %s", self._peers_file, exc)
            return {}
