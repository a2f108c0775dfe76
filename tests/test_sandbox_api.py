"""The sandbox speaks the documented Ruxa API over a real loopback socket."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest
from helpers import (
    SandboxFactory,
    api_client,
    create,
    edit_request,
    eventually,
    jpeg_size,
    read_png,
    result_url,
    wait_until_done,
)

from ruxa_batch.sandbox import SandboxConfig, SandboxServer
from ruxa_batch.sandbox.api import Task
from ruxa_batch.sandbox.callbacks import is_loopback_url, post_json
from ruxa_batch.sandbox.rules import Output

# The examples of ruxa-api.md, verbatim.
DOC_CREATE = (
    '{"code": 200, "message": "success", "data": '
    '{"taskId": "task_gemini-2.5-flash-image_1766304530229_cf4dafd2"}}'
)
DOC_QUERY = (
    '{"code": 200, "message": "success", "data": {"taskId": "...", "state": "success", '
    '"resultJson": "{\\"resultUrls\\":[\\"https://cdn.example.com/image.png\\"]}"}}'
)
TASK_ID = re.compile(r"task_gemini-2\.5-flash-image_\d{13}_[0-9a-f]{8}")


def test_create_answer_is_the_documented_one_byte_for_byte(sandbox: SandboxServer) -> None:
    with api_client(sandbox) as http:
        answer = http.post("/api/v1/tasks/create", json=edit_request())
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    task_id = answer.json()["data"]["taskId"]
    assert TASK_ID.fullmatch(task_id)
    assert answer.text.replace(task_id, "task_gemini-2.5-flash-image_1766304530229_cf4dafd2") == (
        DOC_CREATE
    )


def test_query_answer_is_the_documented_one_byte_for_byte(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(minimal_fields=True)
    task_id = create(server)
    data = wait_until_done(server, task_id)
    url = result_url(data)
    assert url == f"{server.base_url}/files/{task_id}/1.png"
    with api_client(server) as http:
        text = http.get(f"/api/v1/tasks/query/{task_id}").text
    documented = text.replace(url, "https://cdn.example.com/image.png").replace(task_id, "...")
    assert documented == DOC_QUERY


def test_query_extras_follow_the_documented_keys(sandbox: SandboxServer) -> None:
    body = edit_request(output_format="jpeg", image_size="16:9")
    task_id = create(sandbox, body)
    with api_client(sandbox) as http:
        early = http.get(f"/api/v1/tasks/query/{task_id}").json()["data"]
    assert list(early) == ["taskId", "state", "resultJson", "createTime", "param"]
    assert early["resultJson"] == ""
    data = wait_until_done(sandbox, task_id)
    assert list(data) == [
        "taskId",
        "state",
        "resultJson",
        "costTime",
        "createTime",
        "completeTime",
        "param",
    ]
    assert isinstance(data["resultJson"], str) and isinstance(data["param"], str)
    assert json.loads(data["param"]) == body
    assert data["completeTime"] - data["createTime"] == data["costTime"] == 50
    assert str(data["createTime"]) in task_id


def test_state_follows_elapsed_time() -> None:
    task = Task(
        task_id="t",
        request={},
        body_hash="",
        output=Output("png", "1:1"),
        width=1,
        height=1,
        created=100.0,
        create_ms=0,
        duration=10.0,
        fail=None,
        callback_url=None,
    )
    assert [task.state(100.0 + t) for t in (0, 0.99, 1, 2.99, 3, 9.99, 10, 99)] == [
        "waiting",
        "waiting",
        "queuing",
        "queuing",
        "generating",
        "generating",
        "success",
        "success",
    ]


def test_a_task_moves_from_waiting_to_success(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory(generation_time=0.4)
    task_id = create(server)
    seen: list[str] = []
    with api_client(server) as http:
        while not seen or seen[-1] != "success":
            state = http.get(f"/api/v1/tasks/query/{task_id}").json()["data"]["state"]
            if not seen or seen[-1] != state:
                seen.append(state)
            time.sleep(0.01)
    assert seen == [s for s in ("waiting", "queuing", "generating", "success") if s in seen]
    assert len(seen) >= 3


@pytest.mark.parametrize(
    ("output_format", "image_size", "size"),
    [("png", "1:1", (64, 64)), ("png", "16:9", (64, 36)), ("jpeg", "9:16", (36, 64))],
)
def test_result_file_is_a_real_image_of_the_requested_shape(
    sandbox: SandboxServer, output_format: str, image_size: str, size: tuple[int, int]
) -> None:
    task_id = create(sandbox, edit_request(output_format=output_format, image_size=image_size))
    url = result_url(wait_until_done(sandbox, task_id))
    with api_client() as http:
        answer = http.get(url)
    assert answer.status_code == 200
    if output_format == "png":
        assert url.endswith("/1.png") and answer.headers["content-type"] == "image/png"
        assert read_png(answer.content)[:2] == size
    else:
        assert url.endswith("/1.jpg") and answer.headers["content-type"] == "image/jpeg"
        assert jpeg_size(answer.content) == size
    assert sandbox.counters()["downloads"] == 1


def test_auto_size_picks_a_documented_ratio(sandbox_factory: SandboxFactory) -> None:
    sandbox = sandbox_factory(generation_time=0)
    shapes = set()
    for _ in range(8):
        task_id = create(sandbox, edit_request(image_size="auto"))
        with api_client() as http:
            png = http.get(result_url(wait_until_done(sandbox, task_id))).content
        width, height, _ = read_png(png)
        assert max(width, height) == 64
        shapes.add((width, height))
    assert len(shapes) > 1


def test_identical_requests_make_two_tasks_with_different_pictures(sandbox: SandboxServer) -> None:
    first, second = create(sandbox), create(sandbox)
    assert first != second
    with api_client() as http:
        pictures = [
            http.get(result_url(wait_until_done(sandbox, t))).content for t in (first, second)
        ]
    assert pictures[0] != pictures[1]
    counters = sandbox.counters()
    assert (counters["creates"], counters["duplicate_creates"]) == (2, 1)
    tasks = sandbox.tasks()
    assert [t["taskId"] for t in tasks] == [first, second]
    assert tasks[0]["bodyHash"] == tasks[1]["bodyHash"]
    assert tasks[0]["request"] == edit_request()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input": edit_request()["input"]}, "model:"),
        ({**edit_request(), "model": "google/nano-banana-max"}, "model:"),
        (edit_request(prompt=""), "input.prompt:"),
        ({"model": "google/nano-banana-edit", "input": {"prompt": "x"}}, "input.image_urls:"),
        (edit_request(image_urls=[]), "input.image_urls:"),
        (edit_request(image_urls=["https://example.com/a.png"] * 11), "input.image_urls:"),
        (edit_request(image_urls=["ftp://example.com/a.png"]), "input.image_urls[0]:"),
        (edit_request(output_format="webp"), "input.output_format:"),
        (edit_request(image_size="7:5"), "input.image_size:"),
        (edit_request(aspect_ratio="1:1"), "input.aspect_ratio: unknown field"),
        ({**edit_request(), "callbackUrl": "http://x"}, "callbackUrl: unknown field"),
        ({**edit_request(), "callback_url": "not a url"}, "callback_url:"),
        ({**edit_request(), "callBackUrl": 5}, "callBackUrl:"),
        ([1, 2], "request body:"),
    ],
)
def test_invalid_requests_get_422_naming_the_field(
    sandbox: SandboxServer, body: Any, field: str
) -> None:
    with api_client(sandbox) as http:
        answer = http.post("/api/v1/tasks/create", json=body)
    assert answer.status_code == 422
    assert answer.json()["code"] == 422
    assert field in answer.json()["message"]
    assert list(answer.json()) == ["code", "message"]
    assert sandbox.counters()["creates"] == 0


def test_422_lists_the_allowed_values(sandbox: SandboxServer) -> None:
    with api_client(sandbox) as http:
        answer = http.post("/api/v1/tasks/create", json=edit_request(image_size="7:5"))
    assert answer.json() == {
        "code": 422,
        "message": "input.image_size: must be one of 1:1, 9:16, 16:9, 3:4, 4:3, 3:2, 2:3, "
        '5:4, 4:5, 21:9, auto (got "7:5")',
    }


def test_body_that_is_not_json_gets_422(sandbox: SandboxServer) -> None:
    with api_client(sandbox) as http:
        answer = http.post("/api/v1/tasks/create", content=b"{nope")
    assert answer.json() == {"code": 422, "message": "request body: not valid JSON"}


@pytest.mark.parametrize("header", [None, "Bearer sk-wrong", "sk-sandbox-raw", "Bearer"])
def test_missing_or_wrong_key_gets_401(sandbox: SandboxServer, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    base = sandbox.base_url
    with api_client() as http:
        created = http.post(f"{base}/api/v1/tasks/create", json=edit_request(), headers=headers)
        queried = http.get(f"{base}/api/v1/tasks/query/task_x", headers=headers)
    for answer in (created, queried):
        assert answer.status_code == 401
        assert answer.json() == {"code": 401, "message": "missing or invalid API key"}
    assert sandbox.counters()["unauthorized"] == 2


def test_api_key_is_random_per_start_unless_given(sandbox_factory: SandboxFactory) -> None:
    first, second = sandbox_factory(), sandbox_factory()
    assert first.api_key.startswith("sk-sandbox-") and first.api_key != second.api_key
    fixed = sandbox_factory(api_key="sk-test-123")
    assert fixed.api_key == "sk-test-123"
    create(fixed)


def test_unknown_things_get_404(sandbox_factory: SandboxFactory) -> None:
    # 0.5 s, not the fixture's 0.05: a busy machine can take that long over the first requests.
    sandbox = sandbox_factory(generation_time=0.5)
    task_id = create(sandbox)
    with api_client(sandbox) as http:
        assert http.get("/api/v1/tasks/query/task_nope").json() == {
            "code": 404,
            "message": "task not found: task_nope",
        }
        assert http.get("/api/v1/tasks/query/task_nope").status_code == 404
        assert http.get("/api/v1/nothing").status_code == 404
        assert http.get("/api/v1/tasks/create").status_code == 404
        assert http.get(f"/files/{task_id}/1.png").status_code == 404  # not finished yet
        wait_until_done(sandbox, task_id)
        assert http.get(f"/files/{task_id}/1.png").status_code == 200
        assert http.get(f"/files/{task_id}/2.png").status_code == 404
        assert http.get(f"/files/{task_id}/1.jpg").status_code == 404
        assert http.get("/files/task_nope/1.png").status_code == 404
    assert sandbox.counters()["not_found"] == 8


def test_sandbox_endpoints_need_no_key(sandbox: SandboxServer) -> None:
    task_id = create(sandbox)
    with api_client() as http:
        counters = http.get(f"{sandbox.base_url}/_sandbox/counters").json()
        tasks = http.get(f"{sandbox.base_url}/_sandbox/tasks").json()
    assert counters == sandbox.counters()
    for name in (
        "creates",
        "creates_rejected",
        "queries",
        "downloads",
        "rate_limited",
        "server_errors",
        "garbage",
        "dropped",
        "payment_required",
        "duplicate_creates",
        "callbacks_sent",
        "callbacks_skipped",
        "not_found",
    ):
        assert name in counters
    assert counters["creates"] == 1
    assert [task["taskId"] for task in tasks] == [task_id]
    assert set(tasks[0]) >= {"taskId", "state", "request", "createTime", "bodyHash"}


def test_connections_are_kept_alive(sandbox: SandboxServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(sandbox.base_url.rsplit(":", 1)[1]))
    headers = {"Authorization": f"Bearer {sandbox.api_key}", "Content-Type": "application/json"}
    connection.request("POST", "/api/v1/tasks/create", json.dumps(edit_request()), headers)
    first = connection.getresponse()
    task_id = json.loads(first.read())["data"]["taskId"]
    socket_before = connection.sock
    for _ in range(3):
        connection.request("GET", f"/api/v1/tasks/query/{task_id}", headers=headers)
        assert connection.getresponse().read()
    assert connection.sock is socket_before
    connection.close()


def test_stop_closes_the_port_and_open_connections(sandbox_factory: SandboxFactory) -> None:
    server = sandbox_factory()
    with api_client(server) as http:
        http.get("/_sandbox/counters")
        server.stop()
        with pytest.raises(httpx.TransportError):
            http.get("/_sandbox/counters")
    server.stop()  # twice is fine


def test_update_changes_behaviour_while_serving(sandbox: SandboxServer) -> None:
    sandbox.update(completed_state=True, generation_time=0.0)
    assert sandbox.config.completed_state
    assert wait_until_done(sandbox, create(sandbox))["state"] == "completed"
    with pytest.raises(ValueError, match="fail_rate"):
        sandbox.update(fail_rate=2.0)
    with pytest.raises(TypeError):
        sandbox.update(no_such_fault=1)


def test_config_rejects_impossible_values() -> None:
    bad: dict[str, Any]
    for bad in ({"error_rate": -0.1}, {"latency": -1}, {"rate_limit": 0}, {"image_size": 4}):
        with pytest.raises(ValueError):
            SandboxConfig(**bad)


# --- callbacks ---


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]], threading.Event]]:
    """A loopback HTTP server that records the JSON bodies POSTed to it."""
    received: list[dict[str, Any]] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
            arrived.set()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook?job=1", received, arrived
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("key", ["callback_url", "callBackUrl"])
def test_callback_is_posted_to_a_loopback_receiver(
    sandbox: SandboxServer,
    receiver: tuple[str, list[dict[str, Any]], threading.Event],
    key: str,
) -> None:
    url, received, arrived = receiver
    task_id = create(sandbox, {**edit_request(), key: url})
    assert arrived.wait(5)
    assert len(received) == 1
    payload = received[0]
    assert list(payload) == ["code", "message", "data"]
    assert payload["data"]["taskId"] == task_id
    assert payload["data"]["state"] == "success"
    assert result_url(payload["data"]).endswith(f"/files/{task_id}/1.png")
    assert eventually(lambda: sandbox.counters()["callbacks_sent"] == 1)
    assert sandbox.tasks()[0]["callbackUrl"] == url


def test_callback_to_another_machine_is_never_sent(sandbox: SandboxServer) -> None:
    create(sandbox, {**edit_request(), "callback_url": "https://example.com/hook"})
    wait_until_done(sandbox, sandbox.tasks()[0]["taskId"])
    assert eventually(lambda: sandbox.counters()["callbacks_skipped"] == 1)
    counters = sandbox.counters()
    assert (counters["callbacks_skipped"], counters["callbacks_sent"]) == (1, 0)
    assert counters["callbacks_failed"] == 0


def test_unreachable_loopback_receiver_counts_as_failed(sandbox: SandboxServer) -> None:
    create(sandbox, {**edit_request(), "callback_url": "http://127.0.0.1:9/hook"})
    assert eventually(lambda: sandbox.counters()["callbacks_failed"] == 1)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:8080/hook", True),
        ("http://127.3.4.5/hook", True),
        ("http://localhost:9000/", True),
        ("http://[::1]:9000/", True),
        ("https://example.com/hook", False),
        ("http://10.0.0.1/", False),
        ("http://127.0.0.1.nip.io/", False),
        ("http://127.0.0.1@example.com/", False),
        ("http://localhost.example.com/", False),
        ("http://[::ffff:10.0.0.1]/", False),
        ("not a url", False),
    ],
)
def test_only_loopback_hosts_count_as_loopback(url: str, loopback: bool) -> None:
    assert is_loopback_url(url) is loopback


def test_post_json_refuses_other_hosts() -> None:
    with pytest.raises(ValueError, match="refusing"):
        post_json("http://example.com/hook", b"{}")
