"""Fixtures that start the project's sandbox API server on a loopback port.

``sandbox`` is a healthy server with fast generation; ``sandbox_factory(**fields)`` starts one
with any :class:`~ruxa_batch.sandbox.SandboxConfig` fields (faults) set; ``sandbox_process`` is
a healthy one in a process of its own, for load tests. Every server started is stopped at
teardown.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import SandboxFactory, SandboxProcess

from ruxa_batch.sandbox import SandboxConfig, SandboxServer

FAST_GENERATION = 0.05  # seconds; the default of the fixtures, not of the sandbox


@pytest.fixture
def sandbox_factory() -> Iterator[SandboxFactory]:
    """Start sandboxes configured by ``SandboxConfig`` keyword arguments; all stop at teardown."""
    started: list[SandboxServer] = []

    def start(**fields: Any) -> SandboxServer:
        config = SandboxConfig(**{"generation_time": FAST_GENERATION, **fields})
        server = SandboxServer(config, host="127.0.0.1", port=0).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def sandbox(sandbox_factory: SandboxFactory) -> SandboxServer:
    """A healthy sandbox (no faults) whose tasks finish after 0.05 s."""
    return sandbox_factory()


@pytest.fixture
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """A healthy sandbox in its own process (as users run it), on a free loopback port, whose
    tasks finish after 0.05 s. A load test's client then does not share a GIL with it."""
    key = "sk-sandbox-load-test"
    errors = tmp_path_factory.mktemp("sandbox") / "stderr.txt"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ruxa_batch",
                "sandbox",
                "--port",
                "0",
                "--generation-time",
                str(FAST_GENERATION),
                "--api-key",
                key,
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    first = process.stdout.readline()
    match = re.search(r"serving at (http://127\.0\.0\.1:\d+)", first)
    try:
        assert match, first + errors.read_text()
        yield SandboxProcess(match.group(1), key)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()
