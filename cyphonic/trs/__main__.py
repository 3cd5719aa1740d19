"""python -m cyphonic.trs --config trs.toml"""

from __future__ import annotations

import trio

from cyphonic import notify, program
from cyphonic.core.relay import RelayService
from cyphonic.trs import settings
from cyphonic.trs.serve import serve


async def _serve(cfg: dict, service: RelayService) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, cfg, service, cfg["control_group"])
        # here, not in serve(): the cloud runs that too, and is ready only with its AS and NMS
        notify.ready("TRS ready, announced as " + ", ".join(f"{h}:{p}" for h, p in cfg["public"]))


program.main("cyphonic.trs", "trs.toml", settings.SCHEMA, settings.build, _serve)
