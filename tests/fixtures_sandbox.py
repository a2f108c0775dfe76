"""Fixtures that start the project's sandbox API server on a loopback port.

``sandbox`` is a healthy server with fast generation; ``sandbox_factory(**fields)`` starts one
with any :class:`~ruxa_batch.sandbox.SandboxConfig` fields (faults) set. Every server started
is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import SandboxFactory

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
