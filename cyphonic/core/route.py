"""Route selection (seed: "Route selection process"): the NMS's decision
table, as a pure function of what registration taught it about both ends.

| common family | CN behind NAPT | MN behind NAPT | process               | opener |
|---------------|----------------|----------------|-----------------------|--------|
| yes           | no             | any            | TunnelRequestToCN     | MN     |
| yes           | yes            | no             | TunnelRequestToNATcn  | CN     |
| yes           | yes            | yes            | TunnelRequestToTRS    | (TRS)  |
| none          | -              | -              | TunnelRequestToTRS    | (TRS)  |

IPv6 is tried before IPv4: it rarely crosses a NAPT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FAMILIES = ("ipv6", "ipv4")


@dataclass(frozen=True)
class Attachment:
    """One address family of a registered node: where the NMS saw it."""

    observed: tuple[str, int]
    nat: bool


@dataclass
class Endpoints:
    by_family: dict[str, Attachment] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    process: str  # TunnelRequestToCN | TunnelRequestToNATcn | TunnelRequestToTRS
    family: str | None
    mn_sees: tuple[str, int] | None  # the CN's address as the MN must use it
    cn_sees: tuple[str, int] | None  # the MN's address as the CN must use it


def route_selection(mn: Endpoints, cn: Endpoints) -> Route:
    for family in FAMILIES:
        a, b = mn.by_family.get(family), cn.by_family.get(family)
        if a is None or b is None:
            continue
        if not b.nat:
            return Route("TunnelRequestToCN", family, b.observed, a.observed)
        if not a.nat:
            return Route("TunnelRequestToNATcn", family, b.observed, a.observed)
    return Route("TunnelRequestToTRS", None, None, None)
