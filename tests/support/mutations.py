"""Mutated copies of real messages, for the fuzz tests of the parsers and servers."""

from __future__ import annotations

from hypothesis import strategies as st

# (position, bit) pairs to flip; a position wraps around the message
FLIPS = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 7)), min_size=1, max_size=6)


def mutations(valid: bytes, flips: list[tuple[int, int]], cut: int, tail: bytes) -> tuple[bytes, bytes]:
    """`valid` with the bits of `flips` flipped, and `valid` cut short at
    `cut` (wrapping) with `tail` after it."""
    flipped = bytearray(valid)
    for position, bit in flips:
        flipped[position % len(flipped)] ^= 1 << bit
    return bytes(flipped), valid[: cut % len(valid)] + tail
