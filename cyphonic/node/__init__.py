"""The CYPHONIC node daemon: Signaling, Resolver and Packet Handling modules."""
