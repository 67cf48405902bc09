"""python -m services.inference: run the inference service with the settings from the environment."""

from services import logs
from services.inference.service import run
from services.settings import Settings

logs.configure("inference")
run(Settings())
