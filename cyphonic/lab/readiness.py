"""Waiting for a lab's programs: each answers `cyphonic status`, nodes and adapters register."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .errors import LabError
from .processes import log_tail
from .topology import Role

if TYPE_CHECKING:
    from .instance import Lab


def check_alive(lab: Lab, host: str) -> None:
    """LabError with its log tail if the host's program, started by `lab`, has exited."""
    proc = lab.procs.get(host)
    if proc is not None and proc.poll() is not None:
        from .instance import PROGRAMS

        h = lab.topology.host(host)
        name = h.dhcp if h.role == Role.GENERAL else PROGRAMS[h.role].module
        raise LabError(
            f"{host}: {name} exited with status {proc.returncode} (log: {lab.paths.log(host)})",
            log_tail(lab.paths.log(host), 25),
        )


def wait_role(lab: Lab, role: Role, deadline: float) -> None:
    """Wait until every host of `role` answers `cyphonic status` as that role."""
    for host in lab.topology.with_role(role):
        while True:
            check_alive(lab, host.name)
            st = lab.status(host.name)
            if st is not None and st.get("role") == str(role):
                break
            if time.monotonic() > deadline:
                raise LabError(
                    f"{host.name}: {role} does not answer `cyphonic status` (log: {lab.paths.log(host.name)})",
                    log_tail(lab.paths.log(host.name)),
                )
            time.sleep(0.2)


def wait_registered(lab: Lab, hosts: list[str], deadline: float) -> None:
    """Until each node says it is registered, and each adapter answers
    `cyphonic status` and the cloud lists the adapter's FQDN as registered."""

    def is_adapter(host: str) -> bool:
        return lab.topology.host(host).role == Role.ADAPTER

    waiting = list(hosts)
    while waiting:
        at_cloud = registered_fqdns(lab) if any(is_adapter(h) for h in waiting) else set()
        for host in list(waiting):
            check_alive(lab, host)
            st = lab.status(host)
            if st is None:
                continue
            if (lab.fqdn(host) in at_cloud) if is_adapter(host) else st.get("registered"):
                waiting.remove(host)
        if not waiting:
            return
        if time.monotonic() > deadline:
            host = waiting[0]
            answers = "answers `cyphonic status`" if lab.status(host) is not None else "does not answer"
            raise LabError(
                f"{host}: {lab.topology.host(host).role} not registered with the cloud in time "
                f"({answers}; log: {lab.paths.log(host)})",
                log_tail(lab.paths.log(host), 25),
            )
        time.sleep(0.2)


def registered_fqdns(lab: Lab) -> set[str]:
    """The FQDNs the cloud's NMS holds a live registration for."""
    clouds = lab.topology.with_role(Role.CLOUD)
    st = lab.status(clouds[0].name) if clouds else None
    return {str(n.get("fqdn")) for n in (st or {}).get("nodes", [])}
