"""System tests: a real lab of network namespaces, real daemons, stock clients.

One lab per test session, under a prefix of its own so it never touches a
lab someone brought up by hand; it is always torn down, even when `up` fails.
Without root (or a stock tool) these tests skip on a laptop but FAIL in CI:
a CI run that skipped them proved nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from cyphonic.lab import Lab, LabError, apps
from cyphonic.lab.processes import log_tail

TOOLS = ("ip", "nft", "sysctl", "ss", "ping", "dig", "curl", "iperf3", "tcpdump")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "disruptive: kills or restarts lab daemons; runs after the other system tests")
    config.addinivalue_line(
        "markers", "control_plane: tests signaling, not the data path: run once, on the offload data path")
    config.addinivalue_line(
        "markers",
        "once: a test whose subject does not change with the packet loops (the adapter's LAN side, "
        "the bench's own lab) or that the integration tier covers on every data path: run once, "
        "on the offload data path")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that kill the cloud or restart a node go last, so a slow
    # re-registration cannot make an unrelated test flaky. sort() is stable.
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


def require_lab_host() -> None:
    """Skip (or fail, in CI) unless this machine can build a lab."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    reason = None
    if os.geteuid() != 0:
        reason = "system tests need root (network namespaces)"
    elif missing:
        reason = f"system tests need {', '.join(missing)} installed"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; in CI a skipped system test is a failure", pytrace=False)
    pytest.skip(reason)


def systemd_missing() -> str | None:
    """Why the systemd units cannot be tested here, or None where they can.

    The one exception to the policy above, a skip that CI allows: CI runs
    the suite in a container whose PID 1 is not systemd, and nothing a test
    sets up gives it one, so that skip reports the machine, not a gap in
    the code (the units are still checked offline by
    tests/unit/test_systemd_units.py). Only this reason is exempt: root and
    the lab's tools are required as for every other system test."""
    if Path("/run/systemd/system").is_dir():  # sd_booted(3)'s own test
        return None
    try:
        pid1 = Path("/proc/1/comm").read_text().strip()
    except OSError as exc:
        pid1 = f"unknown: {exc}"
    return f"systemd is not running (PID 1 is {pid1})"


def unique_prefix(tag: str) -> str:
    # pid-based: two test runs at once (two checkouts) still get separate labs.
    return f"{tag}{os.getpid() % 100000}"


@pytest.fixture
def spare_prefix() -> str:
    """A prefix for a test's own, short-lived lab."""
    require_lab_host()
    return unique_prefix("s")


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The basic lab (cloud, trs, mn, NAPT'd cn/a1/b1, IPv6-only v6), up and registered."""
    require_lab_host()
    with running_lab(unique_prefix("t")) as lab:
        yield lab


@contextlib.contextmanager
def running_lab(prefix: str) -> Iterator[Lab]:
    """A lab up on the data path CI chose, always torn down; a failed `up` fails the test."""
    lab = Lab(
        prefix,
        dataplane=os.environ.get("CYPHONIC_DATAPLANE", "offload"),
        cipher=os.environ.get("CYPHONIC_CIPHER", "auto"),
    )
    try:
        try:
            lab.up(timeout=30)
        except LabError as e:
            pytest.fail(f"lab up: {e}\n{e.detail}\n{_all_logs(lab)}", pytrace=False)
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def network() -> Iterator[Lab]:
    """The same topology with no CYPHONIC program: the bare underlay."""
    require_lab_host()
    lab = Lab(unique_prefix("u"))
    try:
        lab.up(programs=False)
        yield lab
    finally:
        lab.down()


def _all_logs(lab: Lab) -> str:
    parts = []
    for log in sorted(lab.paths.root.glob("*.log")):
        parts.append(f"--- {log.name}\n{log_tail(log, 30)}")
    return "\n".join(parts)


@pytest.fixture(autouse=True)
def _daemon_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed test that used the lab shows the daemons' log tails."""
    yield
    report = getattr(request.node, "rep_call", None)
    if "lab" in request.fixturenames and report is not None and report.failed:
        print(_all_logs(request.getfixturevalue("lab")))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def cn_iperf3(lab: Lab) -> Iterator[int]:
    """An iperf3 server on cn (all addresses); yields its port."""
    server = apps.serve_iperf3(lab, "cn", port=5201)
    try:
        yield 5201
    finally:
        apps.stop(server)
