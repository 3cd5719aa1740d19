"""The one error the lab raises for things a user can act on."""


class LabError(Exception):
    """A lab step failed; the message is one line, `detail` may hold a log tail."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail
