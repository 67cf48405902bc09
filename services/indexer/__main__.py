"""python -m services.indexer: run an indexer replica with the settings from the environment."""

from services import logs
from services.indexer.service import run
from services.settings import Settings

logs.configure("indexer")
run(Settings())
