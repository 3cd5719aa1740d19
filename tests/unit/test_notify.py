"""sd_notify: one datagram of KEY=value lines to $NOTIFY_SOCKET, nothing without it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from cyphonic import notify


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The receiving end systemd would hold: a bound AF_UNIX datagram socket."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def test_ready_sends_ready_and_status_in_one_datagram(manager: socket.socket) -> None:
    assert notify.ready("node web.example.overlay ready on cyph0")
    assert manager.recv(4096) == b"READY=1\nSTATUS=node web.example.overlay ready on cyph0"


def test_stopping_is_sent_too(manager: socket.socket) -> None:
    assert notify.stopping()
    assert manager.recv(4096).split(b"\n")[0] == b"STOPPING=1"


def test_a_newline_in_a_value_cannot_forge_another_field(manager: socket.socket) -> None:
    notify.ready("bad\nREADY=0")
    assert manager.recv(4096) == b"READY=1\nSTATUS=bad READY=0"


def test_an_abstract_socket_name_starts_with_an_at_sign(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"cyphonic-test-notify-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(1)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


def test_without_systemd_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not notify.ready("ready")
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")  # not an address sd_notify accepts
    assert not notify.ready("ready")


def test_a_socket_nobody_listens_on_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert not notify.ready("ready")
