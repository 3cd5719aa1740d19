"""Notes under the tables: what a reader should know to trust (or distrust) the figures."""

from __future__ import annotations

from . import loss, nebula
from .datapaths import PATHS
from .stats import dig, short
from .summary import RELAY_KEYS
from .tcp import OUTSIDE_LIMIT_PCT


def notes(result: dict) -> list[str]:
    """Things a reader should know to trust (or distrust) the table."""
    return [
        line
        for group in (
            _environment,
            _outside_load,
            _setup,
            _loss,
            _tunnels_apart,
            _udp,
            _daemon_exits,
            _relay,
            _failures,
            _signaling,
        )
        for line in group(result)
    ]


def _environment(result: dict) -> list[str]:
    """The code measured, the loss variable, the machine's load and other labs."""
    out = []
    env = result["environment"]
    if env["dirty_cyphonic"]:
        out.append("Measured the working tree, not exactly the commit: " + ", ".join(env["dirty_cyphonic"]))
    if env.get("inherited_loss_env"):
        out.append(
            f"{loss.ENV}={env['inherited_loss_env']} was set in the bench's environment; "
            "removed so that only the lossy cn daemon gets it."
        )
    idle = result.get("idle_wait")
    if idle and not idle["idle"]:
        out.append(f"The machine was {idle['busy_pct']}% busy at the start (waited {idle['waited_s']} s).")
    others = sorted(set(env.get("other_namespaces") or []) | set(env.get("other_namespaces_end") or []))
    if others:
        out.append(
            f"{len(others)} namespaces of other labs existed at the start or end of the run "
            "(they share the CPUs): " + " ".join(others[:12])
        )
    return out


def _outside_load(result: dict) -> list[str]:
    """TCP runs redone, or kept although processes outside the lab took CPU."""
    out = []
    reps = result["samples"]["repetitions"]
    busy = []
    retried = []
    limit = result["config"].get("outside_limit_pct")
    for r in reps:
        for section in ("tcp", "tcp_loss"):
            for k, v in (r.get(section) or {}).items():
                if not isinstance(v, dict):
                    continue
                pct = dig(v, "cpu", "outside_cpu_pct")
                if pct is not None and pct > (limit or OUTSIDE_LIMIT_PCT):
                    top = ", ".join(t["comm"] for t in v["cpu"]["outside_top"][:3])
                    busy.append(f"rep {r['rep']} {section} {k} {pct:.0f}% ({top})")
                if v.get("discarded_busy"):
                    retried.append(
                        f"rep {r['rep']} {section} {k} "
                        + "/".join(
                            f"{short(d.get('gbps'))} Gbit/s at {d['outside_cpu_pct']:.0f}%" for d in v["discarded_busy"]
                        )
                    )
    if retried:
        out.append(
            "TCP runs measured again because processes outside the lab took more than "
            f"{short(limit)}% of a core (discarded figures): " + "; ".join(retried)
        )
    if busy:
        out.append(
            "WARNING: in these kept TCP runs processes outside the lab used CPU (% of a "
            "core; the tunnel processes lose about that share): " + "; ".join(busy)
        )
    return out


def _setup(result: dict) -> list[str]:
    """The TUN's offloads and MTU, and Nebula's settings."""
    out = []
    tun = result.get("tun") or {}
    if tun.get("vnet_hdr") == "off":
        out.append(
            f"TUN {tun.get('name')} has vnet_hdr off: no GSO/TSO offloads (DESIGN.md section 10), one read per packet."
        )
    elif tun.get("vnet_hdr") == "on":
        out.append(f"TUN {tun.get('name')} has vnet_hdr on (offloads).")
    cfg = result["config"]
    if cfg.get("nebula_mtu") and cfg.get("tun_mtu") and cfg["nebula_mtu"] != cfg["tun_mtu"]:
        out.append(f"MTUs differ: {tun.get('name')} {cfg['tun_mtu']}, Nebula {cfg['nebula_mtu']}.")
    neb = result.get("nebula") or {}
    if neb.get("settings"):
        st = neb["settings"]
        out.append(
            f"Nebula {st['version']}: tun.mtu {st['mtu']} (Nebula's default is 1300; set to "
            f"match cyph0), listen.read_buffer/write_buffer {st['read_buffer'] >> 20} MiB "
            "(as the CYPHONIC node's sockets; the kernel default overflows), cipher "
            "aes (default), underlay used between mn and cn: "
            + (", ".join(sorted(set(neb.get("underlay") or []))) or "not seen in the logs")
        )
    return out


