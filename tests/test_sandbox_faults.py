"""Every fault the sandbox can inject has its effect, and a seed makes a scenario repeat."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from helpers import (
    SandboxFactory,
    api_client,
    create,
    edit_request,
    read_png,
    result_url,
    wait_until_done,
)

from ruxa_batch.sandbox import SandboxServer

CREATE = "/api/v1/tasks/create"
QUERY = "/api/v1/tasks/query/"


def test_generation_time_sets_when_a_task_ends(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(generation_time=0.3)
    task_id = create(server)
    with api_client(server) as http:
        assert http.get(QUERY + task_id).json()["data"]["state"] != "success"
        time.sleep(0.35)
        assert http.get(QUERY + task_id).json()["data"]["state"] == "success"


def test_latency_delays_api_and_file_requests_only(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(latency=0.2)
    with api_client(server) as http:
        start = time.monotonic()
        http.get(QUERY + "task_nope")
        assert time.monotonic() - start >= 0.2
        start = time.monotonic()
        http.get("/_sandbox/counters")
        assert time.monotonic() - start < 0.15


def test_rate_limit_answers_429_with_retry_after(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(rate_limit=20, generation_time=0)
    task_id = create(server)  # creates and queries share one bucket of a second's worth
    with api_client(server) as http:
        answers = [http.get(QUERY + task_id) for _ in range(60)]
        limited = [answer for answer in answers if answer.status_code == 429]
        assert len(limited) >= 10
        for answer in limited:
            assert answer.text == '{"code": 429, "message": "rate limited"}'
            assert answer.headers["Retry-After"] == "1"  # whole seconds, at least 1
        # Downloads and the test endpoints are outside the limit.
        url = f"{server.base_url}/files/{task_id}/1.png"
        assert all(http.get(url).status_code == 200 for _ in range(10))
        assert http.get("/_sandbox/counters").status_code == 200
        time.sleep(0.1)
        assert http.get(QUERY + task_id).status_code == 200
    assert server.counters()["rate_limited"] == len(limited)


def test_error_rate_answers_a_fraction_with_500(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(error_rate=0.3, seed=3)
    task_id = create_retrying(server)
    with api_client(server) as http:
        answers = [http.get(QUERY + task_id) for _ in range(200)]
    errors = [answer for answer in answers if answer.status_code == 500]
    assert 30 <= len(errors) <= 90
    assert errors[0].json() == {"code": 500, "message": "internal server error"}
    assert server.counters()["server_errors"] == len(errors) + server.counters()["creates_rejected"]


def create_retrying(server: SandboxServer) -> str:
    with api_client(server) as http:
        for _ in range(50):
            answer = http.post(CREATE, json=edit_request())
            if answer.status_code == 200:
                task_id: str = answer.json()["data"]["taskId"]
                return task_id
    raise AssertionError("no create got through")


def test_a_500_on_create_makes_no_task(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(error_rate=1.0)
    with api_client(server) as http:
        assert http.post(CREATE, json=edit_request()).status_code == 500
    assert server.tasks() == []
    assert server.counters()["creates_rejected"] == 1


def test_fail_rate_ends_a_fraction_of_tasks_in_fail(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(fail_rate=0.5, seed=1, generation_time=0)
    outcomes = [wait_until_done(server, create(server)) for _ in range(40)]
    failed = [data for data in outcomes if data["state"] == "fail"]
    assert 10 <= len(failed) <= 30
    for data in failed:
        assert data["resultJson"] == ""
        assert isinstance(data["failCode"], str) and data["failCode"]
        assert isinstance(data["failMsg"], str) and data["failMsg"]
        assert list(data) == [
            "taskId",
            "state",
            "resultJson",
            "failCode",
            "failMsg",
            "costTime",
            "createTime",
            "completeTime",
            "param",
        ]
    with api_client(server) as http:
        assert http.get(f"/files/{failed[0]['taskId']}/1.png").status_code == 404


def test_minimal_fields_keep_only_the_documented_ones(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(fail_rate=1.0, minimal_fields=True)
    data = wait_until_done(server, create(server))
    assert list(data) == ["taskId", "state", "resultJson", "failMsg"]


def test_credits_run_out_with_402(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(credits=2)
    create(server)
    create(server)
    with api_client(server) as http:
        answer = http.post(CREATE, json=edit_request())
        assert answer.status_code == 402
        assert answer.json() == {"code": 402, "message": "insufficient credits"}
        server.update(credits=3)
        assert http.post(CREATE, json=edit_request()).status_code == 200
    counters = server.counters()
    assert (counters["creates"], counters["payment_required"]) == (3, 1)


def test_drop_creates_the_task_but_never_answers(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(drop_rate=1.0)
    with api_client(server) as http, pytest.raises(httpx.RemoteProtocolError):
        http.post(CREATE, json=edit_request())
    tasks = server.tasks()
    assert len(tasks) == 1 and tasks[0]["request"] == edit_request()
    counters = server.counters()
    assert (counters["creates"], counters["dropped"]) == (1, 1)
    server.update(drop_rate=0.0)
    create(server)  # the retry a careless client sends costs a second time
    assert server.counters()["duplicate_creates"] == 1


def test_garbage_answers_are_not_json(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(garbage_rate=1.0)
    with api_client(server) as http:
        answer = http.post(CREATE, json=edit_request())
        assert answer.status_code == 502
        assert answer.headers["content-type"] == "text/html"
        with pytest.raises(json.JSONDecodeError):
            json.loads(answer.content)
        server.update(errors_in_body=True)
        answer = http.get(QUERY + "task_nope")
        assert answer.status_code == 200 and answer.text.startswith("<html>")
    assert server.tasks() == []
    assert server.counters()["garbage"] == 2


def test_errors_in_body_come_as_http_200(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(errors_in_body=True, credits=0)
    with api_client(server) as http:
        answers = {
            401: http.get(QUERY + "task_nope", headers={"Authorization": "Bearer wrong"}),
            402: http.post(CREATE, json=edit_request()),
            404: http.get(QUERY + "task_nope"),
            422: http.post(CREATE, json=edit_request(image_size="7:5")),
        }
        server.update(error_rate=1.0)
        answers[500] = http.get(QUERY + "task_nope")
        server.update(error_rate=0.0, rate_limit=1)
        answers[429] = [http.get(QUERY + "task_nope") for _ in range(3)][-1]
    for code, answer in answers.items():
        assert answer.status_code == 200, code
        assert answer.json()["code"] == code
        assert "data" not in answer.json()
    assert answers[429].headers["Retry-After"] == "1"


def test_completed_state_replaces_success(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(completed_state=True)
    data = wait_until_done(server, create(server))
    assert data["state"] == "completed"
    assert server.tasks()[0]["state"] == "completed"
    with api_client(server) as http:
        assert http.get(result_url(data)).status_code == 200


def test_url_ttl_expires_result_files(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(url_ttl=0.3)
    url = result_url(wait_until_done(server, create(server)))
    with api_client(server) as http:
        assert http.get(url).status_code == 200
        time.sleep(0.35)
        assert http.get(url).status_code == 404
    assert server.counters()["not_found"] == 1


def test_image_size_sets_the_long_side(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(image_size=100)
    data = wait_until_done(server, create(server, edit_request(image_size="16:9")))
    with api_client(server) as http:
        assert read_png(http.get(result_url(data)).content)[:2] == (100, 56)


def scenario(server: SandboxServer) -> list[str]:
    """What a fixed sequence of requests saw: statuses, task id suffixes, final states."""
    seen = []
    with api_client(server) as http:
        for _ in range(30):
            answer = http.post(CREATE, json=edit_request())
            seen.append(str(answer.status_code))
            if answer.status_code == 200:
                seen.append(answer.json()["data"]["taskId"][-8:])
    time.sleep(0.06)
    return seen + [task["state"] for task in server.tasks()]


def test_a_seed_repeats_a_scenario_exactly(sandbox_factory: SandboxFactory) -> None:
    faults: dict[str, Any] = {"error_rate": 0.2, "garbage_rate": 0.2, "fail_rate": 0.3}
    first = scenario(sandbox_factory(seed=7, **faults))
    second = scenario(sandbox_factory(seed=7, **faults))
    other = scenario(sandbox_factory(seed=8, **faults))
    assert first == second
    assert first != other
    assert {"200", "500", "502", "success", "fail"} <= set(first)
