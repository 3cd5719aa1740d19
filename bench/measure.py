"""The measuring sequence: servers and the other tunnels up, warm-up, interleaved repetitions, restarts.

Each repetition runs, in this order, every mn -> cn system (plain, Nebula,
wireguard-go, OpenVPN, CYPHONIC) through TCP (`tcp`), ping (`rtt`), the UDP
search (`udp`), TCP at 1% loss (`loss`) and, unless --no-relay, the a1 -> b1
pairs across two NAPTs, direct and relayed, Nebula's and CYPHONIC's
(`relay`), so slow drift and other load hit every system alike. After the
repetitions the other tunnels stop and mn's daemon is restarted N times for
the signaling timers. Whatever stops the sequence, the servers and tunnels
are stopped and the log tails kept.
"""

from __future__ import annotations

from cyphonic.lab import Lab, apps
from cyphonic.lab.processes import log_tail

from . import cpu, datapaths, loss, nebula, nebula_pairs, probes, relay, rtt, tcp, udp
from .datapaths import CN, PATHS, PORT, DataPath
from .progress import Stages, log
from .stats import short


def measure(lab: Lab, mode: dict, result: dict, family: int, stages: Stages) -> None:
    servers = []
    neb = nebula.Nebula(lab)
    others = {name: mod.Tunnel(lab) for name, mod in datapaths.OTHERS.items() if mod.version()}
    neb_pairs = nebula_pairs.NebulaPairs(lab) if mode.get("relay") else None
    try:
        stages.next("iperf3 servers; Nebula, wireguard-go, OpenVPN up beside CYPHONIC")
        servers.append(apps.serve_iperf3(lab, "cn", PORT))  # every tunnel's target
        servers.append(apps.serve_iperf3(lab, "mn", PORT))  # A: cn -R to mn's global address
        result["hosts"] = lab.show()["hosts"]
        tun = result["tun"] = datapaths.tun_info(lab, "mn")
        datapaths.start_nebula(lab, neb, result)
        for name, tunnel in others.items():
            datapaths.start_other(lab, name, tunnel, result)

        length = (tun["mtu"] or 1400) - datapaths.UDP_IP_OVERHEAD[family]
        fam = (f"-{family}",)
        paths = datapaths.abc(lab, neb, others, length, family)
        result["config"].update(
            tun_mtu=tun["mtu"],
            nebula_mtu=result["nebula"]["tun"]["mtu"],
            udp_length=length,
            cyphonic_family=family,
            paths=datapaths.config(paths),
        )
        devices = [tun["name"], nebula.TUN] + [datapaths.OTHERS[name].TUN for name in others]
        tcp_run = tcp.TcpRun(lab, mode.get("outside_limit", 0), [("cn", d) for d in devices])
        rpaths: dict[str, DataPath] = {}
        if mode.get("relay"):
            servers.append(apps.serve_iperf3(lab, "b1", PORT))  # direct and relayed a1 -> b1
            rpaths = relay.data_paths(lab, fam)
            result["relay"] = relay.config(lab, rpaths)

        stages.next("warm-up")
        warm_up(lab, paths, tcp_run, result)
        repetitions(lab, mode, paths, rpaths, neb_pairs, tcp_run, fam, result["samples"]["repetitions"], stages)
        if neb_pairs:
            result["relay"]["nebula"] = {"settings": neb_pairs.net.settings() if neb_pairs.net else None}
            result["relay"]["nebula"]["starts"] = neb_pairs.starts
            neb_pairs.stop()
        revive(lab, result.setdefault("after_repetitions", {}), fam, "after the repetitions")
        if rpaths:
            result["relay"]["trs_status_at_end"] = lab.status("trs")
        result["nebula"]["underlay"] = neb.underlay_paths()
        result["nebula"]["alive_at_end"] = neb.alive()
        result["status_after_throughput"] = {h: status_extract(lab.status(h)) for h in ("mn", "cn")}
        # The restarts sample CYPHONIC alone, as before Nebula was added (a fresh
        # daemon would also announce neb0's address as one of its locators).
        neb.stop()
        for tunnel in others.values():
            tunnel.stop()
        if mode["restarts"]:
            stages.next(f"signaling timers: {mode['restarts']} restarts of mn's daemon")
        restarts(lab, mode["restarts"], result["samples"]["restarts"])
        result["status_at_end"] = {h: status_extract(lab.status(h)) for h in ("mn", "cn")}
    finally:
        neb.stop()
        if neb_pairs:
            neb_pairs.stop()
        for tunnel in others.values():
            tunnel.stop()
        for proc in servers:
            apps.stop(proc)
        # The daemons' last words, before `down` removes the logs.
        result["log_tails"] = {h: log_tail(lab.paths.log(h), 15) for h in ("mn", "cn")}
        if mode.get("relay"):
            result["log_tails"].update({h: log_tail(lab.paths.log(h), 10) for h in ("a1", "b1", "v6", "trs")})
        result["log_tails"].update({f"nebula-{h}": log_tail(neb.log(h), 5) for h in ("mn", "cn")})
        for name, tunnel in others.items():
            result["log_tails"].update({f"{name}-{h}": log_tail(tunnel.log(h), 5) for h in ("mn", "cn")})


