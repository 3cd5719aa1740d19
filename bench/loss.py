"""1% random loss on the receiving side, one way per data path.

This kernel has no netem (DESIGN.md section 10), so:
- plain routing, Nebula, wireguard-go, OpenVPN: an nftables table of our own
  in cn's namespace, `<match> counter numgen random mod 100 < 1 counter drop`
  on the input hook (the path's `loss_match`: its outer datagrams), deleted
  afterwards; its two counters give the loss actually applied. None of the
  three asks for UDP GRO here, so the rule sees single datagrams.
- CYPHONIC: its socket asks for UDP GRO, so nft would see whole batches and
  drop bursts; instead the receiver's test hook, CYPHONIC_TEST_LOSS=<fraction> in the
  environment of cn's node daemon (cyphonic/node/packet.py). The daemon reads
  it at start, so cn's daemon is restarted with it and again without it.

`stage` is the bench's "TCP at 1% loss" step: one TCP run per path with its
loss on, and the loss actually applied recorded beside it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cyphonic.lab import Lab, LabError

from . import probes
from .datapaths import CN, MN, DataPath
from .tcp import TcpRun

FRACTION = 0.01
TABLE = "bench_loss"  # inet family, in the receiving host's namespace only
ENV = "CYPHONIC_TEST_LOSS"
REPO = Path(__file__).resolve().parent.parent


def hook_in_source() -> list[str]:
    """Files under cyphonic/ that mention the loss hook's variable (empty: hook absent)."""
    hits = []
    for path in sorted((REPO / "cyphonic").rglob("*.py")):
        try:
            if ENV in path.read_text(errors="replace"):
                hits.append(str(path.relative_to(REPO)))
        except OSError:
            continue
    return hits


class NftLoss:
    """`with NftLoss(lab, "cn", "udp dport 4242"):` drops `percent` % of matching input."""

    def __init__(self, lab: Lab, host: str, match: str, percent: int = 1) -> None:
        self.lab, self.host, self.match, self.percent = lab, host, match, percent
        self.result: dict = {"host": host, "rule": f"{match} numgen random mod 100 < {percent} drop"}

    def _nft(self, *args: str, input: str | None = None, check: bool = True):
        done = self.lab.run(self.host, ["nft", *args], input=input, timeout=10)
        if check and done.returncode != 0:
            raise LabError(f"nft {' '.join(args)} in {self.host}: {done.stderr.strip()}")
        return done

    def __enter__(self) -> NftLoss:
        self._nft("delete", "table", "inet", TABLE, check=False)  # a leftover of a crash
        self._nft(
            "-f",
            "-",
            input=(
                f"table inet {TABLE} {{\n"
                f"  chain input {{\n"
                f"    type filter hook input priority -10; policy accept;\n"
                f"    {self.match} counter numgen random mod 100 < {self.percent} counter drop\n"
                f"  }}\n"
                f"}}\n"
            ),
        )
        return self

    def __exit__(self, *exc) -> None:
        try:
            listing = json.loads(self._nft("-j", "list", "table", "inet", TABLE).stdout)
            counters = [
                e["counter"]
                for item in listing["nftables"]
                if "rule" in item
                for e in item["rule"]["expr"]
                if "counter" in e
            ]
            if len(counters) == 2:
                matched, dropped = counters
                self.result.update(
                    matched_packets=matched["packets"],
                    matched_bytes=matched["bytes"],
                    dropped_packets=dropped["packets"],
                    drop_pct=100 * dropped["packets"] / matched["packets"] if matched["packets"] else None,
                    # > MTU means the rule saw GRO/GSO aggregates, not wire packets.
                    avg_packet_bytes=matched["bytes"] / matched["packets"] if matched["packets"] else None,
                )
        except (LabError, ValueError, KeyError) as e:
            self.result["counter_error"] = str(e)
        finally:
            self._nft("delete", "table", "inet", TABLE, check=False)


def _daemon_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item)


