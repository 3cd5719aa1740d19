"""The OS edge: TUN devices and netlink. The only place that touches them."""
