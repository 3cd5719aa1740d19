"""The virtio-net header (`struct virtio_net_hdr`, virtio spec 5.1.6) that
opens every read and write of a TUN device opened with IFF_VNET_HDR.

A `struct.Struct`, not a construct schema: it is packed and unpacked once
per TUN read or write, on the data path.
"""

from __future__ import annotations

import struct

# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset (little-endian:
# TUNSETVNETLE is never set, and the hosts we run on are little-endian)
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size

F_NEEDS_CSUM = 1  # VIRTIO_NET_HDR_F_NEEDS_CSUM: csum_start/csum_offset are valid
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 0, 1, 3, 4, 5
GSO_ECN = 0x80

# an ordinary packet: no segmentation, checksum complete
PLAIN_HEADER = VNET_HDR.pack(0, GSO_NONE, 0, 0, 0, 0)
