"""A flow run recorded on the real Prefect server and read back through its API."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from prefect import flow, task

pytestmark = pytest.mark.integration


@task
def count_words(text: str) -> int:
    return len(text.split())


@flow(name="afina-smoke")
def smoke_flow(text: str) -> int:
    return count_words(text)


def test_flow_run_is_recorded_on_the_server(local_stack):
    marker = uuid.uuid4().hex
    state = smoke_flow(f"hola mundo {marker}", return_state=True)
    assert state.result() == 3

    run_id = state.state_details.flow_run_id
    api = local_stack.prefect_api_url
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    assert run["state"]["type"] == "COMPLETED"
    assert run["parameters"] == {"text": f"hola mundo {marker}"}
    flow_name = httpx.get(f"{api}/flows/{run['flow_id']}", timeout=10).json()["name"]
    assert flow_name == "afina-smoke"

    # task runs reach the server as events, persisted shortly after the flow returns
    deadline = time.monotonic() + 30
    while True:
        task_runs = httpx.post(
            f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [str(run_id)]}}}, timeout=10
        ).json()
        if task_runs or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [t["state"]["type"] for t in task_runs] == ["COMPLETED"]
