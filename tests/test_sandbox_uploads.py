"""The sandbox as an upload target, and as a service that reads (loopback) input pictures.

All over real loopback sockets: ``PUT``/``GET``/``HEAD /uploads/<sha256>.<ext>``, creates whose
inputs cannot be read, and results drawn from the input they were given.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    REPO,
    api_client,
    create,
    edit_request,
    jpeg_size,
    result_url,
    wait_until_done,
)

from ruxa_batch.sandbox import SandboxConfig, SandboxServer, images, inputs
from ruxa_batch.sandbox.derive import frame_colour, tint_colour, tinted
from ruxa_batch.sandbox.pngread import decode_png
from ruxa_batch.sandbox.store import DATA_FILENAME, MIGRATIONS, SandboxStore

SLOW = 0.8  # seconds the picture server takes for paths under /slow
Served = dict[str, tuple[int, str, bytes]]  # path -> (status, content type, body)


def picture(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    """A PNG of one colour, with a different colour in one corner (so it is not uniform)."""
    rows = [bytearray(bytes(colour) * width) for _ in range(height)]
    rows[0][0:3] = b"\x00\x00\x00"
    return images.encode_png(width, height, rows)


RED = picture(40, 30, (200, 40, 40))
BLUE = picture(40, 30, (30, 60, 220))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(server: SandboxServer, data: bytes, ext: str = "png") -> httpx.Response:
    with api_client(server) as http:
        return http.put(f"/uploads/{sha(data)}.{ext}", content=data)


def centre(data: bytes) -> tuple[int, int, int]:
    decoded = decode_png(data)
    return decoded.pixel(decoded.width // 2, decoded.height // 2)


def result(server: SandboxServer, *urls: str, **fields: Any) -> tuple[dict[str, Any], bytes]:
    """Create a task on ``urls``; its finished ``data`` and (on success) its result's bytes."""
    task_id = create(server, edit_request(image_urls=list(urls), **fields))
    data = wait_until_done(server, task_id)
    if data["state"] != "success":
        return data, b""
    return data, httpx.get(result_url(data)).content


@pytest.fixture
def pictures() -> Iterator[tuple[str, Served]]:
    """A loopback web server answering what the test puts in the dict; its base URL."""
    served: Served = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/slow"):
                time.sleep(SLOW)
            status, kind, body = served.get(self.path.split("?")[0], (404, "text/plain", b"no"))
            self.send_response(status)
            if status in (301, 302):
                self.send_header("Location", kind)
            else:
                self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(ThreadingHTTPServer):
        daemon_threads = False  # server_close() waits for a slow answer still being sent

        def handle_error(self, request: Any, client_address: Any) -> None:
            if not isinstance(sys.exc_info()[1], ConnectionError):  # the reader gave up: fine
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", served
    server.shutdown()
    server.server_close()


# --- the upload route ---------------------------------------------------------------------------


def test_an_upload_is_served_back_byte_for_byte(sandbox: SandboxServer) -> None:
    first = upload(sandbox, RED)
    assert first.status_code == 201
    assert first.headers["content-type"] == "application/json"
    url = f"{sandbox.base_url}/uploads/{sha(RED)}.png"
    assert first.json() == {"url": url}
    again = upload(sandbox, RED)
    assert (again.status_code, again.json()) == (200, {"url": url})

    fetched = httpx.get(url)  # no key: the API fetches it like any public URL
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.content == RED
    assert sandbox.counters()["uploads"] == 1


def test_head_tells_the_size_and_type_without_a_body(sandbox: SandboxServer) -> None:
    jpeg = images.render("a jpeg", width=16, height=16, fmt="jpeg")
    assert upload(sandbox, jpeg, "jpg").status_code == 201
    connection = http.client.HTTPConnection("127.0.0.1", sandbox.port, timeout=5)
    try:
        for name, status in ((f"{sha(jpeg)}.jpg", 200), (f"{sha(RED)}.png", 404)):
            connection.request("HEAD", f"/uploads/{name}")
            answer = connection.getresponse()
            assert answer.status == status
            assert answer.read() == b""  # and the keep-alive connection is still in step
            if status == 200:
                assert answer.getheader("Content-Length") == str(len(jpeg))
                assert answer.getheader("Content-Type") == "image/jpeg"
        connection.request("GET", f"/uploads/{sha(jpeg)}.jpg")
        assert connection.getresponse().read() == jpeg
    finally:
        connection.close()


def test_uploads_are_refused_like_the_api_refuses(sandbox: SandboxServer) -> None:
    name = f"{sha(RED)}.png"
    with api_client(sandbox) as http:
        wrong_hash = http.put(f"/uploads/{sha(BLUE)}.png", content=RED)
        assert wrong_hash.status_code == 400
        assert wrong_hash.json() == {
            "code": 400,
            "message": f"the body's sha256 is {sha(RED)}, not the name's",
        }
        text = b"hello, not a picture"
        not_picture = http.put(f"/uploads/{sha(text)}.png", content=text)
        assert not_picture.status_code == 415
        assert not_picture.json() == {"code": 415, "message": "not a PNG, JPEG or WebP image"}
        wrong_kind = http.put(f"/uploads/{sha(RED)}.jpg", content=RED)
        assert wrong_kind.status_code == 415
        assert wrong_kind.json()["message"] == "the bytes are image/png, not .jpg"
    with api_client(sandbox, key="sk-wrong") as http:
        denied = http.put(f"/uploads/{name}", content=RED)
    assert denied.status_code == 401
    assert denied.json() == {"code": 401, "message": "missing or invalid API key"}
    assert httpx.put(f"{sandbox.base_url}/uploads/{name}", content=RED).status_code == 401
    assert httpx.get(f"{sandbox.base_url}/uploads/{name}").status_code == 404  # nothing stored
    assert sandbox.counters()["uploads_rejected"] == 3


def test_an_upload_without_the_key_is_a_real_401_even_when_api_errors_hide_in_bodies(
    sandbox_factory: Any,
) -> None:
    server = sandbox_factory(errors_in_body=True)
    assert httpx.put(f"{server.base_url}/uploads/{sha(RED)}.png", content=RED).status_code == 401


def test_too_large_an_upload_is_413(sandbox: SandboxServer) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(20 * 1024 * 1024)
    answer = upload(sandbox, big)
    assert answer.status_code == 413
    assert answer.json() == {"code": 413, "message": "upload larger than 20 MB"}


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fsandbox.sqlite",
        "../sandbox.sqlite",
        f"{'A' * 64}.png",
        f"{'a' * 63}.png",
        f"{'a' * 64}.jpeg",
        f"{'a' * 64}.PNG",
        f"{'a' * 64}.png/x",
        f"{'a' * 64}",
        "",
    ],
)
def test_names_that_are_not_sha256_dot_ext_are_404(sandbox: SandboxServer, name: str) -> None:
    assert httpx.get(f"{sandbox.base_url}/uploads/{name}").status_code == 404
    with api_client(sandbox) as http:
        assert http.put(f"/uploads/{name}", content=RED).status_code == 404


def test_uploads_survive_a_restart_on_the_same_data(hermetic: Path) -> None:
    data = hermetic / "sandbox-data"
    config = SandboxConfig(generation_time=0.05)
    with SandboxServer(config, data_dir=data) as first:
        assert upload(first, RED).status_code == 201
        task_id = create(
            first, edit_request(image_urls=[f"{first.base_url}/uploads/{sha(RED)}.png"])
        )
        done = wait_until_done(first, task_id)
        before = httpx.get(result_url(done)).content
    stored = data / "uploads" / f"{sha(RED)}.png"
    assert stored.read_bytes() == RED
    assert [path.name for path in stored.parent.iterdir()] == [stored.name]  # no temporary left
    with SandboxServer(config, data_dir=data) as second:
        assert httpx.get(f"{second.base_url}/uploads/{sha(RED)}.png").content == RED
        assert upload(second, RED).status_code == 200  # it already has it
        after = wait_until_done(second, task_id)
        assert httpx.get(result_url(after)).content == before  # still drawn from the input


def test_inputs_read_from_elsewhere_are_kept_for_the_results(
    hermetic: Path, pictures: tuple[str, Served]
) -> None:
    base, served = pictures
    served["/blue.png"] = (200, "image/png", BLUE)
    data = hermetic / "sandbox-data"
    config = SandboxConfig(generation_time=0.05)
    with SandboxServer(config, data_dir=data) as first:
        task_id = create(first, edit_request(image_urls=[f"{base}/blue.png"]))
        before = httpx.get(result_url(wait_until_done(first, task_id))).content
    assert (data / "inputs" / f"{sha(BLUE)}.png").read_bytes() == BLUE
    del served["/blue.png"]  # gone from where it was read: the sandbox kept its own copy
    with SandboxServer(config, data_dir=data) as second:
        after = httpx.get(result_url(wait_until_done(second, task_id))).content
        assert after == before
        assert httpx.get(f"{second.base_url}/uploads/{sha(BLUE)}.png").status_code == 404


