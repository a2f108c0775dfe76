"""The fault flags, the foreground server and the documentation of every flag."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
from click.testing import CliRunner

from ruxa_batch.addresses import is_loopback
from ruxa_batch.sandbox import SandboxConfig, serve
from ruxa_batch.sandbox.options import config_from_options, sandbox_options

DOCS = Path(__file__).parent.parent / "README.md"


def make_command(seen: list[SandboxConfig]) -> click.Command:
    @click.command()
    @click.option("--host", default="127.0.0.1")
    @sandbox_options
    def command(**values: Any) -> None:
        seen.append(config_from_options(**values))  # --host is not a sandbox field: ignored

    return command


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_every_config_field_has_a_flag_with_help() -> None:
    help_text = CliRunner().invoke(make_command([]), ["--help"]).output
    for field in fields(SandboxConfig):
        assert flag(field.name) in help_text, field.name
    assert help_text.count("Sandbox:") == len(fields(SandboxConfig))


def test_no_flags_give_the_default_config() -> None:
    seen: list[SandboxConfig] = []
    result = CliRunner().invoke(make_command(seen), [])
    assert result.exit_code == 0, result.output
    assert seen == [SandboxConfig()]


def test_flags_set_their_fields() -> None:
    seen: list[SandboxConfig] = []
    args = [
        "--generation-time=0.5",
        "--latency=0.1",
        "--rate-limit=5",
        "--error-rate=0.1",
        "--fail-rate=0.2",
        "--credits=10",
        "--drop-rate=0.3",
        "--garbage-rate=0.4",
        "--errors-in-body",
        "--completed-state",
        "--minimal-fields",
        "--url-ttl=60",
        "--seed=42",
        "--api-key=sk-test",
        "--image-size=128",
        "--host=127.0.0.1",
    ]
    result = CliRunner().invoke(make_command(seen), args)
    assert result.exit_code == 0, result.output
    assert seen == [
        SandboxConfig(
            generation_time=0.5,
            latency=0.1,
            rate_limit=5,
            error_rate=0.1,
            fail_rate=0.2,
            credits=10,
            drop_rate=0.3,
            garbage_rate=0.4,
            errors_in_body=True,
            completed_state=True,
            minimal_fields=True,
            url_ttl=60,
            seed=42,
            api_key="sk-test",
            image_size=128,
        )
    ]


def test_a_prefix_keeps_the_flags_apart_from_the_commands_own() -> None:
    seen: list[SandboxConfig] = []

    @click.command()
    @click.option("--rate-limit", type=float)
    @sandbox_options(prefix="sandbox")
    def command(rate_limit: float | None, **values: Any) -> None:
        assert rate_limit == 3.0
        seen.append(config_from_options(prefix="sandbox", **values))

    runner = CliRunner()
    help_text = runner.invoke(command, ["--help"]).output
    assert "--sandbox-rate-limit" in help_text and "--sandbox-fail-rate" in help_text
    args = ["--rate-limit=3", "--sandbox-rate-limit=7", "--sandbox-errors-in-body"]
    result = runner.invoke(command, args)
    assert result.exit_code == 0, result.output
    assert seen == [SandboxConfig(rate_limit=7, errors_in_body=True)]


@pytest.mark.parametrize(
    "args", [["--error-rate=1.5"], ["--rate-limit=0"], ["--image-size=4"], ["--latency=-1"]]
)
def test_impossible_flag_values_are_refused(args: list[str]) -> None:
    result = CliRunner().invoke(make_command([]), args)
    assert result.exit_code == 2
    assert "Invalid value" in result.output


def test_docs_describe_every_flag() -> None:
    text = DOCS.read_text(encoding="utf-8")
    for field in fields(SandboxConfig):
        assert f"`{flag(field.name)}" in text, field.name


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")


def test_serve_refuses_a_port_in_use(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve(SandboxConfig(), host="127.0.0.1", port=port) == 2
    assert capsys.readouterr().err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")


def test_serve_runs_in_the_foreground_until_ctrl_c() -> None:
    code = (
        "from ruxa_batch.sandbox import SandboxConfig, serve; "
        "raise SystemExit(serve(SandboxConfig(fail_rate=0.5), host='127.0.0.1', port=0))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(4)]
        match = re.fullmatch(r"Ruxa sandbox serving at (http://127\.0\.0\.1:\d+)\n", lines[0])
        assert match, lines
        key = re.fullmatch(r"API key: (sk-sandbox-[0-9a-f]{32})\n", lines[1])
        assert key, lines
        assert lines[2] == 'Settings: {"fail_rate": 0.5}\n'
        with httpx.Client(base_url=match[1]) as http:
            assert http.get("/_sandbox/counters").json()["creates"] == 0
            answer = http.get(
                "/api/v1/tasks/query/task_x", headers={"Authorization": f"Bearer {key[1]}"}
            )
            assert answer.status_code == 404
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert err == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
