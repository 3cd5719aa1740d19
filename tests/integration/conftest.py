"""AS, NMS and nodes over loopback UDP in one Trio run, with in-memory TUNs."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from cyphonic import cli, config
from cyphonic.cloud import run as cloud_run
from cyphonic.cloud import settings as cloud_settings
from cyphonic.node.daemon import NodeDaemon
from cyphonic.node.settings import SCHEMA as NODE_SCHEMA
from tests.support import dataplane
from tests.support.packets import ipv4_udp  # noqa: F401 - the integration tests import it from here

DOMAIN = "cyphonic.test"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MemoryTun:
    """A TUN stand-in: a datagram socketpair, one end for the daemon (the
    'kernel' side it reads and writes), the other for the test (the apps)."""

    def __init__(self, name: str) -> None:
        kernel, app = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        kernel.setblocking(False)
        self._kernel = kernel
        self.fd = kernel.fileno()
        self.app = trio.socket.from_stdlib_socket(app)
        self.name = name
        self.configured = None

    def configure(self, mtu, vip4, prefix4, vip6, prefix6) -> None:
        self.configured = (mtu, vip4, prefix4, vip6, prefix6)

    def close(self) -> None:
        self._kernel.close()


@dataclass
class Node:
    daemon: NodeDaemon
    tun: MemoryTun
    resolver: tuple[str, int]
    port: int
    scope: trio.CancelScope

    @property
    def vip4(self) -> str:
        return str(self.daemon.signaling.grant.vip4)

    @property
    def vip6(self) -> str:
        return str(self.daemon.signaling.grant.vip6)


class Overlay:
    """Builds a CA, a cloud and nodes in a tmp dir and runs them in a nursery."""

    def __init__(self, tmp: Path, nursery: trio.Nursery, relay: bool = False, embedded_trs: bool = False) -> None:
        self.tmp = tmp
        self.nursery = nursery
        self.ca = tmp / "ca"
        assert cli.main(["ca", "init", "--dir", str(self.ca), "--domain", DOMAIN]) == 0
        self.as_port = free_port()
        self.nms_port = free_port()
        text = (self.ca / "cloud.toml").read_text()
        text = text.replace('["0.0.0.0:7000", "[::]:7000"]', f'["127.0.0.1:{self.as_port}"]')
        text = text.replace('["0.0.0.0:7001", "[::]:7001"]', f'["127.0.0.1:{self.nms_port}"]')
        text = text.replace("refresh = 10", "refresh = 1")
        self.trs = None
        if relay:
            from cyphonic import crypto, keys
            from cyphonic.core.relay import RelayService

            key = crypto.random_key()
            keys.write_secret(self.ca / "nms-trs.key", key)
            self.trs_port = free_port()
            self.trs = RelayService(key, [("127.0.0.1", self.trs_port)])
            text = text.replace("trs = []", f'trs = ["127.0.0.1:{self.trs_port}"]')
        if embedded_trs:  # the cloud process runs the TRS itself
            self.trs_port = free_port()
            address = f'"127.0.0.1:{self.trs_port}"'
            text = text.replace("trs = []", f"trs = [{address}]")
            text += f"\n[trs]\nenabled = true\nlisten = [{address}]\npublic = [{address}]\n"
        (self.ca / "cloud.toml").write_text(text)
        self.cloud_scope: trio.CancelScope | None = None
        self.auth = self.nms = None

    async def start_trs(self) -> None:
        from cyphonic.udp import UdpServer

        await self.nursery.start(UdpServer(self.trs, [("127.0.0.1", self.trs_port)], "TRS").run)

    async def start_cloud(self) -> None:
        cfg = config.load(self.ca / "cloud.toml", cloud_settings.SCHEMA)
        self.services = cloud_run.build(cfg)
        self.auth, self.nms, self.embedded = self.services.auth, self.services.nms, self.services.relay
        self.cloud_scope = await self.nursery.start(self._run_cloud, cfg)

    async def _run_cloud(self, cfg, *, task_status) -> None:
        with trio.CancelScope() as scope:
            await cloud_run.serve(cfg, self.services, None, task_status=_Started(task_status, scope))
        self.auth.store.close()

    def stop_cloud(self) -> None:
        self.cloud_scope.cancel()

    def enroll(self, name: str, *extra: str) -> Path:
        out = self.tmp / name
        assert (
            cli.main(["enroll", "node", name, "--ca", str(self.ca), "--out", str(out), "--cloud", "127.0.0.1", *extra])
            == 0
        )
        return out

    async def start_node(
        self, name: str, locators: list[str] | None = None, bundle: Path | None = None, hole_punching: bool = True
    ) -> Node:
        bundle = bundle or self.enroll(name)
        port, dns_port = free_port(), free_port()
        text = (bundle / "node.toml").read_text()
        text = text.replace('"127.0.0.1:7000"', f'"127.0.0.1:{self.as_port}"')
        text = text.replace('"127.0.0.1:7001"', f'"127.0.0.1:{self.nms_port}"')
        text = text.replace(
            "listen_port = 4500", f"listen_port = {port}\nkeepalive = 2\nhole_punching = {str(hole_punching).lower()}"
        )
        text = text.replace('listen = "127.0.0.1:53"', f'listen = "127.0.0.1:{dns_port}"')
        (bundle / "node.toml").write_text(text)
        cfg = config.load(bundle / "node.toml", NODE_SCHEMA)
        tuns: list[MemoryTun] = []

        def factory(name: str, offload: bool = False) -> MemoryTun:
            tuns.append(MemoryTun(name))
            return tuns[-1]

        reported = locators if locators is not None else ["127.0.0.1"]
        daemon = NodeDaemon(cfg, tun_factory=factory, local_addresses=lambda own: reported, control_name=None)
        scope = await self.nursery.start(self._run_node, daemon)
        return Node(daemon, tuns[0], ("127.0.0.1", dns_port), port, scope)

    async def _run_node(self, daemon: NodeDaemon, *, task_status) -> None:
        with trio.CancelScope() as scope:
            try:
                await daemon.run(task_status=_Started(task_status, scope))
            finally:
                for sock in daemon.sockets.values():
                    sock.close()


class _Started:
    """Hands the caller a cancel scope instead of the task's own value."""

    def __init__(self, task_status, scope) -> None:
        self._status, self._scope = task_status, scope

    def started(self, value=None) -> None:
        self._status.started(self._scope)


@pytest.fixture
async def relay_overlay(tmp_path, nursery):
    """The overlay with a Tunnel Relay Service the NMS may assign."""
    o = Overlay(tmp_path, nursery, relay=True)
    await o.start_trs()
    await o.start_cloud()
    yield o


@pytest.fixture
async def embedded_relay_overlay(tmp_path, nursery):
    """The overlay whose cloud process runs the TRS too."""
    o = Overlay(tmp_path, nursery, embedded_trs=True)
    await o.start_cloud()
    yield o


@pytest.fixture
async def overlay(tmp_path, nursery):
    o = Overlay(tmp_path, nursery)
    await o.start_cloud()
    yield o


@pytest.fixture
def pair(request):
    """mn's and cn's PacketHandlingModules, a real tunnel between them (tests/support/dataplane.py):
    request.param "compiled", "offload" or "plain" picks the data path (`dataplane.PATHS`)."""
    mn, cn = dataplane.node_pair(request.param)
    yield mn, cn
    mn.close()
    cn.close()
