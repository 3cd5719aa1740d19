"""python -m cyphonic.auth --config cloud.toml: the AS alone."""

from cyphonic import program
from cyphonic.auth import settings
from cyphonic.auth.serve import serve
from cyphonic.cloud.settings import SCHEMA  # the file the AS shares with the NMS

program.main("cyphonic.auth", "cloud.toml", SCHEMA, settings.build, serve)
