"""python -m cyphonic.cloud --config cloud.toml: AS, NMS (and a TRS) in one process."""

from cyphonic import program
from cyphonic.cloud import run, settings

program.main("cyphonic.cloud", "cloud.toml", settings.SCHEMA, run.build, run.serve)
