"""One measurement each: a TCP run, a UDP rate search, a ping, a daemon restart.

Every probe drives stock tools inside the lab's namespaces through the lab's
public Python API (`cyphonic.lab.Lab`, `cyphonic.lab.apps`) and returns a
plain dict of raw values, so the JSON keeps everything a reader needs to
recompute the summary. A probe that fails returns a dict with "error" rather
than raising, so one bad repetition does not throw away the rest of a run.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from collections.abc import Callable

from cyphonic.lab import Lab, LabError, apps

from .cpu import CpuMeter

# -- iperf3 ----------------------------------------------------------------------


def _trim(report: dict) -> dict:
    """What we keep of an iperf3 --json report: addresses, totals, per-second rates."""
    end = report.get("end", {})
    keep = {k: end[k] for k in ("sum_sent", "sum_received", "sum", "cpu_utilization_percent") if k in end}
    keep["connected"] = [
        {k: c.get(k) for k in ("local_host", "remote_host", "remote_port")}
        for c in report.get("start", {}).get("connected", [])
    ]
    keep["interval_bps"] = [round(i["sum"]["bits_per_second"]) for i in report.get("intervals", [])]
    return keep


def iperf3(
    lab: Lab,
    client: str,
    target: str,
    port: int,
    seconds: float,
    udp_rate: str | None = None,
    length: int | None = None,
    tries: int = 2,
    extra: tuple[str, ...] = (),
) -> dict:
    """apps.iperf3, tried again once: a failed test can leave the server busy for a moment.

    `extra`: more iperf3 options, e.g. ("-R",) (the server sends) or ("-4",).
    """
    extra = (*extra, *(("-l", str(length)) if length else ()))
    last: Exception | None = None
    for attempt in range(tries):
        try:
            return apps.iperf3(lab, client, target, seconds=seconds, udp_rate=udp_rate, port=port, extra=extra)
        except (LabError, subprocess.TimeoutExpired) as e:
            last = e
            time.sleep(1 + attempt)
    raise LabError(f"iperf3 {client} -> {target} failed {tries} times: {last}")


def peer_counters(lab: Lab, host: str, peer_fqdn: str) -> dict | None:
    st = lab.status(host) or {}
    for p in st.get("peers", []):
        if p.get("fqdn") == peer_fqdn:
            return {k: p.get(k) for k in ("tx_bytes", "rx_bytes", "tx_packets", "rx_packets", "path", "endpoint")}
    return None


def tcp_trial(
    lab: Lab,
    client: str,
    target: str,
    port: int,
    seconds: float,
    daemons: list[str],
    counters: tuple[str, str] | None = None,
    extra: tuple[str, ...] = (),
    pids_of: Callable[[str], list[int]] | None = None,
    links: list[tuple[str, str]] = (),
) -> dict:
    """One iperf3 TCP run, with the tunnel processes' CPU (and tunnel counters) around it.

    `counters` = (host, peer fqdn): read that host's per-peer byte counters
    before and after, to compare what the tunnel carried with what iperf3 sent.
    `links` = [(host, device)]: rx/tx bytes of those devices over the run
    (which tunnel devices the traffic really crossed).
    """
    meter = CpuMeter(lab, daemons, pids_of)
    before = peer_counters(lab, *counters) if counters else None
    links_before = {f"{h}/{d}": link_bytes(lab, h, d) for h, d in links}
    meter.start()
    try:
        report = iperf3(lab, client, target, port, seconds, extra=extra)
    except LabError as e:
        return {"error": str(e), "cpu": meter.stop()}
    cpu = meter.stop()
    after = peer_counters(lab, *counters) if counters else None
    links_after = {f"{h}/{d}": link_bytes(lab, h, d) for h, d in links}
    t = _trim(report)
    received = t["sum_received"]
    gbit = received["bytes"] * 8 / 1e9
    cpu_total = (
        sum(v for v in cpu["daemon_cpu_s"].values() if v is not None)
        if any(v is not None for v in cpu["daemon_cpu_s"].values())
        else None
    )
    out = {
        "gbps": received["bits_per_second"] / 1e9,
        "bytes_received": received["bytes"],
        "gbit_received": gbit,
        "retransmits": t["sum_sent"].get("retransmits"),
        "cpu": cpu,
        "daemon_cpu_s_total": cpu_total,
        "cpu_s_per_gbit": cpu_total / gbit if cpu_total is not None and gbit > 0 else None,
        "iperf3": t,
    }
    if links:
        out["link_bytes"] = {
            k: {d: links_after[k][d] - links_before[k][d] for d in ("rx", "tx")}
            if links_before.get(k) and links_after.get(k)
            else None
            for k in links_before
        }
    if before and after:
        out["tunnel_counters"] = {
            "before": before,
            "after": after,
            "tx_bytes": after["tx_bytes"] - before["tx_bytes"],
            "tx_packets": after["tx_packets"] - before["tx_packets"],
            "rx_bytes": after["rx_bytes"] - before["rx_bytes"],
        }
    return out


def udp_step(
    lab: Lab,
    client: str,
    target: str,
    port: int,
    seconds: float,
    rate_mbps: int,
    length: int,
    extra: tuple[str, ...] = (),
) -> dict:
    report = iperf3(lab, client, target, port, seconds, udp_rate=f"{rate_mbps}M", length=length, extra=extra)
    t = _trim(report)
    # sum_received is the server's view: what came out of the far end.
    got = t.get("sum_received") or t["sum"]
    return {
        "rate_mbps": rate_mbps,
        "sent_mbps": t["sum_sent"]["bits_per_second"] / 1e6 if "sum_sent" in t else None,
        "received_mbps": got["bits_per_second"] / 1e6,
        "lost_percent": got["lost_percent"],
        "packets": got["packets"],
        "lost_packets": got["lost_packets"],
        "connected": t["connected"],
    }


def udp_search(
    lab: Lab,
    client: str,
    target: str,
    port: int,
    seconds: float,
    length: int,
    start_mbps: int,
    max_mbps: int,
    refine: int,
    loss_limit: float = 1.0,
    min_mbps: int = 10,
    settle: float = 0.5,
    extra: tuple[str, ...] = (),
) -> dict:
    """The highest offered rate (-b) with at most `loss_limit` % loss.

    Bracket by doubling (or halving) from `start_mbps`, then `refine` steps of
    geometric bisection between the best passing and the lowest failing rate.
    The result is within a factor 2**(1/2**refine) of the true threshold.
    """
    steps: list[dict] = []
    good: dict | None = None
    bad_rate: int | None = None

    def trial(rate: int) -> bool:
        nonlocal good, bad_rate
        if steps:
            time.sleep(settle)  # let queues left by an overloaded step drain
        step = udp_step(lab, client, target, port, seconds, rate, length, extra)
        step["pass"] = step["lost_percent"] <= loss_limit
        steps.append(step)
        if step["pass"]:
            if good is None or rate > good["rate_mbps"]:
                good = step
        elif bad_rate is None or rate < bad_rate:
            bad_rate = rate
        return step["pass"]

    sender_limited = False
    try:
        rate = start_mbps
        while True:
            if trial(rate):
                sent = steps[-1]["sent_mbps"]
                if sent is not None and sent < 0.9 * rate:
                    # iperf3 itself cannot send faster: higher -b only repeats this step.
                    sender_limited = True
                    break
                if bad_rate is not None or rate >= max_mbps:
                    break
                rate = min(rate * 2, max_mbps)
            else:
                if good is not None or rate <= min_mbps:
                    break
                rate = max(rate // 2, min_mbps)
        for _ in range(refine):
            if good is None or bad_rate is None:
                break
            mid = round(math.sqrt(good["rate_mbps"] * bad_rate))
            if mid in (good["rate_mbps"], bad_rate):
                break
            trial(mid)
            sent = steps[-1]["sent_mbps"]
            if steps[-1]["pass"] and sent is not None and sent < 0.9 * mid:
                sender_limited = True
                break
    except LabError as e:
        return {"error": str(e), "steps": steps}
    return {
        "max_rate_mbps": good["rate_mbps"] if good else None,
        "received_mbps": good["received_mbps"] if good else None,
        # iperf3 may not manage to send the offered rate (the plain path, most of
        # all): the best received rate among passing steps is the figure to compare.
        "best_received_mbps": max((s["received_mbps"] for s in steps if s["pass"]), default=None),
        "lost_percent": good["lost_percent"] if good else None,
        "lowest_failing_mbps": bad_rate,
        "capped": good is not None and bad_rate is None and not sender_limited,
        "sender_limited": sender_limited,
        "steps": steps,
    }


# -- ping ------------------------------------------------------------------------

_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")
_TARGET = re.compile(r"^PING \S+ ?\(([^)]+)\)", re.M)


def ping_trial(lab: Lab, client: str, target: str, count: int, interval: float, extra: tuple[str, ...] = ()) -> dict:
    try:
        done = lab.run(
            client, ["ping", *extra, "-q", "-c", str(count), "-i", str(interval), target], timeout=count * interval + 20
        )
    except subprocess.TimeoutExpired:
        return {"error": "ping timed out"}
    sent, received, _ = apps.ping_summary(done.stdout)
    m = _RTT.search(done.stdout)
    address = _TARGET.search(done.stdout)
    out = {"sent": sent, "received": received, "address": address[1] if address else None}
    if m:
        out.update(min_ms=float(m[1]), avg_ms=float(m[2]), max_ms=float(m[3]), mdev_ms=float(m[4]))
    else:
        out["error"] = (done.stderr or done.stdout).strip()[-500:] or f"exit {done.returncode}"
    return out


def wait_ping(lab: Lab, client: str, target: str, deadline: float, extra: tuple[str, ...] = ()) -> int:
    """Ping once a second until one answer; returns the attempts, LabError at `deadline`."""
    attempts = 0
    while True:
        attempts += 1
        done = lab.run(client, ["ping", *extra, "-c", "1", "-W", "1", target], timeout=10)
        if done.returncode == 0:
            return attempts
        if time.monotonic() > deadline:
            raise LabError(f"{client} cannot ping {target} ({attempts} attempts)", (done.stderr or done.stdout)[-500:])
        time.sleep(0.1)


def link_bytes(lab: Lab, host: str, device: str) -> dict | None:
    """rx/tx byte counters of a device in a host's namespace; None if it does not exist."""
    done = lab.run(host, ["ip", "-j", "-s", "link", "show", "dev", device], timeout=10)
    if done.returncode != 0:
        return None
    try:
        stats = json.loads(done.stdout)[0]["stats64"]
        return {"rx": stats["rx"]["bytes"], "tx": stats["tx"]["bytes"]}
    except (ValueError, KeyError, IndexError):
        return None


