"""python -m services.normalizer: run a normalizer replica with the settings from the environment."""

from services import logs
from services.settings import Settings
from services.normalizer.service import run

logs.configure("normalizer")
run(Settings())
