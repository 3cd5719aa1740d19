"""The NMS's decision table, row by row."""

from cyphonic.core.route import Attachment, Endpoints, route_selection

MN4 = ("198.51.100.10", 4500)
CN4 = ("192.0.2.10", 31000)
MN6 = ("2001:db8:a::10", 4500)
CN6 = ("2001:db8:b::10", 4500)


def ends(**families):
    return Endpoints({fam: Attachment(addr, nat) for fam, (addr, nat) in families.items()})


def test_global_cn_is_reached_directly_by_mn():
    r = route_selection(ends(ipv4=(MN4, True)), ends(ipv4=(CN4, False)))
    assert (r.process, r.family, r.mn_sees, r.cn_sees) == ("TunnelRequestToCN", "ipv4", CN4, MN4)


def test_cn_behind_napt_opens_the_reverse_path_to_a_global_mn():
    r = route_selection(ends(ipv4=(MN4, False)), ends(ipv4=(CN4, True)))
    assert (r.process, r.family, r.cn_sees) == ("TunnelRequestToNATcn", "ipv4", MN4)


def test_both_behind_napt_needs_the_relay():
    assert route_selection(ends(ipv4=(MN4, True)), ends(ipv4=(CN4, True))).process == "TunnelRequestToTRS"


def test_no_common_family_needs_the_relay():
    r = route_selection(ends(ipv6=(MN6, False)), ends(ipv4=(CN4, False)))
    assert r.process == "TunnelRequestToTRS" and r.family is None


def test_ipv6_is_preferred_over_a_natted_ipv4():
    r = route_selection(ends(ipv4=(MN4, True), ipv6=(MN6, False)), ends(ipv4=(CN4, True), ipv6=(CN6, False)))
    assert (r.process, r.family, r.mn_sees) == ("TunnelRequestToCN", "ipv6", CN6)
