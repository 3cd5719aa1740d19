"""Is a tunnel alive, and is its path working? The supervisor's decisions
(node/supervisor.py), sans I/O, with `now` passed in (protocols/tunnel.md,
protocols/mobility.md#a-path-that-fails)."""

from __future__ import annotations

from cyphonic.core.tunnel import Tunnel


def dead_after(keepalive: float) -> float:
    """Silence after which a tunnel is torn down: three keepalives unanswered."""
    return 3 * keepalive + 2


# A path that stops working while data flows is noticed within about a
# second: data sent and nothing authenticated back for SUSPECT_AFTER starts
# Keep Alive probes; still nothing after FAIL_AFTER and the path has failed
# (the Signaling Module selects another). One-way traffic keeps the probes
# going (their Acks are what comes back), at one per SUSPECT_AFTER.
SUSPECT_AFTER = 0.4
PROBE_EVERY = 0.1
FAIL_AFTER = 1.0
IDLE_TICK = 0.25  # an idle tunnel is looked at this often: traffic may start at any time
FLOWING = 3  # datagrams since the supervisor's last look that make a flow


def liveness(tunnel: Tunnel, now: float, keepalive: float, offline: bool = False) -> str:
    """What the tunnel's supervisor must do now: "failed", "dead", "probe",
    "keepalive" or "ok". Without an uplink (`offline`) nothing can be heard:
    the tunnel waits for one instead of dying. Notes on the tunnel what this
    look saw (a flow coming in; a failed path that works again)."""
    if offline:
        return "ok"
    if tunnel.rx_packets - tunnel.rx_mark >= FLOWING:
        tunnel.rx_flowing = now
    tunnel.rx_mark = tunnel.rx_packets
    silent = now - tunnel.last_received
    if tunnel.failed_at is not None and tunnel.last_received > tunnel.failed_at:
        tunnel.failed_at = None  # the path works again
    # How long data has gone unanswered: from the first look that found data
    # sent after the last datagram heard, not from that datagram (a ping a
    # second apart is answered in a millisecond: its silence before it is no
    # failure).
    waiting = tunnel.last_data_sent > tunnel.last_received
    if not waiting:
        tunnel.unanswered_since = None
    elif tunnel.unanswered_since is None or tunnel.last_received > tunnel.unanswered_since:
        tunnel.unanswered_since = now
    unanswered = now - tunnel.unanswered_since if tunnel.unanswered_since is not None else 0.0
    sending = waiting and now - tunnel.last_data_sent < SUSPECT_AFTER
    if sending and unanswered >= FAIL_AFTER and tunnel.failed_at is None:
        return "failed"
    if silent > dead_after(keepalive):
        return "dead"
    if sending and unanswered >= SUSPECT_AFTER and now - tunnel.probed >= PROBE_EVERY:
        return "probe"
    if (
        silent >= SUSPECT_AFTER
        and tunnel.last_received - tunnel.rx_flowing <= IDLE_TICK
        and tunnel.probed < tunnel.last_received
    ):
        # datagrams were flowing in and stopped at once: our NAT may have
        # rebound (the peer's now go to a mapping that is gone). One probe:
        # it makes a new mapping and, relayed, moves our side at the TRS
        return "probe"
    if now - tunnel.last_sent >= keepalive:
        return "keepalive"
    return "ok"


def next_check(tunnel: Tunnel, now: float, keepalive: float) -> float:
    """When `liveness` is worth asking again."""
    if now - tunnel.last_data_sent < SUSPECT_AFTER:
        return now + PROBE_EVERY
    return now + min(IDLE_TICK, keepalive / 2)


def carried_traffic(tunnel: Tunnel, now: float, keepalive: float) -> bool:
    """Was the tunnel carrying data when it fell silent (worth re-routing)?"""
    return tunnel.tx_bytes > 0 and now - tunnel.last_data_sent < dead_after(keepalive)
