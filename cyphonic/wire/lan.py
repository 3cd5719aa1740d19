"""What the adapter's LAN port carries: Ethernet II, ARP, IPv4, UDP, ICMPv4,
IPv6, ICMPv6 and Neighbor Discovery (DESIGN section 4).

Headers are declared here, one schema per header; the payload after a
header is the caller's (an IPv4 header does not swallow its datagram). The
per-frame hot paths in `cyphonic.core` (`frames`, `arp`, `ndp`) pack and
unpack the same layouts with `struct`; the unit tests prove that both agree.
Checksums are fields here and are computed by `cyphonic.core.checksum`.
"""

from __future__ import annotations

from construct import (
    BitsInteger,
    BitStruct,
    Bytes,
    Check,
    Computed,
    Const,
    FixedSized,
    Flag,
    GreedyBytes,
    GreedyRange,
    Int8ub,
    Int16ub,
    Int32ub,
    Nibble,
    Struct,
    Switch,
    Terminated,
    this,
)

# --- Ethernet II (IEEE 802.3 clause 3.2.6, ethertypes from the IEEE registry) -------------------

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100  # VLAN tag: such frames belong to another network, not to us
ETH_HLEN = 14
ETH_ZLEN = 60  # shortest frame without FCS: shorter ones are padded (ignore the padding)

BROADCAST = b"\xff" * 6
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"  # ff02::1 on Ethernet (RFC 2464 section 7)

EthernetHeader = Struct(
    "dst" / Bytes(6),
    "src" / Bytes(6),
    "ethertype" / Int16ub,
)

# --- ARP for Ethernet/IPv4 (RFC 826) --------------------------------------------------------

ARPHRD_ETHER = 1
ARP_REQUEST, ARP_REPLY = 1, 2

Arp = Struct(
    "hardware_type" / Const(ARPHRD_ETHER, Int16ub),
    "protocol_type" / Const(ETH_P_IP, Int16ub),
    "hardware_length" / Const(6, Int8ub),
    "protocol_length" / Const(4, Int8ub),
    "operation" / Int16ub,
    "sender_mac" / Bytes(6),
    "sender_ip" / Bytes(4),
    "target_mac" / Bytes(6),
    "target_ip" / Bytes(4),
)
ARP_LEN = 28

# A whole ARP frame as the LAN port reads it: trailing bytes are Ethernet padding.
ArpFrame = Struct(
    "ethernet" / EthernetHeader,
    Check(this.ethernet.ethertype == ETH_P_ARP),
    "arp" / Arp,
    "padding" / GreedyBytes,
)

# --- IPv4 (RFC 791) ----------------------------------------------------------------------------

PROTO_ICMP, PROTO_TCP, PROTO_UDP, PROTO_ICMPV6 = 1, 6, 17, 58
IPV4_HLEN = 20

Ipv4Flags = BitStruct(
    "reserved" / Flag,
    "dont_fragment" / Flag,
    "more_fragments" / Flag,
    "fragment_offset" / BitsInteger(13),  # in 8-byte units
)

IPv4Header = Struct(
    "version_ihl" / BitStruct("version" / Const(4, Nibble), "ihl" / Nibble),
    "ihl" / Computed(this.version_ihl.ihl),  # header length in 32-bit words
    Check(this.ihl >= 5),
    "tos" / Int8ub,
    "total_length" / Int16ub,
    "identification" / Int16ub,
    "flags" / Ipv4Flags,
    "ttl" / Int8ub,
    "protocol" / Int8ub,
    "checksum" / Int16ub,
    "src" / Bytes(4),
    "dst" / Bytes(4),
    "options" / Bytes(this.ihl * 4 - IPV4_HLEN),
)

# --- UDP (RFC 768) -----------------------------------------------------------------------------

UDP_HLEN = 8

UdpHeader = Struct(
    "sport" / Int16ub,
    "dport" / Int16ub,
    "length" / Int16ub,  # header + data
    "checksum" / Int16ub,  # 0: none sent (IPv4 only; RFC 8200 section 8.1 forbids it over IPv6)
)

# --- ICMPv4 (RFC 792, RFC 1191) ----------------------------------------------------------------

ICMP_ECHO_REPLY, ICMP_DEST_UNREACH, ICMP_ECHO_REQUEST = 0, 3, 8
ICMP_FRAG_NEEDED = 4  # code of destination unreachable: "fragmentation needed and DF set"
ICMP_HLEN = 8

IcmpEcho = Struct("identifier" / Int16ub, "sequence" / Int16ub)
# RFC 1191 section 4: the low 16 bits of the unused word carry the next-hop MTU.
IcmpUnreachable = Struct("unused" / Int16ub, "next_hop_mtu" / Int16ub)

ICMP_RESTS = {ICMP_ECHO_REQUEST: IcmpEcho, ICMP_ECHO_REPLY: IcmpEcho, ICMP_DEST_UNREACH: IcmpUnreachable}

Icmp = Struct(
    "type" / Int8ub,
    "code" / Int8ub,
    "checksum" / Int16ub,
    "rest" / Switch(this.type, ICMP_RESTS, default=Bytes(4)),
    "data" / GreedyBytes,  # echo data, or the quoted datagram of an error
)

