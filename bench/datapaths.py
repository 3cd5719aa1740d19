"""The set-up stage: the three data paths A/B/C over the lab, and Nebula started beside CYPHONIC.

Every path carries the data mn -> cn, so a drop rule in cn's namespace (or
cn's receiver hook) hits the data, not the ACKs. The A/B/C table of
bench/README.md says who runs iperf3 and ping against what.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cyphonic.lab import Lab

from . import cpu, nebula, openvpn, wireguard
from .progress import log

MN_GLOBAL = "198.51.100.10"  # mn's address on the "internet"; cn reaches it through its NAPT
CN = "cn.cyphonic.test"
MN = "mn.cyphonic.test"
PORT = 5201
OTHERS = {"wireguard": wireguard, "openvpn": openvpn}
UDP_IP_OVERHEAD = {4: 28, 6: 48}  # IP + UDP header: -l = inner MTU - this fills one packet
# mn -> cn, side by side in every repetition: the ceiling, the overlays users
# compare us with, and CYPHONIC (its "reverse" path: cn behind NAPT opens it)
PATHS = ("plain", "nebula", "wireguard", "openvpn", "cyphonic")
TUNNELS = PATHS[1:]
LABELS = {
    "plain": "plain routing",
    "nebula": "Nebula",
    "wireguard": "wireguard-go",
    "openvpn": "OpenVPN",
    "cyphonic": "CYPHONIC",
}


def tun_info(lab: Lab, host: str, name: str | None = None) -> dict:
    if name is None:
        st = lab.status(host) or {}
        name = st.get("tun") or "cyph0"
    out = lab.run(host, ["ip", "-d", "link", "show", name], timeout=10).stdout
    words = out.split()
    mtu = int(words[words.index("mtu") + 1]) if "mtu" in words else None
    vnet = words[words.index("vnet_hdr") + 1] if "vnet_hdr" in words else None
    return {"name": name, "mtu": mtu, "vnet_hdr": vnet, "ip_link": out.strip()}


@dataclass
class DataPath:
    """One of A/B/C (or a relay pair): who runs the iperf3 client and ping, against what.

    Plain routing cannot reach cn through its NAPT, so cn is the client there
    with iperf3 -R (mn's server sends).
    """

    key: str
    label: str
    client: str
    target: str
    iperf_extra: tuple[str, ...] = ()
    ping_extra: tuple[str, ...] = ()
    udp_start_mbps: int = 200
    udp_max_mbps: int = 4000
    pids_of: object = None  # Callable[[str], list[int]] | None: the tunnel processes of a host
    counters: tuple[str, str] | None = None
    udp_length: int = 0
    hosts: tuple[str, ...] = ("mn", "cn")  # whose tunnel processes the CPU meter reads
    links: list | None = None  # (host, device) byte counters; None: cn's tunnel devices
    loss_match: str = ""  # nft match of this path's outer packets at cn (the 1% loss stage)
    extra: dict = field(default_factory=dict)


def start_nebula(lab: Lab, neb: nebula.Nebula, result: dict) -> None:
    """Nebula's CA, lighthouse in cloud, hosts in mn and cn; up once mn reaches cn."""
    log(f"nebula {nebula.version()}: CA, lighthouse in cloud, hosts in mn and cn")
    neb.setup()
    result["nebula"] = {"settings": neb.settings()}
    result["nebula"]["start"] = neb.start()
    result["nebula"]["tun"] = tun_info(lab, "mn", nebula.TUN)
    log(f"nebula up: mn reaches {neb.ip('cn')} after {result['nebula']['start']['mn_reaches_cn_s']} s")


def start_other(lab: Lab, name: str, tunnel, result: dict) -> None:
    """wireguard-go or OpenVPN between mn and cn, as Nebula: up once mn reaches cn."""
    mod = OTHERS[name]
    log(f"{name} {mod.version()}: mn <-> cn")
    tunnel.setup()
    result[name] = {"settings": tunnel.settings(), "start": tunnel.start()}
    result[name]["tun"] = tun_info(lab, "mn", mod.TUN)
    log(f"{name} up after {result[name]['start'].get('mn_reaches_cn_s')} s")


def abc(lab: Lab, neb: nebula.Nebula, others: dict, udp_length: int, family: int) -> dict[str, DataPath]:
    """Plain routing, Nebula, the `others` (wireguard, openvpn: started tunnels), CYPHONIC
    (over `family`); UDP datagrams of `udp_length`."""
    fam = (f"-{family}",)
    tunnel_pids = [neb, *others.values()]
    paths = {
        "plain": DataPath(
            "plain",
            "plain routing",
            "cn",
            MN_GLOBAL,
            iperf_extra=("-R",),
            udp_start_mbps=1000,
            udp_max_mbps=16000,
            # sanity: no tunnel process should work during plain runs
            pids_of=lambda h: cpu.daemon_pids(lab.ns(h)) + [x for t in tunnel_pids for x in t.pids().get(h, [])],
            loss_match="meta l4proto tcp",
        ),
        "nebula": DataPath(
            "nebula",
            f"Nebula {nebula.version()}",
            "mn",
            neb.ip("cn"),
            pids_of=lambda h: neb.pids().get(h, []),
            loss_match=f"udp dport {nebula.PORT}",
        ),
    }
    for name, tunnel in others.items():
        mod = OTHERS[name]
        paths[name] = DataPath(
            name,
            f"{LABELS[name]} {mod.version()}",
            "mn",
            tunnel.ip("cn"),
            pids_of=lambda h, t=tunnel: t.pids().get(h, []),
            # mn is the listening end of both: what cn receives comes from its port
            loss_match=f"udp sport {mod.PORT}",
        )
    paths["cyphonic"] = DataPath("cyphonic", "CYPHONIC", "mn", CN, iperf_extra=fam, ping_extra=fam, counters=("mn", CN))
    for p in paths.values():
        p.udp_length = udp_length
    return paths


def config(paths: dict[str, DataPath]) -> dict:
    """What the JSON's config records of each path."""
    return {
        k: {
            "client": p.client,
            "target": p.target,
            "iperf3_extra": list(p.iperf_extra),
            "ping_extra": list(p.ping_extra),
            "udp_start_mbps": p.udp_start_mbps,
            "udp_max_mbps": p.udp_max_mbps,
        }
        for k, p in paths.items()
    }
