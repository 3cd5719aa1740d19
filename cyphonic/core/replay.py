"""Sliding replay window over 64-bit counters (RFC 6479's idea, one big int).

`check` is cheap and runs before decryption so a replay costs no AEAD;
`update` runs only after the datagram opened, so a forgery moves nothing.
A counter at or above COUNTER_LIMIT is refused: counters are nonces and must
never wrap (protocols/tunnel.md#counter-limits).
"""

WINDOW = 2048
_MASK = (1 << WINDOW) - 1
COUNTER_LIMIT = 2**64 - 2**16


class ReplayWindow:
    __slots__ = ("highest", "_bits")

    def __init__(self) -> None:
        self.highest = -1  # no counter seen yet
        self._bits = 0  # bit i set = counter (highest - i) seen

    def check(self, counter: int, _limit: int = COUNTER_LIMIT) -> bool:
        """True if `counter` is new, not too old and below the limit."""
        if counter > self.highest:
            return counter < _limit
        offset = self.highest - counter
        return offset < WINDOW and not (self._bits >> offset) & 1

    def update(self, counter: int) -> bool:
        """Mark `counter` seen; True if it is newer than every counter so far
        (only such a datagram may move a peer's endpoint)."""
        if counter > self.highest:
            shift = counter - self.highest
            bits = (self._bits << shift) | 1 if shift < WINDOW else 1
            # bits past the window are never read; trim them now and then,
            # not on every packet (each trim copies the whole integer)
            if bits.bit_length() > 4 * WINDOW:
                bits &= _MASK
            self._bits = bits
            self.highest = counter
            return True
        self._bits |= 1 << (self.highest - counter)
        return False