# --- IPv6 (RFC 8200) ---------------------------------------------------------------------------

IPV6_HLEN = 40

Ipv6FirstWord = BitStruct(
    "version" / Const(6, Nibble),
    "traffic_class" / BitsInteger(8),
    "flow_label" / BitsInteger(20),
)

IPv6Header = Struct(
    "first_word" / Ipv6FirstWord,
    "payload_length" / Int16ub,
    "next_header" / Int8ub,
    "hop_limit" / Int8ub,
    "src" / Bytes(16),
    "dst" / Bytes(16),
)

# --- ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861, RFC 8106) ------------------------------

ICMP6_PACKET_TOO_BIG, ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 2, 128, 129
ND_ROUTER_SOLICIT, ND_ROUTER_ADVERT, ND_NEIGHBOR_SOLICIT, ND_NEIGHBOR_ADVERT = 133, 134, 135, 136
OPT_SOURCE_LL, OPT_TARGET_LL, OPT_PREFIX_INFO, OPT_MTU, OPT_RDNSS = 1, 2, 3, 5, 25
IPV6_MIN_MTU = 1280  # RFC 8200 section 5
ND_HOP_LIMIT = 255  # RFC 4861 section 7.1: proves the sender is on-link

# RFC 4861 4.6.2
PrefixInformation = Struct(
    "prefix_length" / Int8ub,
    "flags" / BitStruct("on_link" / Flag, "autonomous" / Flag, "reserved" / BitsInteger(6)),
    "valid_lifetime" / Int32ub,
    "preferred_lifetime" / Int32ub,
    "reserved" / Int32ub,
    "prefix" / Bytes(16),
)

# RFC 4861 4.6.4
MtuOption = Struct("reserved" / Int16ub, "mtu" / Int32ub)

# RFC 8106 5.1: lifetime in seconds, then one or more 16-byte addresses.
Rdnss = Struct(
    "reserved" / Int16ub,
    "lifetime" / Int32ub,
    "servers" / GreedyRange(Bytes(16)),
)

# RFC 4861 4.6: length counts 8-octet units including type and length; a zero
# length must make the whole packet be discarded (it would loop forever).
NDP_OPTION_BODIES = {
    # RFC 2464 section 6: an Ethernet address; the rest of the unit is padding
    OPT_SOURCE_LL: Bytes(6),
    OPT_TARGET_LL: Bytes(6),
    OPT_PREFIX_INFO: PrefixInformation,
    OPT_MTU: MtuOption,
    OPT_RDNSS: Rdnss,
}

NdpOption = Struct(
    "type" / Int8ub,
    "length" / Int8ub,
    Check(this.length > 0),
    # RFC 4861 4.6: unknown options are skipped
    "body" / FixedSized(this.length * 8 - 2, Switch(this.type, NDP_OPTION_BODIES, default=GreedyBytes)),
)

NdpOptions = GreedyRange(NdpOption)

# RFC 4861 4.1
RouterSolicitation = Struct("reserved" / Int32ub, "options" / NdpOptions, Terminated)

# RFC 4861 4.2
RouterAdvertisement = Struct(
    "cur_hop_limit" / Int8ub,
    "flags" / BitStruct("managed" / Flag, "other" / Flag, "reserved" / BitsInteger(6)),
    "router_lifetime" / Int16ub,
    "reachable_time" / Int32ub,
    "retrans_timer" / Int32ub,
    "options" / NdpOptions,
    Terminated,
)

# RFC 4861 4.3
NeighborSolicitation = Struct(
    "reserved" / Int32ub,
    "target" / Bytes(16),
    "options" / NdpOptions,
    Terminated,
)

# RFC 4861 4.4
NaFlags = BitStruct("router" / Flag, "solicited" / Flag, "override" / Flag, "reserved" / BitsInteger(29))

NeighborAdvertisement = Struct(
    "flags" / NaFlags,
    "target" / Bytes(16),
    "options" / NdpOptions,
    Terminated,
)

# RFC 4443 3.2: as much of the invoking packet as fits in the minimum MTU.
PacketTooBig = Struct("mtu" / Int32ub, "packet" / GreedyBytes)

# RFC 4443 4.1, 4.2
Icmp6Echo = Struct("identifier" / Int16ub, "sequence" / Int16ub, "data" / GreedyBytes)

ICMP6_BODIES = {
    ICMP6_PACKET_TOO_BIG: PacketTooBig,
    ICMP6_ECHO_REQUEST: Icmp6Echo,
    ICMP6_ECHO_REPLY: Icmp6Echo,
    ND_ROUTER_SOLICIT: RouterSolicitation,
    ND_ROUTER_ADVERT: RouterAdvertisement,
    ND_NEIGHBOR_SOLICIT: NeighborSolicitation,
    ND_NEIGHBOR_ADVERT: NeighborAdvertisement,
}

Icmp6 = Struct(
    "type" / Int8ub,
    "code" / Int8ub,
    "checksum" / Int16ub,
    "body" / Switch(this.type, ICMP6_BODIES, default=GreedyBytes),
)
