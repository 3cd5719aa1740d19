"""A file fetched over the overlay arrives intact, and the wire shows only ciphertext."""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections import Counter

import pytest

from cyphonic.lab import Lab, apps, pcap

pytestmark = pytest.mark.system

CN = "cn.cyphonic.test"
SIZE = 1 << 20


def _file_with_marker(marker: bytes) -> bytes:
    # The marker every 64 KiB lands in many TCP segments; random filler cannot
    # contain it by chance, so finding it in a capture means plaintext leaked.
    chunks = []
    while sum(map(len, chunks)) < SIZE:
        chunks += [marker, os.urandom(65536 - len(marker))]
    return b"".join(chunks)[:SIZE]


def _start_capture(lab: Lab, path) -> subprocess.Popen:
    # --immediate-mode: without it packets wait in a kernel block for up to
    # 1 s, and the last block is lost when we stop tcpdump. -U: write each
    # packet at once. -B: 16 MB buffer, so a burst is not dropped. -Z root:
    # keep write access to the state dir.
    cap = lab.popen("mn", ["tcpdump", "-i", "eth0", "-n", "-s", "0", "--immediate-mode", "-U",
                           "-B", "16384", "-Z", "root", "-w", str(path)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in cap.stderr:  # "listening on eth0, ..." once the capture runs
        if "listening on" in line:
            return cap
    raise AssertionError(f"tcpdump did not start (exit {cap.wait()})")


def test_curl_gets_identical_bytes_and_the_underlay_carries_only_udp(lab: Lab) -> None:
    marker = f"CYPHONIC-PLAINTEXT-MARKER-{uuid.uuid4().hex}".encode()
    data = _file_with_marker(marker)
    www = lab.paths.root / "www-test"
    www.mkdir(exist_ok=True)
    (www / "secret.bin").write_bytes(data)
    capture_file = lab.paths.root / "mn-eth0.pcap"

    server = apps.serve_http(lab, "cn", www, port=8080)
    try:
        # Resolve and route first, so the capture holds the data transfer.
        assert lab.run("mn", ["dig", "+short", CN, "A"]).stdout.strip()
        cap = _start_capture(lab, capture_file)
        try:
            got = lab.run("mn", ["curl", "-sS", "--fail", "--max-time", "30",
                                 f"http://{CN}:8080/secret.bin"], text=False, timeout=40)
        finally:
            cap.send_signal(signal.SIGINT)
            cap.wait(timeout=10)
    finally:
        apps.stop(server)

    assert got.returncode == 0, got.stderr.decode(errors="replace")
    assert got.stdout == data

    raw = capture_file.read_bytes()
    assert marker not in raw, "the marker crossed mn's underlay in clear"
    packets = [p for p in pcap.read(capture_file) if not p.link_local_control]
    kinds = Counter(p.kind for p in packets)
    assert set(kinds) == {"udp"}, f"non-UDP packets on mn's underlay: {dict(kinds)}"
    # All of the file went through this interface, inside UDP.
    assert sum(len(p.frame) for p in packets) > SIZE
