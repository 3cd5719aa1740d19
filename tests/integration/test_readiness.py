"""sd_notify readiness: a node tells systemd READY=1 only once it is
logged in and registered with the NMS, with its TUN configured."""

from __future__ import annotations

import socket

import pytest

from tests.integration.conftest import DOMAIN


async def test_a_node_notifies_ready_once_registered(overlay, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        mn = await overlay.start_node("mn")  # returns when the daemon's run() reports started
        message = manager.recv(4096).decode()
    assert message == f"READY=1\nSTATUS=node mn.{DOMAIN} ready on {mn.tun.name}"
    status = mn.daemon.status({})
    assert status["registered"] and mn.tun.name and mn.vip4
