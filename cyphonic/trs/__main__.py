"""python -m cyphonic.trs --config trs.toml"""

from __future__ import annotations

from cyphonic import program
from cyphonic.core.relay import RelayService
from cyphonic.trs import settings
from cyphonic.trs.serve import serve


async def _serve(cfg: dict, service: RelayService) -> None:
    await serve(cfg, service, cfg["control_group"])


program.main("cyphonic.trs", "trs.toml", settings.SCHEMA, settings.build, _serve)