# -- restart: route selection and tunnel establishment -------------------------------

_QUERY_TIME = re.compile(r"Query time: (\d+) msec")
_STATUS = re.compile(r"status: (\w+)")


def dig(lab: Lab, host: str, name: str) -> dict:
    done = lab.run(host, ["dig", "+tries=1", "+time=10", name], timeout=20)
    q = _QUERY_TIME.search(done.stdout)
    s = _STATUS.search(done.stdout)
    answers = re.findall(rf"^{re.escape(name)}\.\s+\d+\s+IN\s+\w+\s+(\S+)", done.stdout, re.M)
    return {"query_ms": int(q[1]) if q else None, "rcode": s[1] if s else None, "answers": answers}


def restart_trial(lab: Lab, host: str, target: str, timeout: float = 30) -> dict:
    """Restart `host`'s node daemon, wait for registration, resolve `target`.

    The first query makes the fresh daemon select a route and set up a
    tunnel; its timers then hold exactly that one route selection and tunnel.
    """
    t0 = time.monotonic()
    lab.kill(host)
    t1 = time.monotonic()
    lab.start(host)
    try:
        lab.wait_registered([host], time.monotonic() + timeout)
    except LabError as e:
        return {"error": str(e), "stop_s": t1 - t0}
    t2 = time.monotonic()
    first = dig(lab, host, target)
    second = dig(lab, host, target)
    st = lab.status(host) or {}
    timers = st.get("timers", {})
    return {
        "stop_s": t1 - t0,
        "start_to_registered_s": t2 - t1,
        "dns_first": first,
        "dns_second": second,
        "route_selection_ms": timers.get("route_selection_ms", []),
        "tunnel_establishment_ms": timers.get("tunnel_establishment_ms", []),
        "paths": [p.get("process") for p in st.get("peers", [])],
        "drops": st.get("drops", {}),
    }
