"""Shared fixtures: every test is hermetic (own temp dirs, no real network, no user home)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ruxa_batch.cli import main

pytest_plugins = ["fixtures_sandbox"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first. The two workers take tests a couple at a time (see addopts in
    pyproject.toml), so the long ones start early and the short ones fill in around them;
    in file order, a 10-second load test could start last and run on while the other worker
    sat idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def hermetic(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Run each test in its own working directory, HOME and TMPDIR, with no RUXA_* settings."""
    base = tmp_path_factory.mktemp("hermetic")
    for name in ("home", "tmp", "work"):
        (base / name).mkdir()
    monkeypatch.setenv("HOME", str(base / "home"))
    monkeypatch.setenv("TMPDIR", str(base / "tmp"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "home" / ".cache"))
    for name in list(os.environ):
        if name.startswith("RUXA_"):
            monkeypatch.delenv(name)
    # Loopback only: a proxy setting on the machine must not route test traffic elsewhere.
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(base / "tmp"))
    monkeypatch.chdir(base / "work")
    yield base / "work"


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], Any]:
    """Point RUXA_API_KEY at a sandbox's key."""

    def use(server: Any) -> Any:
        monkeypatch.setenv("RUXA_API_KEY", server.api_key)
        return server

    return use


@dataclass
class Result:
    """What one command line produced."""

    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[[Sequence[str]], Result]:
    """Run a command line in-process: ``run(["ruxa-batch", "validate", path])``."""

    def runner(argv: Sequence[str]) -> Result:
        assert argv[0] == "ruxa-batch"
        capsys.readouterr()
        code = main([str(arg) for arg in argv[1:]])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return runner
