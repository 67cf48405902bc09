"""python -m services.inference: run the inference service with the settings from the environment."""

from services import logs
from services.settings import Settings
from services.inference.service import run

logs.configure("inference")
run(Settings())
