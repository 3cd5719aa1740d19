"""From mn, cn is reachable by its name through the stock resolver and tools."""

from __future__ import annotations

import pytest

from cyphonic.lab import Lab, apps

pytestmark = pytest.mark.system

CN = "cn.cyphonic.test"


@pytest.mark.parametrize("rtype, key", [("A", "vip4"), ("AAAA", "vip6")])
def test_dig_answers_the_virtual_ips_cn_reports(lab: Lab, rtype: str, key: str) -> None:
    cn = lab.status("cn")
    assert cn is not None and cn[key], f"cn reports no {key}: {cn}"
    done = lab.run("mn", ["dig", "+short", "+time=5", "+tries=1", CN, rtype])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.split() == [cn[key]]


def test_ping_cn_by_name(lab: Lab) -> None:
    done = lab.run("mn", ["ping", "-c", "3", "-W", "2", CN], timeout=30)
    sent, received, _ = apps.ping_summary(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (sent, received) == (3, 3)
    # The replies came from cn's virtual address, i.e. through the overlay.
    cn = lab.status("cn")
    assert f"from {cn['vip4']}" in done.stdout or f"from {cn['vip6']}" in done.stdout


def test_names_outside_the_lab_domain_do_not_resolve_to_cn(lab: Lab) -> None:
    done = lab.run("mn", ["dig", "+short", "+time=3", "+tries=1", "cn.example.test", "A"])
    cn = lab.status("cn")
    assert cn["vip4"] not in done.stdout
