"""The CYPHONIC adapter (seed: "Virtual IPv4 based CYPHONIC adapter"): the
Adapter Daemon gives stock devices on its LAN port ("general nodes")
CYPHONIC communication on their behalf."""
