"""The scaling stage's table: signaling cost against the number of concurrent peers,
and what 100 tunnels cost the node that holds them (bench/scaling.py measures)."""

from __future__ import annotations

from .stats import fmt, percentile


def rows(result: dict) -> list[dict]:
    """Per peer count: n, p50 and p99 of route selection, tunnel establishment and login."""
    out = []
    for c in (result.get("scaling") or {}).get("concurrency") or []:
        row: dict = {"peers": c.get("peers"), "failed": c.get("failed"), "wall_s": c.get("wall_s")}
        for key in ("route_selection_ms", "tunnel_establishment_ms", "login_ms"):
            samples = [float(x) for x in c.get(key) or [] if x is not None]
            row[key] = {"n": len(samples), "p50": percentile(samples, 50), "p99": percentile(samples, 99)}
        out.append(row)
    return out


def _pair(s: dict) -> str:
    if not s or not s.get("n"):
        return "–"
    return f"{fmt(s['p50'])} / {fmt(s['p99'])}"


def markdown(result: dict) -> list[str]:
    sc = result.get("scaling")
    if not sc:
        return []
    cfg = sc.get("config") or {}
    lines = [
        "## Scaling: signaling with 1, 10, 100 concurrent peers",
        "",
        f"N identities in one process on {cfg.get('host', '?')} (`{cfg.get('command', '?')}`) log in, "
        f"register, then all at once select the route to {cfg.get('target', '?')} and establish a tunnel "
        "with it; times from each identity's own daemon timers, as the restarts above. p99 is "
        "nearest-rank: with fewer than 100 samples it is the maximum.",
        "",
        "| concurrent peers | route selection p50 / p99, ms | tunnel establishment p50 / p99, ms "
        "| login + register p50 / p99, ms | failed | wall, s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows(result):
        lines.append(
            f"| {r['peers']} | {_pair(r['route_selection_ms'])} | {_pair(r['tunnel_establishment_ms'])} | "
            f"{_pair(r['login_ms'])} | {r['failed']} | {fmt(r['wall_s'])} |"
        )
    t = sc.get("tunnels") or {}
    if t:
        before, after = t.get("rss_kib_before"), t.get("rss_kib_after")
        grown = (after - before) / 1024 if before is not None and after is not None else None
        lines += [
            "",
            f"- {t.get('target', 'cn')} with {t.get('count')} tunnels up: daemon RSS "
            f"{fmt((before or 0) / 1024)} -> {fmt((after or 0) / 1024)} MiB "
            f"(+{fmt(grown)} MiB, {fmt(grown * 1024 / t['count']) if grown is not None and t.get('count') else '–'} "
            f"KiB per tunnel); CPU {fmt(t.get('cpu_pct_of_core'))} % of a core over {fmt(t.get('window_s'))} s "
            f"with keepalives every {fmt(t.get('keepalive_s'))} s",
        ]
    if sc.get("error"):
        lines.append(f"- stage stopped: {sc['error']}")
    return lines + [""]
