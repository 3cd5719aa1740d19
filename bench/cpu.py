"""CPU accounting: the tunnel processes' CPU over a run, and load from outside the lab.

A tunnel TCP run on this 2-vCPU machine is CPU-bound, so the bench counts
the CPU seconds of the tunnel processes it measures (`CpuMeter`, from
/proc/<pid>/stat), the whole machine's busy share, and what processes
outside the lab's namespaces took meanwhile (`OutsideMeter`); before a run
it can wait for an idle machine (`wait_idle`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from cyphonic.lab import Lab

from .progress import log

CLK_TCK = os.sysconf("SC_CLK_TCK")


def daemon_pids(ns: str, module: str = "cyphonic.node") -> list[int]:
    """Pids in namespace `ns` whose command line runs `module` (the node daemon)."""
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10).stdout
    pids = []
    for word in out.split():
        try:
            cmdline = Path(f"/proc/{word}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone since `ip netns pids` listed it
        if module.encode() in cmdline:
            pids.append(int(word))
    return pids


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def host_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def process_cpu() -> dict[int, tuple[float, int, str, int | None, bool]]:
    """Every process: (cpu seconds, start time in jiffies since boot, comm, net ns inode,
    kernel thread). Processes that vanish while being read are left out."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
            kthread = bool(int(fields[6]) & 0x00200000)  # PF_KTHREAD
            ns = None if kthread else _netns_inode(f"/proc/{name}/ns/net")
            out[int(name)] = (cpu, int(fields[19]), comm, ns, kthread)
        except (OSError, ValueError, IndexError):
            continue
    return out


def _uptime_jiffies() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * CLK_TCK)


class OutsideMeter:
    """CPU used during a run by processes outside the lab (other labs, test runs, builds).

    On this 2-vCPU machine a tunnel TCP run is CPU-bound: whatever else runs
    takes its share from the tunnel processes (a test suite of another session
    took ~0.9 core and cut CYPHONIC's TCP from ~1.3 to ~0.8 Gbit/s). Counted:
    user processes not in one of the lab's network namespaces and not this
    bench process, alive at both ends of the run or started during it (whole
    CPU then); processes that started and ended within the run are missed.
    Kernel threads (ksoftirqd, kworkers: partly the lab's own packet work)
    are summed separately.
    """

    def __init__(self, lab_namespaces: list[str]) -> None:
        self.lab_ns = {i for i in (_netns_inode(f"/run/netns/{n}") for n in lab_namespaces) if i is not None}
        self.before: dict = {}
        self.t0_jiffies = 0

    def start(self) -> None:
        self.before = process_cpu()
        self.t0_jiffies = _uptime_jiffies()

    def stop(self) -> dict:
        after = process_cpu()
        me = os.getpid()
        outside: list[tuple[float, str, int]] = []
        kernel = 0.0
        for pid, (cpu, started, comm, ns, kthread) in after.items():
            prev = self.before.get(pid)
            if prev is not None and prev[1] == started:
                delta = cpu - prev[0]
            elif started >= self.t0_jiffies - CLK_TCK:
                delta = cpu  # started during the run
            else:
                continue
            if delta <= 0:
                continue
            if kthread:
                kernel += delta
            elif pid != me and ns not in self.lab_ns:
                outside.append((delta, comm, pid))
        outside.sort(reverse=True)
        return {
            "outside_cpu_s": round(sum(d for d, _, _ in outside), 3),
            "outside_top": [{"comm": c, "pid": p, "cpu_s": round(d, 3)} for d, c, p in outside[:5]],
            "kernel_threads_cpu_s": round(kernel, 3),
        }


class CpuMeter:
    """CPU seconds used by the tunnel processes of some hosts between start() and stop().

    `pids_of(host)` names them; by default the host's CYPHONIC node daemon.
    """

    def __init__(self, lab: Lab, hosts: list[str], pids_of: Callable[[str], list[int]] | None = None) -> None:
        self.lab = lab
        self.hosts = hosts
        self.pids_of = pids_of or (lambda host: daemon_pids(lab.ns(host)))
        self.pids: dict[str, list[int]] = {}
        self.before: dict[int, float] = {}
        self.host_before = (0, 0)
        self.t0 = 0.0
        self.outside = OutsideMeter([lab.ns(h.name) for h in lab.topology.hosts])

    def start(self) -> None:
        self.pids = {h: self.pids_of(h) for h in self.hosts}
        self.before = {p: cpu_seconds(p) for ps in self.pids.values() for p in ps}
        self.outside.start()
        self.host_before = host_cpu()
        self.t0 = time.monotonic()

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        busy, total = host_cpu()
        outside = self.outside.stop()
        per_host: dict[str, float | None] = {}
        for host, pids in self.pids.items():
            try:
                per_host[host] = sum(cpu_seconds(p) - self.before[p] for p in pids) if pids else None
            except (OSError, ValueError):
                per_host[host] = None  # the daemon exited during the run
        d_busy, d_total = busy - self.host_before[0], total - self.host_before[1]
        return {
            "wall_s": wall,
            "pids": self.pids,
            "daemon_cpu_s": per_host,
            "host_cpu_busy_pct": 100 * d_busy / d_total if d_total else None,
            "host_cpus": os.cpu_count(),
            **outside,
            "outside_cpu_pct": round(100 * outside["outside_cpu_s"] / wall, 1) if wall else None,
        }


def wait_idle(limit: float, threshold: float = 15.0, window: float = 3.0) -> dict:
    """Wait until the whole machine is < `threshold` % busy over `window` s, up to `limit` s."""
    t0 = time.monotonic()
    while True:
        b0, n0 = host_cpu()
        time.sleep(window)
        b1, n1 = host_cpu()
        busy = 100 * (b1 - b0) / (n1 - n0) if n1 > n0 else 0.0
        waited = time.monotonic() - t0
        if busy < threshold or waited >= limit:
            if busy >= threshold:
                log(f"machine still {busy:.0f}% busy after {waited:.0f} s; measuring anyway")
            return {"waited_s": round(waited, 1), "busy_pct": round(busy, 1), "idle": busy < threshold}
        log(f"machine {busy:.0f}% busy (other labs?); waiting")
