"""The `main` of the service programs (AS, NMS, TRS, cloud): one config
file in, checked, services built from it, then one Trio run.

Every way the operator can get it wrong ends in one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from cyphonic import config, logs
from cyphonic.errors import ConfigError


def main(
    program: str,
    file: str,
    schema: config.Schema,
    build: Callable[[dict[str, Any]], Any],
    serve: Callable[[dict[str, Any], Any], Awaitable[None]],
) -> None:
    """`python -m program --config FILE`: serve(cfg, build(cfg)) until killed."""
    parser = argparse.ArgumentParser(prog=f"python -m {program}")
    parser.add_argument("--config", required=True, type=Path, help=file)
    args = parser.parse_args()
    cfg = config.load_or_exit(program, args.config, schema)
    logs.setup(cfg["log_level"])
    try:
        built = build(cfg)
    except ConfigError as exc:  # a rule the schema cannot state (e.g. a list that must not be empty)
        print(f"{program}: config error: {exc}", file=sys.stderr)
        sys.exit(2)
    except (OSError, ValueError, KeyError) as exc:  # a key file missing or unreadable
        print(f"{program}: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, cfg, built)
