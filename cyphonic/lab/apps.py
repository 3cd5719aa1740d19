"""Stock programs run the way a user would: an HTTP server, iperf3, ping, dig.

Shared by the demo and the system tests so both drive the overlay alike.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from .errors import LabError
from .instance import Lab


def wait_listening(lab: Lab, host: str, port: int, udp: bool = False, timeout: float = 10) -> None:
    """Until something in `host` listens on `port` (TCP unless `udp`)."""
    deadline = time.monotonic() + timeout
    flags = "-Hlun" if udp else "-Hltn"
    while time.monotonic() < deadline:
        out = lab.run(host, ["ss", flags, f"sport = :{port}"], timeout=5).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise LabError(f"{host}: nothing listens on port {port} after {timeout:.0f} s")


def serve_http(lab: Lab, host: str, directory: Path, port: int = 8000) -> subprocess.Popen:
    """`python3 -m http.server` on every address of `host` (v4 and v6).

    `--bind ::` makes it a dual-stack socket; without it the server may bind
    0.0.0.0 only and a client that tries the AAAA record first would fail.
    """
    proc = lab.popen(
        host,
        [sys.executable, "-m", "http.server", "--bind", "::", "--directory", str(directory), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(lab, host, port)
    return proc


def serve_iperf3(lab: Lab, host: str, port: int = 5201) -> subprocess.Popen:
    """An iperf3 server on every address of `host`, for any number of tests."""
    proc = lab.popen(host, ["iperf3", "-s", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(lab, host, port)
    return proc


def iperf3(
    lab: Lab,
    host: str,
    target: str,
    seconds: int = 3,
    udp_rate: str | None = None,
    port: int = 5201,
    extra: tuple[str, ...] = (),
) -> dict:
    """Run an iperf3 client and return its --json report (raises on failure)."""
    cmd = ["iperf3", "-c", target, "-p", str(port), "-t", str(seconds), "--json", *extra]
    if udp_rate:
        cmd += ["-u", "-b", udp_rate]
    done = lab.run(host, cmd, timeout=seconds + 30)
    try:
        report = json.loads(done.stdout)
    except ValueError:
        raise LabError(
            f"iperf3 to {target}: exit {done.returncode}, no JSON", (done.stderr or done.stdout)[-2000:]
        ) from None
    if done.returncode != 0 or "error" in report:
        raise LabError(f"iperf3 to {target}: {report.get('error', f'exit {done.returncode}')}")
    return report


def ping_summary(output: str) -> tuple[int, int, float | None]:
    """(transmitted, received, avg rtt ms) from ping's output."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    if not m:
        return 0, 0, None
    rtt = re.search(r"= [\d.]+/([\d.]+)/", output)
    return int(m[1]), int(m[2]), float(rtt[1]) if rtt else None


def stop(proc: subprocess.Popen, timeout: float = 5) -> None:
    """Terminate a helper program and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
