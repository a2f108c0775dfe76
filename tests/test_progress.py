"""What a run shows while it goes on: counts, log lines, failures."""

from __future__ import annotations

import io

from ruxa_batch.jobs import Job
from ruxa_batch.progress import Progress


def job(name: str) -> Job:
    return Job(name, 1, 1, "p", ("https://x.example/i.png",), "1:1", "png", name + "-key", "o")


def test_counts_and_log_lines() -> None:
    out = io.StringIO()
    progress = Progress(total=3, mode="log", stream=out)
    a, b, c = job("a"), job("b"), job("c")
    progress.job_started(a, has_task=False)
    progress.job_started(b, has_task=True)  # resumed: its task already exists
    progress.job_started(c, has_task=False)
    progress.job_submitted(a, "task-1")
    progress.job_finished(a, "succeeded", None)
    progress.job_finished(b, "failed", "the task failed (code 500)")
    line = progress.status_line()
    assert line.split("] ", 1)[1] == (
        "2/3 finished: 1 succeeded, 1 failed; 0 running, 1 tasks created"
    )
    assert out.getvalue() == "failed: b (variant 1): the task failed (code 500)\n"
    progress.job_submitted(c, "task-2")
    assert "; 1 running, 2 tasks created" in progress.status_line()
    progress.warn("careful")
    assert out.getvalue().endswith("warning: careful\n")
    progress.close()


def test_quiet_shows_nothing() -> None:
    out = io.StringIO()
    progress = Progress(total=1, mode="off", quiet=True, stream=out)
    progress.job_started(job("a"), has_task=False)
    progress.job_finished(job("a"), "failed", "boom")
    progress.warn("careful")
    progress.close()
    assert out.getvalue() == ""


def test_bar_on_a_terminal() -> None:
    out = io.StringIO()
    progress = Progress(total=2, mode="bar", stream=out)
    progress.job_started(job("a"), has_task=False)
    progress.job_submitted(job("a"), "task-1")
    progress.job_finished(job("a"), "succeeded", None)
    progress.close()
    assert "1/2" in out.getvalue() and "created=1" in out.getvalue()


def test_a_terminal_that_reports_no_width_gets_log_lines(monkeypatch) -> None:
    import fcntl
    import os
    import pty
    import struct
    import sys
    import termios
    from pathlib import Path

    from ruxa_batch.runner import progress_mode
    from ruxa_batch.settings import RunFlags

    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w") as terminal:
            monkeypatch.setattr(sys, "stderr", terminal)
            flags = RunFlags(path=Path("m.yaml"))
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 0, 0, 0))
            assert progress_mode(flags) == "log"
            fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
            assert progress_mode(flags) == "bar"
    finally:
        os.close(master)
