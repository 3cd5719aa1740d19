"""The Adapter Daemon (seed): the node daemon's Signaling and Packet
Handling Modules plus the General Node Management, Address Configuration
and Interface Handling Modules, in one nursery.

Start-up follows the seed's "Get General Node information": the adapter
logs in to the AS with its own certificate, registers with the NMS, asks
the AS for its general nodes, and only then serves the LAN port.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterator

import trio

from cyphonic import control, crypto, fastpath, metrics, notify
from cyphonic.adapter.address_configuration import AddressConfiguration
from cyphonic.adapter.general_nodes import GeneralNode, GeneralNodeManagement
from cyphonic.adapter.interface import InterfaceHandling
from cyphonic.adapter.lan_packets import LanPacketHandling, OwnedPackets
from cyphonic.adapter.status import status_document
from cyphonic.kernel import batch as batch_io
from cyphonic.kernel import packet_socket
from cyphonic.kernel.netlink import global_addresses, network_changes
from cyphonic.kernel.packet_socket import PacketSocket
from cyphonic.keys import read_certificate
from cyphonic.node.compiled_loops import CompiledLoops
from cyphonic.node.daemon import network_changed, offered_ciphers, open_sockets, read_sockets
from cyphonic.node.demux import Demultiplexer
from cyphonic.node.signaling import SignalingModule
from cyphonic.wire.certificate import Certificate
from cyphonic.wire.common import parse

log = logging.getLogger("cyphonic.adapter")


class Itself:
    """The owner of tunnels to the adapter's own identity: it has no LAN
    address, so what they carry is dropped (no general node behind it)."""

    mac = None
    vip4_bytes = b"\0" * 4
    vip6_bytes = b"\0" * 16
    signaling: SignalingModule | None = None  # its Tunnel Updates go there


class AdapterDaemon:
    def __init__(
        self,
        cfg: dict,
        *,
        lan_factory: Callable[[str], PacketSocket] = PacketSocket,
        local_addresses: Callable[[set[str]], list[str]] = global_addresses,
        control_name: str | None = "",
    ) -> None:
        self.cfg = cfg
        self.control_name = cfg["control"] if control_name == "" else control_name
        self.started = time.time()
        self.identity = crypto.Identity.load(cfg["key"])
        self.certificate = read_certificate(cfg["certificate"])
        self.ca_public = crypto.ca_public_key(read_certificate(cfg["ca"]))
        cert = parse(Certificate, self.certificate).body.value
        self.fqdn = cert.fqdn
        self.domain = cert.fqdn.split(".", 1)[1]
        if lan_factory is PacketSocket:
            packet_socket.isolate(cfg["lan"])
        self.lan = lan_factory(cfg["lan"])
        self.sockets = open_sockets(cfg["listen_port"])
        offload = cfg["offload"]
        self.gso = offload and all(batch_io.gso_supported(s) for s in self.sockets.values())
        self.gro = offload and all(batch_io.enable_gro(s) for s in self.sockets.values())
        self.packet = LanPacketHandling(self.sockets, self.lan, offload=offload, gso=self.gso)
        if self.packet.vnet and fastpath.chosen(cfg["packet_loops"]):
            # sealing and opening compiled; delivery stays the adapter's own
            # (its inner-address check, Ethernet framing on the LAN port)
            self.packet.compiled = CompiledLoops(self.packet, coalesce=False)
        self.packet.on_tunnel_message = lambda tunnel, type_, body: tunnel.owner.signaling.tunnel_message(
            tunnel, type_, body
        )
        self.itself = Itself()
        self.signaling = SignalingModule(
            cfg,
            self.identity,
            self.certificate,
            self.ca_public,
            self.sockets,
            OwnedPackets(self.packet, self.itself),
            local_addresses=local_addresses,
        )
        self.itself.signaling = self.signaling
        self.demux = Demultiplexer()
        self.demux.add(self.signaling)
        self.general_nodes = GeneralNodeManagement(
            cfg,
            identity=self.identity,
            certificate=self.certificate,
            ca_public=self.ca_public,
            domain=self.domain,
            sockets=self.sockets,
            packet=self.packet,
            demux=self.demux,
            local_addresses=local_addresses,
            on_ready=self._general_node_ready,
            send=self.signaling.sendto,
        )
        self.addresses: AddressConfiguration | None = None
        self.interface: InterfaceHandling | None = None
        self.metrics_address: tuple[str, int] | None = None  # where GET /metrics answers, once bound

    def _general_node_ready(self, gn: GeneralNode) -> None:
        if self.addresses is not None:
            self.addresses.ready(gn)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.signaling.nursery = nursery
            self.general_nodes.nursery = nursery
            nursery.start_soon(self.signaling.run)
            if self.control_name:
                await nursery.start(control.serve, self.control_name, self.status, self.cfg["control_group"])
            if self.cfg["metrics"]:
                self.metrics_address = await nursery.start(metrics.serve, self.cfg["metrics"], self._metrics)
            for sock in self.sockets.values():
                nursery.start_soon(read_sockets, sock, self.packet, self.demux, self.signaling.drops)
            grant = await self.signaling.login()
            await self.signaling.register_all()
            prefix4 = ipaddress.IPv4Network(f"{grant.vip4}/{grant.vip4_prefix}", strict=False)
            prefix6 = ipaddress.IPv6Network(f"{grant.vip6}/{grant.vip6_prefix}", strict=False)
            self.addresses = AddressConfiguration(
                self.cfg,
                mac=self.lan.mac,
                vip4=grant.vip4,
                prefix4=prefix4,
                vip6=grant.vip6,
                prefix6=prefix6,
                domain=self.domain,
                general_nodes=self.general_nodes,
                packet=self.packet,
            )
            self.interface = InterfaceHandling(
                self.lan,
                self.packet,
                self.general_nodes,
                self.addresses,
                mtu=self.cfg["mtu"],
                vip4=grant.vip4,
                prefix4=prefix4,
                vip6=grant.vip6,
                prefix6=prefix6,
            )
            nursery.start_soon(self.general_nodes.fetch_forever)
            await self.general_nodes.fetched.wait()
            self.addresses.restore(time.time())
            nursery.start_soon(self.addresses.run)
            nursery.start_soon(self.interface.run)
            nursery.start_soon(network_changes, self.network_changed)
            log.info(
                "adapter %s ready on %s: %d general nodes, data path %s",
                grant.fqdn,
                self.lan.name,
                len(self.general_nodes.by_mac),
                self.dataplane()["path"],
            )
            # registered, its general nodes fetched, the LAN port served: systemd's `Type=notify`
            notify.ready(f"adapter {grant.fqdn} ready on {self.lan.name}")
            task_status.started(self)

    def _metrics(self) -> Iterator[metrics.Metric]:
        return metrics.adapter_families(self)

    def network_changed(self) -> None:
        """The WAN side moved: the adapter and every general node at once."""
        identities = [self.signaling] + [gn.signaling for gn in self.general_nodes.by_mac.values()]
        network_changed(self.packet, identities)

    def dataplane(self) -> dict:
        return {
            "path": "offload" if self.packet.vnet else "plain",
            "packet_loops": "compiled" if self.packet.compiled else "python",
            "lan_vnet_header": self.lan.vnet,
            "udp_gso": self.gso,
            "udp_gro": self.gro,
            "ciphers": offered_ciphers(self.cfg["cipher"]),
        }

    def status(self, _request: dict) -> dict:
        return status_document(self, time.time())
