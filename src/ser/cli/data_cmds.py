"""``ser data ...`` commands: imports the per-stage command modules, which register on ``data_app``."""

from ser.cli import data_download, data_ingest, data_split, data_synth, data_validate  # noqa: F401
