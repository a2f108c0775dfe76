"""The API key stays secret: checked before anything is sent, never echoed, never in a log."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_args, write_manifest

from ruxa_batch import errors
from ruxa_batch.errors import run_guarded

KEY = "sk-live-0123456789abcdefABCDEF"


def crash_logs(hermetic: Path) -> list[Path]:
    return sorted((hermetic.parent / "tmp").glob("ruxa-batch-crash-*.log"))


def test_a_key_file_of_two_lines_is_refused_without_repeating_it(run, hermetic, sandbox) -> None:
    write_manifest(hermetic, 1)
    (hermetic / "kf").write_bytes(b"sk-live-A\nsk-old-B\n")
    result = run(run_args(sandbox, "--api-key-file", "kf"))
    assert (result.code, result.err) == (
        2,
        "error: API key file kf holds more than one line; it must hold only the key, on one line\n",
    )
    assert sandbox.counters()["creates"] == 0
    assert crash_logs(hermetic) == []


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("sk-live-é0123456789", "contains a character that is not ASCII"),
        ("sk-live 0123456789", "contains a space or a control character"),
        ("sk-live\t0123456789", "contains a space or a control character"),
        ("sk-live\x000123456789", "contains a space or a control character"),
        ("sk-live\r0123456789", "holds more than one line"),
    ],
    ids=["non-ascii", "space", "tab", "nul", "carriage-return"],
)
def test_a_key_that_no_header_can_carry_is_refused_before_anything_is_sent(
    run, hermetic, sandbox, key: str, problem: str
) -> None:
    write_manifest(hermetic, 1)
    (hermetic / "kf").write_text(key + "\n", encoding="utf-8")
    result = run(run_args(sandbox, "--api-key-file", "kf"))
    assert (result.code, result.err) == (
        2,
        f"error: API key file kf {problem}; it must hold only the key, on one line\n",
    )
    assert sandbox.counters()["creates"] == 0
    # Nothing was recorded either, so no job can be flagged as a possible duplicate.
    assert not (hermetic / "out" / "t" / ".ruxa-batch.sqlite").exists()
    assert crash_logs(hermetic) == []


def test_the_environment_variable_is_checked_the_same_way(
    run, hermetic, sandbox, monkeypatch
) -> None:
    write_manifest(hermetic, 1)
    monkeypatch.setenv("RUXA_API_KEY", "sk-live-é0123456789")
    result = run(run_args(sandbox))
    assert (result.code, result.err) == (
        2,
        "error: RUXA_API_KEY contains a character that is not ASCII; it must hold only the key, "
        "on one line\n",
    )
    assert sandbox.counters()["creates"] == 0


def test_a_key_file_that_is_not_utf8_is_one_line(run, hermetic, sandbox) -> None:
    write_manifest(hermetic, 1)
    (hermetic / "kf").write_bytes(b"sk-live-\xe9\n")
    result = run(run_args(sandbox, "--api-key-file", "kf"))
    assert (result.code, result.err) == (
        2,
        "error: API key file kf is not UTF-8 text; it must hold only the key\n",
    )


def test_surrounding_white_space_is_trimmed(run, hermetic, sandbox) -> None:
    write_manifest(hermetic, 1)
    (hermetic / "kf").write_text(f"  {sandbox.api_key} \r\n\n")
    result = run(run_args(sandbox, "--api-key-file", "kf"))
    assert result.code == 0, result.err


def test_a_crash_log_never_holds_a_key(hermetic) -> None:
    def body() -> int:
        raise RuntimeError(
            f"Illegal header value b'Bearer {KEY}\\nsk-old-B'; "
            "headers {'Authorization': 'Bearer tok.en-42'}; "
            f"sent {KEY} twice\nAuthorization: Basic dXNlcjpwdw=="
        )

    assert run_guarded(body) == 70
    (log,) = crash_logs(hermetic)
    text = log.read_text()
    assert "RuntimeError: Illegal header value b'Bearer [redacted]'" in text
    for secret in (KEY, "sk-old-B", "tok.en-42", "dXNlcjpwdw=="):
        assert secret not in text


@pytest.mark.parametrize(
    ("text", "scrubbed"),
    [
        ("task-1 asked for sk-a", "task-1 asked for sk-a"),
        (f"x {KEY} y", "x [redacted] y"),
        (f"authorization={KEY}&next", "authorization=[redacted]"),
        ("Bearer abc\ndef", "Bearer [redacted]\ndef"),
    ],
)
def test_scrub_secrets(text: str, scrubbed: str) -> None:
    assert errors.scrub_secrets(text) == scrubbed


CREDENTIALS = (
    "error: the base URL contains credentials (user:password@); remove them: the API key comes "
    "from RUXA_API_KEY or --api-key-file\n"
)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://user:pw-secret@api.ruxa.ai", CREDENTIALS),
        ("https://sk-live-0123456789abcdef@api.ruxa.ai/", CREDENTIALS),
        ("http://me:pw-secret@127.0.0.1:8787", CREDENTIALS),
        (
            "https://me:pw-secret@[::1",
            "error: invalid base URL (not shown: it contains '@'): expected https://host\n",
        ),
    ],
)
def test_credentials_in_the_base_url_are_refused_without_repeating_them(
    run, hermetic, monkeypatch, url: str, message: str
) -> None:
    monkeypatch.setenv("RUXA_API_KEY", KEY)
    write_manifest(hermetic, 1)
    result = run(["ruxa-batch", "run", "m.yaml", "--base-url", url])
    assert (result.code, result.err) == (2, message)
    monkeypatch.setenv("RUXA_BASE_URL", url)
    result = run(["ruxa-batch", "run", "m.yaml"])
    assert (result.code, result.err) == (2, message)
    # Nothing was written: the endpoint (and so the URL) is recorded in the state file.
    assert not (hermetic / "out").exists()
