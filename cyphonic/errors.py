"""The two errors a listener catches per datagram, and the config error.

Whose fault it is decides the type (as in h11): bytes that do not fit a
schema are a ParseError; anything that fails a key, a signature or a
certificate is an AuthenticationError. Everything else is a bug.
"""


class CyphonicError(Exception):
    """Base of the project's own errors."""


class ParseError(CyphonicError):
    """Bytes that do not fit a wire schema (truncated, oversized, malformed)."""


class AuthenticationError(CyphonicError):
    """A datagram, certificate or ticket that fails a key or a signature."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(CyphonicError):
    """A configuration file with an unknown or invalid key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
