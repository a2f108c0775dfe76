"""Helpers the test modules share: paths, sandbox requests, image readers, engine runs.

Fixtures live in ``conftest.py`` and ``fixtures_sandbox.py``; plain functions live here, so no
test module imports another.
"""

from __future__ import annotations

import json
import ssl
import struct
import time
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from ruxa_batch.client import RuxaClient
from ruxa_batch.decide import Options
from ruxa_batch.engine import Engine, EngineOptions
from ruxa_batch.manifest import load_manifest
from ruxa_batch.ratelimit import RateLimiter
from ruxa_batch.sandbox import SandboxServer
from ruxa_batch.state import StateStore
from ruxa_batch.timing import Timer

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent

MODEL = "google/nano-banana-edit"


class SandboxFactory(Protocol):
    """``sandbox_factory(fail_rate=0.5, seed=1)``: a started server."""

    def __call__(self, **fields: Any) -> SandboxServer: ...


@dataclass(frozen=True)
class SandboxProcess:
    """A sandbox serving from another process (see the ``sandbox_process`` fixture)."""

    base_url: str
    api_key: str

    def counters(self) -> dict[str, int]:
        """The sandbox's counters, from ``GET /_sandbox/counters``."""
        with urllib.request.urlopen(self.base_url + "/_sandbox/counters", timeout=10) as answer:
            counters: dict[str, int] = json.load(answer)
        return counters


# Building the CA store costs ~20 ms per httpx client; the sandbox is plain HTTP anyway.
_TLS = ssl.create_default_context()


def api_client(server: SandboxServer | None = None, *, key: str | None = None) -> httpx.Client:
    """An httpx client for ``server`` that sends its key (or ``key``); no server: no base URL."""
    if server is None:
        return httpx.Client(verify=_TLS)
    token = key if key is not None else server.api_key
    return httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {token}"}, verify=_TLS
    )


def edit_request(**input_fields: Any) -> dict[str, Any]:
    """A valid create body for the edit model; keyword arguments replace ``input`` fields."""
    return {
        "model": MODEL,
        "input": {
            "prompt": "Change the background to pixel art style",
            "image_urls": ["https://example.com/cat.png"],
            **input_fields,
        },
    }


def create(server: SandboxServer, body: dict[str, Any] | None = None) -> str:
    """Create a task (a valid edit request unless ``body``); its id."""
    with api_client(server) as http:
        answer = http.post("/api/v1/tasks/create", json=body or edit_request())
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["data"]["taskId"]
    return task_id


def wait_until_done(server: SandboxServer, task_id: str) -> dict[str, Any]:
    """Poll until the task ends; its ``data`` object."""
    with api_client(server) as http:
        for _ in range(200):
            data: dict[str, Any] = http.get(f"/api/v1/tasks/query/{task_id}").json()["data"]
            if data["state"] in ("success", "completed", "fail"):
                return data
            time.sleep(0.01)
    raise AssertionError(f"{task_id} never finished")


def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``condition()`` becomes true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def result_url(data: dict[str, Any]) -> str:
    """The first result URL of a finished task's ``data``."""
    url: str = json.loads(data["resultJson"])["resultUrls"][0]
    return url


def read_png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the inflated scanlines of an 8-bit RGB PNG; checks every chunk CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    position, chunks = 8, []
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        position += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    return width, height, raw


def jpeg_size(data: bytes) -> tuple[int, int]:
    """Width and height from a baseline JPEG's SOF0, after checking SOI/EOI and segment lengths."""
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9", "not a complete JPEG"
    position = 2
    while position < len(data):
        marker, length = struct.unpack(">HH", data[position : position + 4])
        if marker == 0xFFC0:
            height, width = struct.unpack(">HH", data[position + 5 : position + 9])
            return width, height
        assert marker >> 8 == 0xFF and marker != 0xFFDA, f"no SOF0 before marker {marker:04x}"
        position += 2 + length
    raise AssertionError("no SOF0 segment")


# -- runs of the engine against a sandbox: through the CLI, or an Engine built here ----------------


def write_manifest(folder: Path, count: int, *, variants: int = 1, extra: str = "") -> Path:
    rows = "".join(f"      - {{n: '{i:03d}'}}\n" for i in range(count))
    path = folder / "m.yaml"
    path.write_text(
        "version: 1\nname: t\n" + extra + "output:\n  filename: '{id}-v{variant}-{n}.{ext}'\n"
        "jobs:\n  - id: 'job-{n}'\n    prompt: 'Edit picture {n}'\n"
        "    images: ['https://cdn.example.com/{n}.png']\n"
        f"    variants: {variants}\n    rows:\n" + rows
    )
    return path


def run_args(server: Any, *extra: str) -> list[str]:
    return [
        "ruxa-batch",
        "run",
        "m.yaml",
        "--base-url",
        server.base_url,
        "--no-progress",
        "--poll-interval",
        "0.05",
        "--rate-limit",
        "1000",
        "--retry-backoff",
        "0.01",
        *extra,
    ]


def results(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / "out" / "t" / "results.json").read_text())
    return document


def engine_for(
    manifest_path: Path,
    server: Any,
    tmp: Path,
    *,
    timer: Timer | None = None,
    decisions: Options | None = None,
    **options: Any,
) -> Engine:
    manifest = load_manifest(manifest_path)
    store = StateStore.open_for_run(tmp / "state.sqlite")
    timer = timer or Timer()
    client = RuxaClient(
        base_url=server.base_url,
        api_key=server.api_key,
        concurrency=4,
        limiter=RateLimiter(1000, timer=timer),
    )
    settings = {
        "output_dir": tmp / "out",
        "decisions": decisions or Options(max_attempts=3),
        "poll_interval": 0.05,
        "task_timeout": 30.0,
        "max_download_bytes": 10**6,
        "backoff_base": 0.01,
        **options,
    }
    return Engine(manifest, store, client, EngineOptions(**settings), timer=timer)


async def drive(engine: Engine) -> None:
    try:
        await engine.run()
    finally:
        await engine.client.aclose()
        engine.store.close()


def write_named_manifest(folder: Path, name: str, count: int) -> Path:
    """A manifest of ``count`` jobs without variants, each with its own prompt and image."""
    rows = "\n".join(f'      - {{n: "{index:03d}"}}' for index in range(count))
    path = folder / "m.yaml"
    path.write_text(
        f"version: 1\n"
        f"name: {name}\n"
        f"jobs:\n"
        f'  - id: "job-{{n}}"\n'
        f'    prompt: "Edit number {{n}}: put the product on a pixel-art background"\n'
        f'    images: ["https://cdn.example.com/products/{{n}}.png"]\n'
        f"    rows:\n{rows}\n",
        encoding="utf-8",
    )
    return path
