"""The control socket against hostile local clients, and who may read it.

Real abstract Unix sockets, one unique name per test. A client that breaks
the rules is a counted drop; the daemon keeps answering proper clients.
"""

from __future__ import annotations

import grp
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from cyphonic import config, control
from cyphonic.node.settings import SCHEMA as NODE_SCHEMA

# big enough that sending it blocks on a client that does not read
STATUS = {"role": "test", "padding": "x" * 1_000_000}
SMALL = {"role": "test"}
NOBODY = 65534
REQUEST = b'{"command": "status"}\n'

_names = itertools.count()


def unique_name() -> str:
    return f"test-{os.getpid()}-{next(_names)}"


async def start(nursery: trio.Nursery, reply: dict = STATUS, group: str | None = None):
    """A daemon-like control socket in the test's nursery: (name, drops)."""
    name = unique_name()
    drops = await nursery.start(control.serve, name, lambda _request: reply, group)
    return name, drops


async def query(name: str) -> dict:
    return await trio.to_thread.run_sync(control.query, name, {"command": "status"})


async def connect(name: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.connect(control.address(name))
    return sock


async def read_reply(sock: trio.socket.SocketType) -> dict:
    data = b""
    with trio.fail_after(3):
        while chunk := await sock.recv(65536):
            data += chunk
    return json.loads(data)


# --- hostile clients: each returns the drop reasons the server must count


async def connects_and_closes_at_once(name: str) -> set[str]:
    (await connect(name)).close()
    return {"client gone"}


async def sends_a_request_and_closes(name: str) -> set[str]:
    with await connect(name) as sock:
        await sock.send(REQUEST)
    return {"client gone"}


async def sends_half_a_line_and_closes(name: str) -> set[str]:
    with await connect(name) as sock:
        await sock.send(b'{"comm')
    return {"bad request", "client gone"}


async def never_reads_the_answer(name: str) -> set[str]:
    with await connect(name) as sock:
        await sock.send(REQUEST)
        await wait_all_tasks_blocked(0.05)  # the server is stuck sending
    return {"client gone"}


async def sends_a_megabyte_of_junk(name: str) -> set[str]:
    with await connect(name) as sock:
        junk = b"\xff" * 1_000_000
        try:
            while junk:
                junk = junk[await sock.send(junk):]
        except OSError:  # the server read its fill, answered and closed
            pass
    return {"bad request"}


def sends_a_bad_line(line: bytes, error: str):
    async def client(name: str) -> set[str]:
        with await connect(name) as sock:
            await sock.send(line)
            reply = await read_reply(sock)
        assert reply["error"].startswith(f"bad request: {error}"), reply
        return {"bad request"}

    return client


async def holds_the_connection_silently(name: str) -> set[str]:
    with await connect(name) as sock:
        with trio.fail_after(control.TIMEOUT + 1):
            assert await sock.recv(1) == b""
    return {"timeout"}


HOSTILE = {
    "connects and closes at once": connects_and_closes_at_once,
    "sends a request and closes": sends_a_request_and_closes,
    "sends half a line and closes": sends_half_a_line_and_closes,
    "never reads the answer": never_reads_the_answer,
    "sends a megabyte of junk": sends_a_megabyte_of_junk,
    "sends invalid UTF-8": sends_a_bad_line(b"\xff\xfe{}\n", "'utf-8' codec"),
    "sends invalid JSON": sends_a_bad_line(b"{status\n", "Expecting"),
    "sends a JSON list": sends_a_bad_line(b"[1, 2]\n", "request must be an object"),
    "sends deeply nested JSON": sends_a_bad_line(b"[" * 3000 + b"\n", "maximum recursion depth"),
    "holds the connection silently": holds_the_connection_silently,
}


@pytest.mark.parametrize("client", HOSTILE.values(), ids=HOSTILE.keys())
async def test_control_socket_survives_a_hostile_client_and_still_answers(nursery, client) -> None:
    name, drops = await start(nursery)
    reasons = await client(name)
    await wait_all_tasks_blocked(0.05)  # the server is done with it (or crashed)
    assert await query(name) == STATUS
    assert reasons <= set(drops.counts), drops.counts


async def test_control_socket_closes_connections_beyond_its_limit_at_once(nursery) -> None:
    name, drops = await start(nursery)
    held = [await connect(name) for _ in range(control.MAX_CLIENTS)]
    await wait_all_tasks_blocked(0.05)  # each one waits for its request
    extra = [await connect(name) for _ in range(8)]
    with trio.fail_after(control.TIMEOUT / 2):
        for sock in extra:
            assert await sock.recv(1) == b""
    assert drops.counts["too many clients"] == 8
    for sock in held + extra:
        sock.close()
    await wait_all_tasks_blocked(0.05)
    assert await query(name) == STATUS


# --- who may read the status


def require_root() -> None:
    """Skip (or fail, in CI) unless we can run a client as another user."""
    if os.geteuid() == 0:
        return
    reason = "needs root (runs a client as another user)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; in CI a skipped test is a failure", pytrace=False)
    pytest.skip(reason)


