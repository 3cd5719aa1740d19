"""The log line: logfmt, one line per event; journald's shape under systemd."""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from pathlib import Path

import pytest

from cyphonic import logs


def record(msg: str, *args: object, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("cyphonic.node", level, __file__, 1, msg, args, None)
    r.__dict__.update(extra)
    return r


def test_a_line_is_ts_level_logger_msg_in_that_order() -> None:
    line = logs.LogfmtFormatter().format(record("node %s ready on %s", "web.example.overlay", "cyph0"))
    assert re.fullmatch(
        r"ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d level=info logger=cyphonic.node "
        r'msg="node web.example.overlay ready on cyph0"',
        line,
    ), line


def test_values_are_bare_unless_they_need_quotes() -> None:
    assert logs.value("cyph0") == "cyph0"
    assert logs.value(4500) == "4500"
    assert logs.value("") == '""'
    assert logs.value("a b") == '"a b"'
    assert logs.value('say "hi"') == '"say \\"hi\\""'
    assert logs.value("k=v") == '"k=v"'
    assert logs.value("tab\there") == '"tab\\there"'


def test_fields_of_the_call_site_follow_the_message() -> None:
    line = logs.LogfmtFormatter().format(record("tunnel up", kv={"peer": "db.example.overlay", "path": "relay"}))
    assert line.endswith('msg="tunnel up" peer=db.example.overlay path=relay')


def test_a_traceback_stays_on_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        r = logging.LogRecord("cyphonic.cloud", logging.ERROR, __file__, 1, "crashed", (), sys.exc_info())
    line = logs.LogfmtFormatter().format(r)
    assert "\n" not in line
    assert 'level=error logger=cyphonic.cloud msg=crashed exc="Traceback' in line
    assert "ValueError: boom" in line


@pytest.mark.parametrize(
    ("level", "name", "priority"),
    [(logging.DEBUG, "debug", 7), (logging.INFO, "info", 6), (logging.WARNING, "warning", 4),
     (logging.ERROR, "error", 3), (logging.CRITICAL, "critical", 2)],
)  # fmt: skip
def test_under_journald_a_line_has_the_syslog_priority_and_no_timestamp(level: int, name: str, priority: int) -> None:
    line = logs.LogfmtFormatter(journal=True).format(record("dropped %s", "bad MAC", level=level))
    assert line == f'<{priority}>level={name} logger=cyphonic.node msg="dropped bad MAC"'


def test_journald_is_recognised_by_the_stream_it_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with open(tmp_path / "journal", "w") as stream, open(tmp_path / "other", "w") as other:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.under_journald(stream)
        # inherited by a process whose stderr goes elsewhere: no prefixes there
        assert not logs.under_journald(other)
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not logs.under_journald(io.StringIO())


def test_setup_installs_the_format_on_the_root_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers.clear()
    stream = io.StringIO()
    try:
        logs.setup("warning", stream)
        logging.getLogger("cyphonic.trs").info("not shown")
        logging.getLogger("cyphonic.trs").warning("relay session %08x expired", 7)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    assert stream.getvalue().count("\n") == 1
    assert 'level=warning logger=cyphonic.trs msg="relay session 00000007 expired"' in stream.getvalue()