def warm_up(lab: Lab, paths: dict[str, DataPath], tcp_run: tcp.TcpRun, result: dict) -> None:
    """One dig, and a ping and a 1 s TCP run per path: kept in the JSON, not summarized."""
    log("warm-up: one dig, ping and 1 s TCP run per path")
    result["warmup"] = {"dig": probes.dig(lab, "mn", CN)}
    for p in paths.values():
        result["warmup"][p.key] = {
            "ping": probes.ping_trial(lab, p.client, p.target, 3, 0.2, p.ping_extra),
            "tcp": tcp_run(p, 1),
        }


def repetitions(
    lab: Lab,
    mode: dict,
    paths: dict[str, DataPath],
    rpaths: dict[str, DataPath],
    neb_pairs: nebula_pairs.NebulaPairs | None,
    tcp_run: tcp.TcpRun,
    fam: tuple[str, ...],
    reps: list[dict],
    stages: Stages,
) -> None:
    """mode["reps"] interleaved repetitions of every stage, appended to `reps`."""
    udp_stage = udp.UdpStage(lab, paths, mode["udp_seconds"], mode["refine"], mode.get("udp_start", 0))
    n = mode["reps"]
    for i in range(n):
        rep: dict = {"rep": i, "tcp": {}, "rtt": {}, "udp": {}, "tcp_loss": {}}
        reps.append(rep)
        stages.next(f"repetition {i + 1}/{n}: TCP, ping, UDP, TCP at 1% loss, relayed vs direct")
        revive(lab, rep, fam, f"before repetition {i + 1}")
        if mode.get("wait_idle"):
            rep["idle_wait"] = cpu.wait_idle(mode["wait_idle"])
        log(f"repetition {i + 1}/{n}: TCP, every system")
        tcp.stage(tcp_run, paths, mode["tcp_seconds"], rep["tcp"])
        log(f"repetition {i + 1}/{n}: ping, every system")
        rtt.stage(lab, paths, rep["rtt"])
        log(f"repetition {i + 1}/{n}: UDP search, every system")
        udp_stage(rep["udp"])
        log(f"repetition {i + 1}/{n}: TCP at {loss.FRACTION:.0%} loss, every system")
        loss.stage(lab, paths, mode["tcp_seconds"], tcp_run, rep)
        if rpaths:
            log(f"repetition {i + 1}/{n}: relayed vs direct (a1 -> b1, v6 -> cn)")
            relay.stage(lab, rpaths, mode["tcp_seconds"], tcp_run, fam, rep)
        if neb_pairs:
            log(f"repetition {i + 1}/{n}: Nebula a1 -> b1, hole punched and relayed")
            neb_pairs.stage(mode["tcp_seconds"], tcp_run, rep)
        t, tl = rep["tcp"], rep["tcp_loss"]
        log(
            "  "
            + " | ".join(
                f"{k}: TCP {short(t[k].get('gbps'))} / lossy {short(tl.get(k, {}).get('gbps'))} Gbit/s, "
                f"UDP {short(rep['udp'][k].get('best_received_mbps'))} Mbit/s, "
                f"RTT {short(rep['rtt'][k].get('avg_ms'))} ms"
                for k in PATHS
                if k in t
            )
        )


def revive(lab: Lab, record: dict, fam: tuple[str, ...], when: str) -> None:
    """If a node daemon has exited, keep its log tail and restart both (clean)."""
    dead = [h for h in ("mn", "cn") if lab.procs.get(h) is not None and lab.procs[h].poll() is not None]
    if not dead:
        return
    log(f"node daemon(s) {', '.join(dead)} exited {when}: restarting (log tail kept)")
    record["daemon_exit"] = {
        h: {"status": lab.procs[h].returncode, "log_tail": log_tail(lab.paths.log(h), 25)} for h in dead
    }
    record["daemon_exit"]["restart"] = loss.restart_cyphonic(lab, CN, None, fam)


def restarts(lab: Lab, n: int, out: list[dict]) -> None:
    """n restarts of mn's daemon, each timed up to a dig of cn (signaling timers)."""
    for i in range(n):
        r = probes.restart_trial(lab, "mn", CN)
        out.append(r)
        log(
            f"restart {i + 1}/{n}: route {r.get('route_selection_ms')} ms, "
            f"tunnel {r.get('tunnel_establishment_ms')} ms, "
            f"dig {r.get('dns_first', {}).get('query_ms')} ms"
        )


def status_extract(st: dict | None) -> dict | None:
    if st is None:
        return None
    return {
        k: st.get(k) for k in ("registered", "nat", "tun", "uptime", "peers", "drops", "timers", "offload", "dataplane")
    }