# stdlib only: the child may not read anything but the interpreter
CLIENT = """
import socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
    s.connect("\\0" + sys.argv[1])
    s.sendall(b'{"command": "status"}\\n')
    data = b""
    while chunk := s.recv(65536):
        data += chunk
sys.stdout.write(data.decode())
"""


async def query_as(name: str, uid: int, gid: int, extra_groups: list[int] | None = None) -> dict:
    done = await trio.run_process(
        [sys.executable, "-I", "-S", "-c", CLIENT, control.address(name)[1:]],
        user=uid, group=gid, extra_groups=extra_groups or [], capture_stdout=True, cwd="/",
    )
    return json.loads(done.stdout)


def some_group() -> grp.struct_group:
    return next(g for g in grp.getgrall() if g.gr_gid not in (0, NOBODY))


async def test_control_socket_refuses_another_user(nursery) -> None:
    require_root()
    name, drops = await start(nursery, SMALL)
    reply = await query_as(name, NOBODY, NOBODY)
    assert reply["error"].startswith("permission denied: uid 65534"), reply
    assert drops.counts["permission denied"] == 1


async def test_control_socket_refuses_a_user_outside_control_group(nursery) -> None:
    require_root()
    group = some_group()
    name, drops = await start(nursery, SMALL, group.gr_name)
    reply = await query_as(name, NOBODY, NOBODY, [NOBODY])
    assert reply["error"].startswith("permission denied"), reply
    assert group.gr_name in reply["error"]


async def test_control_socket_serves_a_supplementary_member_of_control_group(nursery) -> None:
    require_root()
    group = some_group()
    name, drops = await start(nursery, SMALL, group.gr_name)
    assert await query_as(name, NOBODY, NOBODY, [group.gr_gid]) == SMALL
    assert not drops.counts


async def test_control_socket_serves_a_numeric_control_group_as_primary_group(nursery) -> None:
    require_root()
    name, drops = await start(nursery, SMALL, "4242")
    assert await query_as(name, NOBODY, 4242) == SMALL
    assert not drops.counts


async def test_control_socket_serves_root(nursery) -> None:
    require_root()
    name, drops = await start(nursery, SMALL, some_group().gr_name)
    assert await query(name) == SMALL
    assert not drops.counts


async def test_status_cli_prints_a_refusal_on_one_line_and_exits_1(nursery) -> None:
    require_root()
    name, _drops = await start(nursery, SMALL)
    done = await trio.run_process(
        [sys.executable, "-m", "cyphonic.cli", "status", "--daemon", name],
        user=NOBODY, group=NOBODY, extra_groups=[], capture_stdout=True, capture_stderr=True,
        check=False, cwd="/",
    )
    assert done.returncode == 1
    assert done.stdout == b""
    [line] = done.stderr.decode().splitlines()
    assert line.startswith(f"cyphonic status: {name}: permission denied: uid 65534"), line


# --- the control_group key

BAD_GROUP = "cyphonic-no-such-group"
CONFIGS = {
    "cyphonic.node": 'certificate = "a"\nkey = "b"\nca = "c"\nauth = ["127.0.0.1:1"]\nnms = ["127.0.0.1:1"]\n',
    "cyphonic.trs": 'public = ["127.0.0.1:1"]\nnms_key = "a"\n',
    "cyphonic.cloud": 'domain = "x.test"\n',
}
CLOUD_SECTIONS = '[auth]\ncertificate = "a"\nkey = "b"\nnms_key = "c"\ndatabase = "d"\n[nms]\nnms_key = "c"\n'


@pytest.mark.parametrize("program", CONFIGS)
def test_unknown_control_group_stops_the_daemon_with_one_line(tmp_path: Path, program: str) -> None:
    text = CONFIGS[program] + f'control_group = "{BAD_GROUP}"\n'
    if program == "cyphonic.cloud":
        text += CLOUD_SECTIONS
    (tmp_path / "bad.toml").write_text(text)
    done = subprocess.run([sys.executable, "-m", program, "--config", str(tmp_path / "bad.toml")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == f"{program}: config error: control_group: no such group '{BAD_GROUP}'\n"


def test_control_group_may_be_a_numeric_gid(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(CONFIGS["cyphonic.node"] + 'control_group = "4242"\n')
    assert config.load(tmp_path / "node.toml", NODE_SCHEMA)["control_group"] == "4242"
