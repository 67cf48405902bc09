"""afina's own services on one machine (`afina up | down | status`), run and restarted by a supervisor."""

from control.localstack.process import StackError
from control.supervisor.processes import ServiceStatus, down, status, up

__all__ = ["ServiceStatus", "StackError", "up", "down", "status"]
