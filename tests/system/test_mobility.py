"""Mobility, first step (issue 15): a node that moves to another access
network tells the NMS at once, from the kernel's netlink event, not at its
next refresh; route selection to it and from it works from the new network."""

from __future__ import annotations

import time

import pytest

from cyphonic.lab import Lab

pytestmark = [pytest.mark.system, pytest.mark.disruptive]

DOMAIN = "cyphonic.test"


def observed(lab: Lab, host: str) -> dict[str, str]:
    cloud = lab.status("cloud")
    assert cloud is not None
    for node in cloud["nodes"]:
        if node["fqdn"] == f"{host}.{DOMAIN}":
            return {family: a["observed"] for family, a in node["attachments"].items()}
    return {}


def wait_for(predicate, what: str, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_node_that_moves_registers_its_new_address_at_once(lab: Lab) -> None:
    assert observed(lab, "mn")["ipv4"].startswith("198.51.100.10:")
    try:
        lab.move("mn", "global4b")
        # the refresh is every 10 s: well before it, the NMS has the new locator
        took = wait_for(
            lambda: observed(lab, "mn").get("ipv4", "").startswith("198.51.101.10:"), "mn at 198.51.101.10", 3
        )
        assert took < 3
        # a route selection from the new network, to a peer behind NAPT
        done = lab.run("mn", ["ping", "-c", "2", "-W", "2", f"b1.{DOMAIN}"], timeout=30)
        assert " 0% packet loss" in done.stdout or "1 received" in done.stdout, done.stdout
        lab.move("mn", "napt")
        wait_for(lambda: observed(lab, "mn").get("ipv4", "").startswith("198.18.5.10:"), "mn behind nat-mv", 3)
        done = lab.run("mn", ["ping", "-c", "2", "-W", "2", f"a1.{DOMAIN}"], timeout=30)
        assert " 0% packet loss" in done.stdout or "1 received" in done.stdout, done.stdout
    finally:
        lab.move("mn", "global4a")
    wait_for(lambda: observed(lab, "mn").get("ipv4", "").startswith("198.51.100.10:"), "mn back home", 3)
