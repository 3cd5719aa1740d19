"""CYPHONIC benchmarks on the network-namespace lab (see bench/README.md)."""
