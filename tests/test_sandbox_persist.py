"""A sandbox with a data folder keeps its tasks and counters across a restart.

So a resumed ``run --sandbox`` polls the tasks its first part created instead of meeting 404s
and paying for every job again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import (
    api_client,
    create,
    edit_request,
    eventually,
    read_png,
    result_url,
    write_named_manifest,
)

from ruxa_batch.sandbox import SandboxConfig, SandboxServer
from ruxa_batch.sandbox.store import DATA_FILENAME, SandboxDataError
from ruxa_batch.state import STATE_FILENAME

LONG = 0.6  # generation time of the tasks that must outlive a stop


def start(data: Path, **fields: Any) -> SandboxServer:
    config = SandboxConfig(**{"generation_time": LONG, **fields})
    return SandboxServer(config, host="127.0.0.1", port=0, data_dir=data).start()


def query(server: SandboxServer, task_id: str) -> dict[str, Any]:
    with api_client(server) as http:
        answer = http.get(f"/api/v1/tasks/query/{task_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


def test_a_restarted_sandbox_carries_on_with_its_tasks_and_counters(hermetic: Path) -> None:
    data = hermetic / "sandbox-data"
    first = start(data, generation_time=0.05)
    try:
        quick = create(first)  # ends before the stop
        first.update(fail_rate=1.0)
        failed = create(first, edit_request(prompt="fails"))  # ends before the stop, in `fail`
        assert eventually(lambda: query(first, failed)["state"] == "fail")
        quick_data = query(first, quick)
        picture = httpx.get(result_url(quick_data)).content
        first.update(fail_rate=0.0, generation_time=LONG)
        slow = create(first, edit_request(output_format="jpeg"))  # still running at the stop
        before = {task_id: query(first, task_id) for task_id in (quick, failed, slow)}
        counters = first.counters()
    finally:
        first.stop()
    assert counters["creates"] == 3 and counters["queries"] >= 4
    time.sleep(0.25)  # the stop lasts a while: the slow task's time runs on meanwhile

    # Another key and another generation time: the tasks keep the timing they were created with.
    second = start(data, generation_time=30.0)
    try:
        assert second.counters() == counters  # continued, not zeroed
        after = query(second, slow)
        assert after["state"] == "generating"  # over 40% of its time gone, not back to `waiting`
        assert after["createTime"] == before[slow]["createTime"]
        assert eventually(lambda: query(second, slow)["state"] == "success", timeout=2)
        finished_at = time.time()
        due = before[slow]["createTime"] / 1000 + LONG
        # Timed from the restart instead, it would end at least 0.25 s later.
        assert due - 0.01 <= finished_at < due + 0.2, "the task did not keep its create time"

        done = query(second, slow)
        assert done["completeTime"] == done["createTime"] + round(LONG * 1000)
        jpeg = httpx.get(result_url(done))
        assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"

        # The quick task: same answer, and its result URL from before the stop still works.
        assert query(second, quick) == quick_data
        assert read_png(httpx.get(result_url(quick_data)).content)[:2] == (64, 64)
        assert httpx.get(result_url(quick_data)).content == picture
        assert query(second, failed) == before[failed]
        assert before[failed]["failMsg"]

        create(second)  # the same body as `quick`: a duplicate, even across the restart
        later = second.counters()
        assert later["creates"] == 4 and later["duplicate_creates"] == 1
        assert later["not_found"] == 0
        assert [task["taskId"] for task in second.tasks()][:3] == [quick, failed, slow]
    finally:
        second.stop()


def test_without_a_data_folder_tasks_live_in_memory(hermetic: Path, sandbox_factory) -> None:
    server = sandbox_factory()
    create(server)
    assert server.data_file is None
    assert [path for path in hermetic.rglob("*") if path.is_file()] == []


def test_the_data_file_holds_no_key_and_one_sandbox_at_a_time(hermetic: Path) -> None:
    data = hermetic / "sandbox-data"
    key = "sk-sandbox-never-stored-0123456789abcdef"
    server = start(data, api_key=key)
    try:
        create(server)
        with pytest.raises(SandboxDataError, match=r"another sandbox is using .*sandbox\.sqlite"):
            start(data)
        # Written, not merely buffered: the task is on disk while the sandbox runs.
        stored = b"".join(path.read_bytes() for path in data.iterdir())
        assert b"nano-banana-edit" in stored
        assert key.encode() not in stored
    finally:
        server.stop()
    assert key.encode() not in (data / DATA_FILENAME).read_bytes()


def test_sandbox_command_keeps_its_data_in_the_folder_it_is_given(hermetic: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "ruxa_batch", "sandbox", "--port", "0", "--data", "kept"],
        cwd=hermetic,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        base_url = re.fullmatch(r"Ruxa sandbox serving at (http://\S+)\n", lines[0])
        key = re.fullmatch(r"API key: (\S+)\n", lines[1])
        assert base_url and key, lines
        assert lines[3] == (
            f"Data: {Path('kept') / DATA_FILENAME}  (tasks and counters are kept across restarts)\n"
        )
        with httpx.Client(base_url=base_url[1]) as http:
            answer = http.post(
                "/api/v1/tasks/create",
                json=edit_request(),
                headers={"Authorization": f"Bearer {key[1]}"},
            )
        task_id = answer.json()["data"]["taskId"]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=10)
        assert (process.returncode, err) == (0, "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    again = start(hermetic / "kept")
    try:
        assert query(again, task_id)["taskId"] == task_id
        assert again.counters()["creates"] == 1
    finally:
        again.stop()


def count(state_file: Path, sql: str) -> int:
    """One number from the run's state file; 0 while it has no tables yet."""
    try:
        with closing(sqlite3.connect(f"file:{state_file}?mode=ro", uri=True)) as conn:
            return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_a_resumed_sandbox_run_polls_the_tasks_it_created_before(run, hermetic: Path) -> None:
    write_named_manifest(hermetic, "resume", 20)
    out = hermetic / "out" / "resume.sandbox"
    state_file = out / STATE_FILENAME
    fast = ["--no-progress", "--no-report", "--poll-interval", "0.05"]
    # Slow creates, long tasks: when the stop comes, the first tasks are still generating.
    slow = ["--rate-limit", "10", "--concurrency", "2", "--sandbox-generation-time", str(LONG)]
    first = subprocess.Popen(
        [sys.executable, "-m", "ruxa_batch", "run", "m.yaml", "--sandbox", *fast, *slow],
        cwd=hermetic,
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert eventually(lambda: count(state_file, "SELECT COUNT(*) FROM tasks") >= 4, 20)
        first.send_signal(signal.SIGINT)  # Ctrl-C: requests in flight are answered and recorded
        _, err = first.communicate(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130, err
    created_before = count(state_file, "SELECT COUNT(*) FROM tasks")
    unfinished = count(state_file, "SELECT COUNT(*) FROM tasks WHERE state <> 'success'")
    assert 4 <= created_before < 20 and unfinished >= 1
    assert count(state_file, "SELECT COUNT(*) FROM attempts WHERE outcome <> 'created'") == 0

    quick = ["--rate-limit", "500", "--concurrency", "16", "--sandbox-generation-time", "0.05"]
    again = run(["ruxa-batch", "run", "m.yaml", "--sandbox", *fast, *quick])
    assert again.code == 0, again.err
    assert again.out.startswith("20 succeeded, 0 failed")
    assert f"tasks created this run: {20 - created_before}; possible duplicates: 0" in again.out
    assert count(state_file, "SELECT COUNT(*) FROM attempts") == 20  # one task per job, ever

    sandbox = SandboxServer(SandboxConfig(), data_dir=out).start()  # the run's sandbox data
    try:
        counters = sandbox.counters()
    finally:
        sandbox.stop()
    assert counters["creates"] == 20 and counters["duplicate_creates"] == 0
    assert counters["not_found"] == 0, "the resumed run met tasks the sandbox had forgotten"
    assert json.loads((out / "results.json").read_text())["summary"]["succeeded"] == 20