# --- inputs read at create ----------------------------------------------------------------------


def test_an_input_that_cannot_be_read_fails_the_task_naming_it(
    sandbox: SandboxServer, pictures: tuple[str, Served]
) -> None:
    base, served = pictures
    served["/good.png"] = (200, "image/png", RED)
    served["/notes.txt"] = (200, "text/plain", b"just some text")
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/x.png"
    good = f"{base}/good.png"
    cases = [
        (
            [good, f"{base}/missing.png?X-Amz-Signature=secret"],
            2,
            f"{base}/missing.png",
            "HTTP 404",
        ),
        ([f"{base}/notes.txt"], 1, f"{base}/notes.txt", "not a PNG, JPEG or WebP image"),
        ([good, good, closed], 3, closed, "connection refused"),
        (
            [f"{sandbox.base_url}/uploads/{sha(BLUE)}.png"],
            1,
            f"{sandbox.base_url}/uploads/{sha(BLUE)}.png",
            "HTTP 404",
        ),
    ]
    for urls, number, shown, reason in cases:
        data, _ = result(sandbox, *urls)
        assert data["state"] == "fail", urls
        assert data["failCode"] == "400"
        assert data["failMsg"] == f"input image {number} ({shown}) could not be read: {reason}"
        assert "secret" not in data["failMsg"]
    assert sandbox.counters()["inputs_unreadable"] == len(cases)


def test_a_slow_input_holds_up_only_its_own_create(
    sandbox: SandboxServer, pictures: tuple[str, Served], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, served = pictures
    served["/slow.png"] = (200, "image/png", RED)
    slow: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: slow.append(result(sandbox, f"{base}/slow.png")[0]))
    started = time.monotonic()
    thread.start()
    time.sleep(0.1)
    other = create(sandbox)  # while the slow input is being read
    assert time.monotonic() - started < SLOW
    assert wait_until_done(sandbox, other)["state"] == "success"
    thread.join()
    assert slow[0]["state"] == "success"

    monkeypatch.setattr(inputs, "READ_TIMEOUT", 0.2)
    data, _ = result(sandbox, f"{base}/slow.png")
    assert data["failMsg"] == f"input image 1 ({base}/slow.png) could not be read: timed out"


def test_redirects_are_followed_only_on_this_machine(
    sandbox: SandboxServer, pictures: tuple[str, Served]
) -> None:
    base, served = pictures
    served["/good.png"] = (200, "image/png", RED)
    served["/moved.png"] = (302, f"{base}/good.png", b"")
    served["/away.png"] = (302, "https://cdn.example.com/x.png", b"")
    data, _ = result(sandbox, f"{base}/moved.png")
    assert data["state"] == "success"
    data, _ = result(sandbox, f"{base}/away.png")
    assert data["failMsg"] == (
        f"input image 1 ({base}/away.png) could not be read: redirected off this machine"
    )


