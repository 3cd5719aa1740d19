"""From mn, cn is reachable by its name through the stock resolver and tools.

Every lookup here checks that dig got an answer at all (exit status 0) and
which one (the rcode in `status:`): a dig that fails, times out or reaches
no resolver fails the test instead of passing it by printing nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from cyphonic.lab import Lab, apps

pytestmark = pytest.mark.system

CN = "cn.cyphonic.test"


@dataclass
class Lookup:
    status: str  # the DNS rcode: NOERROR, NXDOMAIN, REFUSED, SERVFAIL…
    records: list[tuple[str, str, str]]  # (name, type, data) of the answer section


def dig(lab: Lab, name: str, rtype: str, wait: int = 5) -> Lookup:
    """Look `name` up on mn through its resolv.conf (127.0.0.1: the node's
    Resolver Module), like any application does."""
    done = lab.run(
        "mn", ["dig", f"+time={wait}", "+tries=1", "+noall", "+comments", "+answer", name, rtype], timeout=wait + 10
    )
    # dig exits 0 whenever a DNS answer came back, whatever its rcode; 9 is
    # "no reply", 10 an internal error
    assert done.returncode == 0, f"dig exited {done.returncode}: {done.stdout}{done.stderr}"
    status = re.search(r"status: ([A-Z]+)", done.stdout)
    assert status, f"no DNS header in dig's output: {done.stdout}"
    records = []
    for line in done.stdout.splitlines():
        if line.strip() and not line.startswith(";"):
            owner, _ttl, _class, rdtype, data = line.split(None, 4)
            records.append((owner.rstrip(".").lower(), rdtype, data.strip()))
    return Lookup(status[1], records)


@pytest.mark.parametrize("rtype, key", [("A", "vip4"), ("AAAA", "vip6")])
def test_dig_answers_the_virtual_ips_cn_reports(lab: Lab, rtype: str, key: str) -> None:
    cn = lab.status("cn")
    assert cn is not None and cn[key], f"cn reports no {key}: {cn}"
    lookup = dig(lab, CN, rtype)
    assert lookup.status == "NOERROR"
    assert lookup.records == [(CN, rtype, cn[key])]


def test_ping_cn_by_name(lab: Lab) -> None:
    done = lab.run("mn", ["ping", "-c", "3", "-W", "2", CN], timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    sent, received, _ = apps.ping_summary(done.stdout)
    assert (sent, received) == (3, 3)
    # The replies came from cn's virtual address, i.e. through the overlay.
    cn = lab.status("cn")
    assert cn is not None, "cn reports no status"
    assert f"from {cn['vip4']}" in done.stdout or f"from {cn['vip6']}" in done.stdout


def test_unknown_names_in_the_lab_domain_do_not_exist(lab: Lab) -> None:
    # no node has this name: the NMS answers unknown_peer, the resolver NXDOMAIN
    lookup = dig(lab, "nosuch.cyphonic.test", "A")
    assert (lookup.status, lookup.records) == ("NXDOMAIN", [])


def test_names_outside_the_lab_domain_do_not_resolve_to_cn(lab: Lab) -> None:
    # The lab's nodes have no upstream resolver ([resolver] upstream = []):
    # the node's resolver refuses every name outside the overlay's domain.
    lookup = dig(lab, "cn.example.test", "A", wait=3)
    assert (lookup.status, lookup.records) == ("REFUSED", [])
