"""Get General Node information over loopback UDP: an adapter enrolled with
the operator's CLI asks the running cloud for its general nodes, which then
log in with their own identities; `cyphonic adapter add|remove` reaches the
running AS through its database."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import trio

from cyphonic import cli, crypto, keys
from cyphonic.core.login import LoginClient, LoginRefused
from cyphonic.core.node_information import GeneralNodeInfo, NodeInformationClient
from tests.integration.conftest import DOMAIN

TV, CAM, LAMP = "02:00:5e:00:53:01", "02:00:5e:00:53:02", "02:00:5e:00:53:03"


async def exchange(request: bytes, port: int, sends: int = 1) -> list[bytes]:
    """The AS's answers to `request` sent `sends` times from one socket."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        answers = []
        for _ in range(sends):
            await sock.sendto(request, ("127.0.0.1", port))
            with trio.fail_after(5):
                answers.append(await sock.recv(65535))
        return answers


def identity(key: Path) -> tuple[crypto.Identity, bytes]:
    return crypto.Identity.load(key), keys.read_certificate(key.with_suffix(".crt"))


def ca_public(bundle: Path) -> bytes:
    return crypto.ca_public_key(keys.read_certificate(bundle / "ca.crt"))


async def general_nodes(overlay, bundle: Path) -> list[GeneralNodeInfo]:
    client = NodeInformationClient(*identity(bundle / "adapter.key"), ca_public(bundle), time.time())
    [answer] = await exchange(client.request, overlay.as_port)
    assert client.matches(answer)
    return client.accept(answer, time.time())


def enroll_adapter(overlay, name: str, *general: str) -> Path:
    bundle = overlay.tmp / name
    argv = ["enroll", "adapter", name, "--ca", str(overlay.ca), "--out", str(bundle), "--cloud", "127.0.0.1"]
    for g in general:
        argv += ["--general-node", g]
    assert cli.main(argv) == 0
    return bundle


async def test_an_adapter_gets_its_general_nodes_and_they_log_in(overlay):
    bundle = enroll_adapter(overlay, "hall", f"{TV}=tv,ipv6", f"{CAM}=cam")
    enroll_adapter(overlay, "shed", f"{LAMP}=lamp")
    listed = await general_nodes(overlay, bundle)
    assert [(g.mac.hex(":"), g.fqdn, g.ipv6) for g in listed] == [
        (CAM, f"cam.{DOMAIN}", False),
        (TV, f"tv.{DOMAIN}", True),
    ]
    # the general node's own login (its adapter sends it) gets the same addresses
    tv = next(g for g in listed if g.fqdn == f"tv.{DOMAIN}")
    login = LoginClient(*identity(bundle / "general" / "tv.key"), ca_public(bundle), time.time())
    [answer] = await exchange(login.request, overlay.as_port)
    grant = login.accept(answer, time.time())
    assert (grant.fqdn, grant.vip4, grant.vip6) == (tv.fqdn, tv.vip4, tv.vip6)
    assert overlay.auth.node_informations == 1 and overlay.auth.logins == 1


async def test_a_retransmitted_request_gets_the_same_answer(overlay):
    bundle = enroll_adapter(overlay, "hall", f"{TV}=tv")
    client = NodeInformationClient(*identity(bundle / "adapter.key"), ca_public(bundle), time.time())
    first, second = await exchange(client.request, overlay.as_port, sends=2)
    assert first == second and [g.fqdn for g in client.accept(first, time.time())] == [f"tv.{DOMAIN}"]
    assert overlay.auth.node_informations == 1


async def test_the_operators_changes_reach_the_running_as(overlay):
    bundle = enroll_adapter(overlay, "hall", f"{TV}=tv")
    assert [g.fqdn for g in await general_nodes(overlay, bundle)] == [f"tv.{DOMAIN}"]
    common = ["--ca", str(overlay.ca), "--bundle", str(bundle), "--adapter", "hall"]
    assert cli.main(["adapter", "add", *common, f"{CAM}=cam"]) == 0
    assert [g.fqdn for g in await general_nodes(overlay, bundle)] == [f"cam.{DOMAIN}", f"tv.{DOMAIN}"]
    tv = identity(bundle / "general" / "tv.key")
    assert cli.main(["adapter", "remove", *common, TV]) == 0
    assert [g.fqdn for g in await general_nodes(overlay, bundle)] == [f"cam.{DOMAIN}"]
    login = LoginClient(*tv, ca_public(bundle), time.time())
    [answer] = await exchange(login.request, overlay.as_port)
    with pytest.raises(LoginRefused):
        login.accept(answer, time.time())


async def test_a_node_asking_for_general_nodes_is_refused(overlay):
    enroll_adapter(overlay, "hall", f"{TV}=tv")
    node = overlay.enroll("mn")
    client = NodeInformationClient(*identity(node / "node.key"), ca_public(node), time.time())
    [answer] = await exchange(client.request, overlay.as_port)
    with pytest.raises(LoginRefused) as info:
        client.accept(answer, time.time())
    assert info.value.reason == "wrong_role"