def _loss(result: dict) -> list[str]:
    """Whether the 1% loss was really applied, per path."""
    out = []
    env = result["environment"]
    reps = result["samples"]["repetitions"]
    if not env.get("loss_hook_files"):
        out.append(
            f"The loss hook was ABSENT: nothing under cyphonic/ mentions {loss.ENV}. cn's "
            "daemon was restarted with it anyway; 'C at 1% loss' ran without loss."
        )
    applied = {p: [dig(r, "tcp_loss", p, "loss", "drop_pct") for r in reps] for p in PATHS}
    out.append(
        "Loss actually applied during the lossy TCP runs (% of what cn received): "
        + "; ".join(f"{p} " + ", ".join(short(x) for x in v) for p, v in applied.items())
    )
    if any(dig(r, "tcp_loss", "cyphonic", "loss", "dropped_packets") == 0 for r in reps):
        out.append(
            "WARNING: cn's daemon counted no 'test loss hook' drops in some lossy CYPHONIC run: the hook did not act."
        )
    ons = [dig(r, "cyphonic_loss_switch", "on") for r in reps]
    if any(on and "error" not in on and on.get("env_seen_by_daemon") is None for on in ons):
        out.append(f"WARNING: cn's lossy daemon did not have {loss.ENV} in its environment in some repetition.")
    big = [dig(r, "tcp_loss", "plain", "loss", "avg_packet_bytes") for r in reps]
    if any(b and b > 2000 for b in big):
        out.append(
            "Plain routing at 1% loss: the nft rule sees GRO/GSO aggregates (avg "
            + ", ".join(short(b) for b in big)
            + " bytes per packet), so it drops 1% of "
            "aggregates, bursts of wire segments. A reference figure only."
        )
    return out


def _tunnels_apart(result: dict) -> list[str]:
    """Neither tunnel ran inside the other: device counters, iperf3's peer, mn's endpoint to cn."""
    out = []
    reps = result["samples"]["repetitions"]
    tun = result.get("tun") or {}
    cfg = result["config"]
    # Crosstalk: traffic of one tunnel must not cross the other's device.
    for p, other in (("nebula", tun.get("name") or "cyph0"), ("cyphonic", nebula.TUN)):
        moved = [dig(r, "tcp", p, "link_bytes", f"cn/{other}", "rx") for r in reps]
        if any(m and m > 1_000_000 for m in moved):
            out.append(
                f"WARNING: during {p} TCP runs cn's {other} received {moved} bytes: one tunnel ran inside the other."
            )
    fams = sorted({c["remote_host"] for r in reps for c in dig(r, "tcp", "cyphonic", "iperf3", "connected") or []})
    if fams:
        out.append(
            f"CYPHONIC iperf3 connected to {', '.join(fams)} (name resolved by the "
            f"node's resolver, iperf3 -{cfg.get('cyphonic_family')})."
        )
        cn = (result.get("hosts") or {}).get("cn") or {}
        wrong = [a for a in fams if a not in (cn.get("vip4"), cn.get("vip6"))]
        if wrong:
            out.append(
                f"WARNING: CYPHONIC iperf3 reached {wrong}, not cn's virtual addresses "
                f"({cn.get('vip4')}, {cn.get('vip6')})."
            )
    endpoints = sorted(
        {
            pp.get("endpoint") or "?"
            for r in reps
            for w in ("on", "off")
            for pp in dig(r, "cyphonic_loss_switch", w, "mn_peers") or []
        }
    )
    if endpoints:
        out.append(
            "After each restart for the loss hook, mn's tunnel to cn used the endpoint(s) "
            + ", ".join(endpoints)
            + (" - WARNING: a Nebula address" if any(e.startswith(nebula.SUBNET + ".") for e in endpoints) else "")
        )
    return out


def _udp(result: dict) -> list[str]:
    """UDP searches that hit their cap or iperf3's own sending limit."""
    out = []
    reps = result["samples"]["repetitions"]
    for key in PATHS:
        if any(dig(r, "udp", key, "capped") for r in reps):
            out.append(f"UDP {key}: the search hit its cap without loss in some repetition; the true limit is higher.")
        limited = [r["rep"] for r in reps if dig(r, "udp", key, "sender_limited")]
        if limited:
            out.append(
                f"UDP {key}: iperf3 could not send the offered rate in repetition(s) "
                f"{limited} (< 90% of -b): there the figure is iperf3's own ceiling, "
                "not the path's."
            )
    return out