def restart_cyphonic(
    lab: Lab, target: str, loss: float | None, ping_extra: tuple[str, ...], timeout: float = 40
) -> dict:
    """Restart cn's node daemon with (or without) the loss hook, then mn's, then re-tunnel.

    cn's daemon reads CYPHONIC_TEST_LOSS at start; `Lab.start` passes this
    process's environment (cyphonic.lab.processes.tool_env), so the variable
    is set here just around that call. mn's daemon is restarted as well: an
    mn that keeps its tunnel to the old cn daemon is not reconnected (cn drops
    its capsules as "capsule for unknown tunnel" for > 40 s, seen here).
    Then mn resolves `target` (route selection + tunnel) and pings it.
    """
    t0 = time.monotonic()
    lab.kill("mn")
    lab.kill("cn")
    saved = os.environ.pop(ENV, None)
    try:
        if loss:
            os.environ[ENV] = repr(loss)
        proc = lab.start("cn")
    finally:
        os.environ.pop(ENV, None)
        if saved is not None:
            os.environ[ENV] = saved
    lab.start("mn")
    deadline = time.monotonic() + timeout
    lab.wait_registered(["cn", "mn"], deadline)
    t_reg = time.monotonic()
    dig = probes.dig(lab, "mn", target)
    waited = probes.wait_ping(lab, "mn", target, deadline, ping_extra)
    st = lab.status("cn") or {}
    peers = (lab.status("mn") or {}).get("peers", [])
    env = _daemon_env(proc.pid)
    return {
        "loss": loss,
        "cn_pid": proc.pid,
        "env_seen_by_daemon": env.get(ENV),
        "to_registered_s": round(t_reg - t0, 3),
        "to_ping_s": round(time.monotonic() - t0, 3),
        "ping_attempts": waited,
        "dig": dig,
        "mn_peers": [{k: p.get(k) for k in ("fqdn", "path", "process", "endpoint")} for p in peers],
        "cn_drops": st.get("drops", {}),
    }


def stage(lab: Lab, paths: dict[str, DataPath], seconds: float, tcp: TcpRun, rep: dict) -> None:
    """One TCP run per path with 1% of what cn receives dropped at random.

    Fills rep["tcp_loss"][path] and rep["cyphonic_loss_switch"] (cn's restarts).
    """
    out = rep["tcp_loss"]
    switch = rep["cyphonic_loss_switch"] = {}
    for p in paths.values():
        if p.key == "cyphonic":
            continue
        with NftLoss(lab, "cn", p.loss_match) as rule:
            r = tcp(p, seconds)
        r["loss"] = rule.result
        out[p.key] = r

    p = paths["cyphonic"]
    try:
        try:
            switch["on"] = restart_cyphonic(lab, CN, FRACTION, p.ping_extra)
        except LabError as e:
            switch["on"] = {"error": str(e), "detail": getattr(e, "detail", None)}
            out["cyphonic"] = {"error": f"restart with the loss hook failed: {e}"}
        else:
            out["cyphonic"] = _hooked_run(lab, p, seconds, tcp, switch["on"])
    finally:
        # cn's daemon must lose nothing in the next repetition: restore, or stop the run.
        switch["off"] = restart_cyphonic(lab, CN, None, p.ping_extra)


def _hooked_run(lab: Lab, p: DataPath, seconds: float, tcp: TcpRun, on: dict) -> dict:
    """C's TCP run through cn's lossy daemon, with the hook's drops counted around it."""
    before = _hook_counts(lab)
    r = tcp(p, seconds)
    after = _hook_counts(lab)
    drops = after["hook_drops"] - before["hook_drops"]
    rx = (
        after["rx_packets"] - before["rx_packets"]
        if after["rx_packets"] is not None and before["rx_packets"] is not None
        else None
    )
    r["loss"] = {
        "host": "cn",
        "hook": f"{ENV}={FRACTION}",
        "env_seen_by_daemon": on.get("env_seen_by_daemon"),
        "dropped_packets": drops,
        "delivered_packets": rx,
        # cn's rx_packets for mn: what got past the hook (approximate
        # when received datagrams are coalesced)
        "drop_pct": 100 * drops / (drops + rx) if rx else None,
    }
    return r


def _hook_counts(lab: Lab) -> dict:
    st = lab.status("cn") or {}
    rx = None
    for peer in st.get("peers", []):
        if peer.get("fqdn") == MN:
            rx = peer.get("rx_packets")
    return {"hook_drops": (st.get("drops") or {}).get("test loss hook", 0), "rx_packets": rx}
