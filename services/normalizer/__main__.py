"""python -m services.normalizer: run a normalizer replica with the settings from the environment."""

from services import logs
from services.normalizer.service import run
from services.settings import Settings

logs.configure("normalizer")
run(Settings())
