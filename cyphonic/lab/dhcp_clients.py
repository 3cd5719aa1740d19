"""The stock DHCP clients a general node runs: ISC dhclient (-4, -6) and busybox udhcpc.

Their defaults write the machine's own files: dhclient keeps leases in
/var/lib/dhcp and pids in /run, and the stock hook scripts replace
/etc/resolv.conf. Here each general node gets its own lease, pid, config and
script files under the lab's state directory, and a script of the lab's
that changes only its own namespace: addresses, MTU and routes with `ip`,
name servers written *through* /etc/resolv.conf, which `ip netns exec` has
bind-mounted from /etc/netns/<ns>/resolv.conf (`cat >`, never `mv`, which
would replace the machine's file or fail on the mount point).

This module only writes those files and builds argv; general_nodes.py runs them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .netns import NETNS_ETC

# Debian's request list (/etc/dhcp/dhclient.conf) without the options our
# script would have to act on but does not (RFC 3442 routes, NetBIOS), and
# retry timers of seconds instead of minutes: a lab waits for its devices.
DHCLIENT_CONF = """\
# dhclient.conf of a CYPHONIC lab general node
request subnet-mask, broadcast-address, time-offset, routers,
        domain-name, domain-name-servers, domain-search, host-name,
        dhcp6.name-servers, dhcp6.domain-search, interface-mtu, ntp-servers;
initial-interval 1;
backoff-cutoff 4;
timeout 30;
retry 5;
"""

_COMMON = """\
#!/bin/sh
# @CLIENT@ script of the CYPHONIC lab, general node @HOST@. It changes only
# this network namespace; the name servers go to @RESOLV@.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
RESOLV=@RESOLV@

say() { echo "@CLIENT@-script: $*" >&2; }

# $1 = name servers, $2 = search domains
write_resolv() {
    # Only through the bind mount `ip netns exec` made: never the machine's file.
    if [ ! /etc/resolv.conf -ef "$RESOLV" ]; then
        say "/etc/resolv.conf is not $RESOLV here: name servers not written"
        return 0
    fi
    {
        if [ -n "$2" ]; then echo "search $2"; fi
        for server in $1; do echo "nameserver $server"; done
    } | cat > /etc/resolv.conf
}

# $1 = routers (the first one is used), $2 = prefix length of the lease
set_default_route() {
    for router in $1; do
        # a /32 lease: the router is reachable only through an explicit host route
        if [ "$2" = 32 ] || [ "$2" = 255.255.255.255 ]; then
            ip -4 route replace "$router" dev "$interface" scope link
        fi
        ip -4 route replace default via "$router" dev "$interface" || say "no default route via $router"
        return 0
    done
}
"""

_DHCLIENT = """
case "$reason" in
PREINIT)
    ip link set dev "$interface" up
    ;;
BOUND|RENEW|REBIND|REBOOT)
    say "$reason $new_ip_address/$new_subnet_mask routers $new_routers mtu ${new_interface_mtu:-none}"
    if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
        ip -4 addr flush dev "$interface"
    fi
    if [ -n "$new_interface_mtu" ] && [ "$new_interface_mtu" -ge 576 ]; then
        ip link set dev "$interface" mtu "$new_interface_mtu"
    fi
    ip -4 addr replace "$new_ip_address/$new_subnet_mask" \\
        ${new_broadcast_address:+broadcast "$new_broadcast_address"} dev "$interface"
    set_default_route "$new_routers" "$new_subnet_mask"
    write_resolv "$new_domain_name_servers" "${new_domain_search:-$new_domain_name}"
    ;;
EXPIRE|FAIL|RELEASE|STOP)
    say "$reason ${old_ip_address:-(no address)}"
    if [ -n "$old_ip_address" ]; then
        ip -4 route flush dev "$interface"
        ip -4 addr flush dev "$interface"
    fi
    ;;
TIMEOUT)
    # No server answered; do not fall back on an old lease nobody confirmed.
    exit 1
    ;;
PREINIT6)
    ip link set dev "$interface" up
    # dhclient -6 needs a usable link-local address to send from.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        [ -z "$(ip -6 addr show dev "$interface" scope link tentative)" ] && break
        sleep 0.5
    done
    ;;
BOUND6|RENEW6|REBIND6|REBOOT6)
    say "$reason $new_ip6_address/$new_ip6_prefixlen"
    if [ -n "$old_ip6_address" ] && [ "$old_ip6_address" != "$new_ip6_address" ]; then
        ip -6 addr del "$old_ip6_address/$old_ip6_prefixlen" dev "$interface"
    fi
    if [ -n "$new_ip6_address" ]; then
        ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" scope global \\
            ${new_max_life:+valid_lft "$new_max_life"} ${new_preferred_life:+preferred_lft "$new_preferred_life"}
    fi
    if [ -n "$new_dhcp6_name_servers" ]; then
        write_resolv "$new_dhcp6_name_servers" "$new_dhcp6_domain_search"
    fi
    ;;
