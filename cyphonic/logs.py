"""One logging format for every program: one logfmt line per event.

    ts=2026-11-29T19:46:35.199+00:00 level=info logger=cyphonic.node msg="node mn.cyphonic.test ready on cyph0"

`key=value` pairs in a fixed order (ts, level, logger, msg, then the
record's own fields), a value quoted (JSON string escapes) when it has a
space, a quote, an `=` or a newline, so a traceback stays on its line
(`exc="Traceback …\\n…"`). Call sites keep their %-formatted messages;
fields of their own go in `extra={"kv": {"peer": fqdn}}`.

Under journald (stderr is the stream that $JOURNAL_STREAM names) the
line has no `ts` (the journal stamps each entry) and starts with the
syslog priority, `<6>` for info, which journald turns into the entry's
priority (`journalctl -p warning` then works).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from typing import Any, TextIO

# logging's levels as logfmt names and syslog priorities (RFC 5424 section 6.2.1)
LEVELS = {
    logging.DEBUG: ("debug", 7),
    logging.INFO: ("info", 6),
    logging.WARNING: ("warning", 4),
    logging.ERROR: ("error", 3),
    logging.CRITICAL: ("critical", 2),
}


def value(v: Any) -> str:
    """One logfmt value: bare when that is unambiguous, else a JSON string."""
    text = str(v)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    return json.dumps(text, ensure_ascii=False)


def _level(levelno: int) -> tuple[str, int]:
    # a custom level in between takes the next more severe standard one's
    for standard in sorted(LEVELS):
        if levelno <= standard:
            return LEVELS[standard]
    return LEVELS[logging.CRITICAL]


class LogfmtFormatter(logging.Formatter):
    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        name, priority = _level(record.levelno)
        fields: dict[str, Any] = {}
        if not self.journal:
            fields["ts"] = dt.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")
        fields.update(level=name, logger=record.name, msg=record.getMessage())
        fields.update(getattr(record, "kv", None) or {})
        if record.exc_info:
            fields["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack"] = self.formatStack(record.stack_info)
        line = " ".join(f"{key}={value(v)}" for key, v in fields.items())
        return f"<{priority}>{line}" if self.journal else line


def under_journald(stream: TextIO) -> bool:
    """Is `stream` connected to the journal? systemd sets $JOURNAL_STREAM
    to its "device:inode"; a program that merely inherited the variable
    (its stderr redirected elsewhere) must not prefix priorities."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in expected.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def setup(level: str = "INFO", stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogfmtFormatter(journal=under_journald(stream)))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
