"""`cyphonic status [--json] [--watch [SECONDS]]`: ask the daemon of this
network namespace through its control socket and print the answer."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from cyphonic import control
from cyphonic.status_text import format_status

CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen


class Unanswered(Exception):
    """One line for stderr: why there is no status to show."""


def ask(daemon: str | None) -> dict[str, Any]:
    """The first running daemon's status (or the named one's)."""
    for name in [daemon] if daemon else list(control.NAMES):
        try:
            reply = control.query(name, {"command": "status"})
        except (ConnectionRefusedError, FileNotFoundError):
            continue
        except OSError as exc:
            raise Unanswered(f"{name}: {exc}") from None
        except ValueError:  # closed without an answer: it had too many clients
            raise Unanswered(f"{name}: no answer (the daemon is busy; try again)") from None
        if "error" in reply:  # e.g. permission denied
            raise Unanswered(f"{name}: {reply['error']}")
        return reply
    raise Unanswered("no CYPHONIC daemon runs in this network namespace")


def render(reply: dict[str, Any], as_json: bool, previous: dict | None = None, elapsed: float | None = None) -> str:
    return json.dumps(reply, indent=2) if as_json else format_status(reply, previous, elapsed)


def show(args) -> int:
    try:
        if args.watch is None:
            print(render(ask(args.daemon), args.json))
            return 0
        return watch(args.daemon, args.json, args.watch)
    except Unanswered as exc:
        print(f"cyphonic status: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C is how --watch ends
        return 0


def watch(daemon: str | None, as_json: bool, interval: float) -> int:
    """Redraw every `interval` seconds until Ctrl-C. On a terminal the
    screen is cleared; into a pipe or a file, samples are separated by a
    line with the time, so the output stays a readable log."""
    tty = sys.stdout.isatty()
    previous: dict | None = None
    before = 0.0
    while True:
        reply, now = ask(daemon), time.monotonic()
        text = render(reply, as_json, previous, now - before if previous else None)
        if tty:
            sys.stdout.write(CLEAR)
        else:
            sys.stdout.write(f"--- {time.strftime('%H:%M:%S')}\n")
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        previous, before = reply, now
        time.sleep(interval)