DEPREF6)
    say "$reason $cur_ip6_address"
    ip -6 addr change "$cur_ip6_address/$cur_ip6_prefixlen" dev "$interface" scope global preferred_lft 0
    ;;
EXPIRE6|RELEASE6|STOP6)
    say "$reason ${old_ip6_address:-(no address)}"
    if [ -n "$old_ip6_address" ]; then
        ip -6 addr del "$old_ip6_address/$old_ip6_prefixlen" dev "$interface"
    fi
    ;;
esac
exit 0
"""

_UDHCPC = """
case "$1" in
deconfig)
    say "deconfig"
    ip link set dev "$interface" up
    ip -4 route flush dev "$interface"
    ip -4 addr flush dev "$interface"
    ;;
bound|renew)
    say "$1 $ip/${mask:-$subnet} router $router mtu ${mtu:-none}"
    if [ -n "$mtu" ] && [ "$mtu" -ge 576 ]; then
        ip link set dev "$interface" mtu "$mtu"
    fi
    if [ "$1" = bound ]; then
        ip -4 addr flush dev "$interface"
    fi
    ip -4 addr replace "$ip/${mask:-$subnet}" ${broadcast:+broadcast "$broadcast"} dev "$interface"
    set_default_route "$router" "${mask:-$subnet}"
    write_resolv "$dns" "${search:-$domain}"
    ;;
leasefail|nak)
    say "$1 ${message:-}"
    ;;
esac
exit 0
"""


@dataclass(frozen=True)
class Client:
    """One general node's DHCP client and its files, in `directory`."""

    kind: str  # "dhclient", "udhcpc" or "dhclient6"
    directory: Path
    ifname: str = "eth0"

    @property
    def family(self) -> int:
        """The address family it configures: 6 for dhclient -6, else 4."""
        return 6 if self.kind == "dhclient6" else 4

    @property
    def conf(self) -> Path:
        return self.directory / f"{self.kind}.conf"

    @property
    def leases(self) -> Path:
        return self.directory / f"{self.kind}.leases"

    @property
    def pidfile(self) -> Path:
        """The client's own pid file (dhclient -pf, udhcpc -p)."""
        return self.directory / f"{self.kind}.pid"

    @property
    def script(self) -> Path:
        return self.directory / f"{self.kind}-script"

    def write_files(self, host: str, ns: str) -> None:
        """Its config (dhclient) and its script, bound to namespace `ns`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        body = _UDHCPC if self.kind == "udhcpc" else _DHCLIENT
        text = _COMMON + body
        resolv = NETNS_ETC / ns / "resolv.conf"
        for key, value in (("@CLIENT@", self.kind), ("@HOST@", host), ("@RESOLV@", str(resolv))):
            text = text.replace(key, value)
        self.script.write_text(text)
        self.script.chmod(0o755)
        if self.kind != "udhcpc":
            self.conf.write_text(DHCLIENT_CONF)

    def _dhclient(self, *extra: str) -> list[str]:
        family = "-6" if self.kind == "dhclient6" else "-4"
        files = ["-cf", str(self.conf), "-lf", str(self.leases), "-pf", str(self.pidfile), "-sf", str(self.script)]
        return ["dhclient", family, *extra, *files, self.ifname]

    def run_argv(self) -> list[str]:
        """The client in the foreground, for as long as the lab is up (it renews)."""
        if self.kind == "udhcpc":
            return [
                "udhcpc", "-f", "-i", self.ifname, "-s", str(self.script), "-p", str(self.pidfile),
                "-t", "5", "-T", "2", "-O", "mtu", "-O", "search",
            ]  # fmt: skip
        return self._dhclient("-d")

    def release_argv(self) -> list[str]:
        """dhclient -r: stops the running client (by its pid file) and releases its lease."""
        if self.kind == "udhcpc":
            raise ValueError("udhcpc releases on SIGUSR2")
        return self._dhclient("-r")


def address(ip_json: str, family: int) -> str | None:
    """The first global address of `family` in `ip -j addr show dev X` output."""
    for link in json.loads(ip_json or "[]"):
        for a in link.get("addr_info", []):
            if a.get("family") == ("inet6" if family == 6 else "inet") and a.get("scope") == "global":
                return str(a["local"])
    return None
