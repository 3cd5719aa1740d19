"""What several test modules share: test packets, a checksum oracle, the data-plane harness."""