def test_inputs_off_this_machine_are_never_fetched(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[Any] = []
    connected: list[Any] = []
    real_lookup, real_connect = socket.getaddrinfo, socket.socket.connect

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        return real_lookup(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> Any:
        connected.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    urls = [
        "https://cdn.example.com/catalog/2026/products/mug-ember.png",
        "http://10.0.0.1/x.png",
        "http://[2001:db8::1]/x.png",
    ]
    data, output = result(sandbox, *urls)
    assert data["state"] == "success"
    assert decode_png(output).pixel(0, 0) != frame_colour(sha(RED))
    assert not [host for host in looked_up if host not in ("127.0.0.1", "localhost")]
    assert {address[0] for address in connected} <= {"127.0.0.1"}
    assert sandbox.counters()["inputs_read"] == 0


def test_the_sandbox_reads_its_own_uploads_without_http(
    sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert upload(sandbox, RED).status_code == 201

    def no_http(url: str, deadline: float) -> bytes:
        raise AssertionError(f"fetched {url} over HTTP")

    monkeypatch.setattr(inputs, "_get", no_http)
    for host in ("127.0.0.1", "localhost"):
        data, _ = result(sandbox, f"http://{host}:{sandbox.port}/uploads/{sha(RED)}.png")
        assert data["state"] == "success"


# --- results drawn from the input ---------------------------------------------------------------


def test_the_result_is_the_input_tinted_and_framed(
    sandbox_factory: Any, pictures: tuple[str, Served]
) -> None:
    server = sandbox_factory(image_size=48)
    assert upload(server, RED).status_code == 201
    red_url = f"{server.base_url}/uploads/{sha(RED)}.png"
    data, output = result(server, red_url, image_size="16:9")
    decoded = decode_png(output)
    assert (decoded.width, decoded.height) == (48, 27)
    tint = tint_colour(data["taskId"])
    assert centre(output) == tuple(tinted(v, t) for v, t in zip((200, 40, 40), tint, strict=True))
    assert decoded.pixel(0, 0) == tuple(frame_colour(sha(RED)))  # the frame, the input's colour

    again, second = result(server, red_url, image_size="16:9")
    assert second != output  # every task differs: another tint, another id in the file
    assert centre(second) == tuple(
        tinted(v, t) for v, t in zip((200, 40, 40), tint_colour(again["taskId"]), strict=True)
    )

    base, served = pictures  # read over HTTP from another loopback server: the same rule
    served["/blue.png"] = (200, "image/png", BLUE)
    blue, output = result(server, f"{base}/blue.png")
    assert centre(output) == tuple(
        tinted(v, t) for v, t in zip((30, 60, 220), tint_colour(blue["taskId"]), strict=True)
    )
    assert decode_png(output).pixel(0, 0) == tuple(frame_colour(sha(BLUE)))


def test_jpeg_results_and_auto_size_follow_the_input(sandbox_factory: Any) -> None:
    server = sandbox_factory(image_size=40)
    assert upload(server, RED).status_code == 201
    url = f"{server.base_url}/uploads/{sha(RED)}.png"
    _, output = result(server, url, output_format="jpeg")
    assert jpeg_size(output) == (40, 40)
    _, output = result(server, url, image_size="auto")
    decoded = decode_png(output)
    assert (decoded.width, decoded.height) == (40, 30)  # the input is 40x30


def test_an_input_it_cannot_decode_still_frames_the_result(sandbox: SandboxServer) -> None:
    jpeg = images.render("an input photo", width=24, height=24, fmt="jpeg")
    assert upload(sandbox, jpeg, "jpg").status_code == 201
    _, output = result(sandbox, f"{sandbox.base_url}/uploads/{sha(jpeg)}.jpg")
    assert decode_png(output).pixel(0, 0) == tuple(frame_colour(sha(jpeg)))


def test_a_sample_photo_makes_a_result_drawn_from_it(sandbox: SandboxServer) -> None:
    mug = (REPO / "manifests" / "photos" / "mug-ember.png").read_bytes()
    assert upload(sandbox, mug).status_code == 201
    data, output = result(sandbox, f"{sandbox.base_url}/uploads/{sha(mug)}.png")
    expected = decode_png(mug).pixel(160, 120)  # the sample's centre, where the mug is
    tint = tint_colour(data["taskId"])
    wanted = [tinted(v, t) for v, t in zip(expected, tint, strict=True)]
    # Scaled by nearest neighbour: the centre comes from a pixel next to the sample's centre.
    assert all(abs(a - b) <= 4 for a, b in zip(centre(output), wanted, strict=True))


def test_every_input_field_is_read_in_order() -> None:
    request_input = {"image_urls": ["http://a/1.png", 7], "image_input": ["http://b/2.png"]}
    assert inputs.input_urls(request_input) == ["http://a/1.png", "http://b/2.png"]
    assert inputs.shown("http://127.0.0.1:9/x.png?sig=1#frag") == "http://127.0.0.1:9/x.png"


def test_a_data_file_of_the_first_schema_is_migrated(hermetic: Path) -> None:
    data = hermetic / "old-data"
    data.mkdir()
    with sqlite3.connect(data / DATA_FILENAME) as old:
        old.executescript(MIGRATIONS[0])
        old.execute(
            "INSERT INTO tasks VALUES ('task_old', '{}', 'h', 'png', '1:1', 8, 8, 1, 0.1, "
            "NULL, NULL, NULL)"
        )
        old.execute("PRAGMA user_version = 1")
    old.close()
    store = SandboxStore(data)
    try:
        (task,) = store.tasks()
        assert (task.task_id, task.input_sha256, task.input_ext) == ("task_old", None, None)
    finally:
        store.close()
