"""python -m cyphonic.nms --config cloud.toml: the NMS alone."""

from cyphonic import program
from cyphonic.cloud.settings import SCHEMA  # the file the NMS shares with the AS
from cyphonic.nms import settings
from cyphonic.nms.serve import serve

program.main("cyphonic.nms", "cloud.toml", SCHEMA, settings.build, serve)
