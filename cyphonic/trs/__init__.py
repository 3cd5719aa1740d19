"""TRS — Tunnel Relay Service (draft for issue 3: relay core and program;
the NMS does not assign relays yet)."""
