"""TRS — Tunnel Relay Service (protocols/relay.md). Its sans-I/O logic is
`core.relay.RelayService`, beside the node's end of the same protocol."""