def _daemon_exits(result: dict) -> list[str]:
    """Node daemons that had exited and were restarted."""
    out = []
    reps = result["samples"]["repetitions"]
    exits = [(r["rep"], sorted(k for k in r["daemon_exit"] if k != "restart")) for r in reps if r.get("daemon_exit")]
    if (result.get("after_repetitions") or {}).get("daemon_exit"):
        exits.append(("end", sorted(k for k in result["after_repetitions"]["daemon_exit"] if k != "restart")))
    if exits:
        out.append(
            "WARNING: node daemon(s) had exited and were restarted (before repetition / "
            "hosts): " + "; ".join(f"{r} {h}" for r, h in exits) + ". Their log tails are in the JSON (daemon_exit)."
        )
    return out


def _relay(result: dict) -> list[str]:
    """The relay part: MTUs, fragmentation, the paths checked."""
    out = []
    reps = result["samples"]["repetitions"]
    rel = result.get("relay") or {}
    if rel:
        out.append(
            "Relay: TUN MTUs "
            + ", ".join(f"{h} {m}" for h, m in (rel.get("tun_mtu") or {}).items())
            + "; a1/b1 daemons restarted once per repetition with hole_punching "
            "flipped (order alternates)."
        )
        frag = [
            f"rep {r['rep']} {k}: {dig(r, 'relay', k, 'fragmentation')}"
            for r in reps
            for k in RELAY_KEYS
            if dig(r, "relay", k, "fragmentation")
        ]
        if frag:
            out.append(
                "WARNING: IP fragmentation/reassembly during relay-phase TCP runs "
                "(the outer datagrams exceed a link MTU): " + "; ".join(frag)
            )
        else:
            out.append("No IP fragmentation counted (a1, b1, v6, cn, trs, inet) during the relay-phase TCP runs.")
        eps = sorted(
            {
                f"{k} {dig(r, 'relay', k, 'path_check', 'path')} {dig(r, 'relay', k, 'path_check', 'endpoint')}"
                for r in reps
                for k in RELAY_KEYS
                if dig(r, "relay", k, "path_check")
            }
        )
        out.append("Relay-phase paths checked before each run (pair, path, endpoint): " + "; ".join(eps))
    return out


def _failures(result: dict) -> list[str]:
    """Samples that failed, left out of the summary."""
    out = []
    reps = result["samples"]["repetitions"]
    errors = []
    for r in reps:
        for k in RELAY_KEYS:
            for sec in ("", "tcp", "rtt"):
                v = dig(r, "relay", k, sec) if sec else dig(r, "relay", k)
                if isinstance(v, dict) and "error" in v:
                    errors.append(f"rep {r['rep']} relay {k} {sec}: {v['error']}")
        if isinstance(dig(r, "relay", "switch"), dict) and "error" in r["relay"]["switch"]:
            errors.append(f"rep {r['rep']} relay switch: {r['relay']['switch']['error']}")
    for r in reps:
        for section in ("tcp", "rtt", "udp", "tcp_loss", "cyphonic_loss_switch"):
            for k, v in (r.get(section) or {}).items():
                if isinstance(v, dict) and "error" in v:
                    errors.append(f"rep {r['rep']} {section} {k}: {v['error']}")
    errors += [f"restart {i}: {r['error']}" for i, r in enumerate(result["samples"]["restarts"]) if "error" in r]
    if errors:
        out.append("Failed samples (left out of the summary): " + "; ".join(errors[:10]))
    return out


def _signaling(result: dict) -> list[str]:
    """Slow tunnel establishments and the daemons' drop counters."""
    out = []
    tunnels = result["series"].get("tunnel_establishment_ms", [])
    slow = [t for t in tunnels if t >= 250]
    if slow:
        drops = sum(
            1
            for r in result["samples"]["restarts"]
            if "tunnel request on an unannounced path" in (r.get("drops") or {})
        )
        out.append(
            f"{len(slow)} of {len(tunnels)} tunnel establishments took >= 250 ms "
            f"(min of those {min(slow):.0f} ms): the signaling retransmits after 300 ms. "
            f"mn counted 'tunnel request on an unannounced path' after {drops} of "
            f"{len(result['samples']['restarts'])} restarts."
        )
    for stage in ("status_after_throughput", "status_at_end"):
        for host, st in (result.get(stage) or {}).items():
            if st and st.get("drops"):
                out.append(f"{stage} {host} drop counters: {st['drops']}")
    return out
