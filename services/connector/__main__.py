"""python -m services.connector: run the connector with the settings from the environment."""

from services import logs
from services.connector.service import run
from services.settings import Settings

logs.configure("connector")
run(Settings())
