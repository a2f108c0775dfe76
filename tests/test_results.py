"""The results files: results.csv is safe to open in a spreadsheet, results.json stays exact."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from pathlib import Path

from helpers import run_args, write_manifest

from ruxa_batch.manifest import load_manifest
from ruxa_batch.results import build_table, to_csv, to_json
from ruxa_batch.state import JobRecord
from ruxa_batch.statuses import JobStatus

PROMPTS = {
    "job-1": '=HYPERLINK("https://evil.example","click")',
    "plus": "+1+1",
    "minus": "-2+3",
    "at": "@SUM(A1:A2)",
    "tab": "\tcmd",
    "cr": "\rcmd",
    "plain": "Put it on a table = nice",
}


def manifest(folder: Path) -> Path:
    entries = "".join(
        f"  - id: {job_id}\n    prompt: {json.dumps(prompt)}\n"
        f"    images: ['https://cdn.example.com/{job_id}.png']\n"
        for job_id, prompt in PROMPTS.items()
    )
    path = folder / "m.yaml"
    path.write_text("version: 1\nname: t\njobs:\n" + entries)
    return path


def test_csv_cells_a_spreadsheet_would_run_start_with_a_quote(hermetic: Path) -> None:
    loaded = load_manifest(manifest(hermetic))
    first = loaded.jobs[0]
    record = JobRecord(
        key=first.key,
        id=first.id,
        variant=1,
        status=JobStatus.FAILED,
        attempts=3,
        tasks_total=3,
        possible_duplicate=False,
        task_id="-task",
        result_urls=("=evil()", "https://cdn.example.com/r.png"),
        files=(),
        sha256=(),
        error="=cmd|' /C calc'!A0 (code -1)",
        submitted_at="2025-01-01T00:00:00Z",
        finished_at=None,
        open_attempt=None,
    )
    table = build_table(loaded, {first.key: record})
    rows = list(csv.DictReader(io.StringIO(to_csv(table), newline="")))
    assert {row["id"]: row["prompt"] for row in rows} == {
        "job-1": '\'=HYPERLINK("https://evil.example","click")',
        "plus": "'+1+1",
        "minus": "'-2+3",
        "at": "'@SUM(A1:A2)",
        "tab": "'\tcmd",
        "cr": "'\rcmd",
        "plain": "Put it on a table = nice",
    }
    failed = rows[0]
    assert failed["error"] == "'=cmd|' /C calc'!A0 (code -1)"
    assert failed["task_id"] == "'-task"
    assert failed["result_urls"] == "'=evil() https://cdn.example.com/r.png"
    # Our own numbers, booleans, times and ids with a '-' inside are left alone.
    assert (failed["variant"], failed["attempts"], failed["possible_duplicate"]) == (
        "1",
        "3",
        "false",
    )
    assert failed["submitted_at"] == "2025-01-01T00:00:00Z"
    assert rows[2]["id"] == "minus" and rows[2]["images"] == "https://cdn.example.com/minus.png"
    # The JSON keeps every value exactly.
    jobs = json.loads(to_json(table, {}))["jobs"]
    assert [job["prompt"] for job in jobs] == list(PROMPTS.values())
    assert jobs[0]["error"] == "=cmd|' /C calc'!A0 (code -1)"
    assert jobs[0]["task_id"] == "-task"
    assert jobs[0]["result_urls"] == ["=evil()", "https://cdn.example.com/r.png"]


def test_results_and_report_get_the_permissions_a_plain_write_would(
    run, hermetic, sandbox, monkeypatch
) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    old = os.umask(0o022)
    try:
        write_manifest(hermetic, 2)
        assert run(run_args(sandbox)).code == 0
        out = hermetic / "out" / "t"
        for name in ("results.csv", "results.json", "report.html"):
            assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
        (out / "results.csv").chmod(0o600)  # a mode the user chose is kept on the next write
        assert run(run_args(sandbox)).code == 0
        assert stat.S_IMODE((out / "results.csv").stat().st_mode) == 0o600
        assert run(["ruxa-batch", "results", "m.yaml", "-o", "copy.csv"]).code == 0
        assert stat.S_IMODE((hermetic / "copy.csv").stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_results_and_report_are_written_in_one_pass_over_the_records(hermetic: Path) -> None:
    """A big batch's records are read once for the counts and once for all three files."""
    from ruxa_batch.report import render_report, report_writer
    from ruxa_batch.results import write_results

    loaded = load_manifest(write_manifest(hermetic, 1200, variants=1))
    done = {
        job.key: JobRecord(
            key=job.key,
            id=job.id,
            variant=1,
            status=JobStatus.SUCCEEDED if number % 3 else JobStatus.FAILED,
            attempts=1,
            possible_duplicate=number % 7 == 0,
            task_id=f"task-{number}",
            result_urls=(f"https://cdn.example.com/{number}.png",),
            files=(f"{job.id}-1.png",),
            sha256=("0" * 64,),
            error=None if number % 3 else "boom",
            submitted_at=None,
            finished_at=None,
            open_attempt=None,
        )
        for number, job in enumerate(loaded.jobs)
        if number < 1000
    }
    reads: list[str] = []

    def lookup(keys: list[str]) -> dict[str, JobRecord]:
        reads.extend(keys)
        assert len(keys) <= 500  # a few hundred at a time, never the batch
        return {key: done[key] for key in keys if key in done}

    out = hermetic / "out"
    page = hermetic / "report.html"
    make = report_writer(output_dir=out, destination=page, history={})
    table = build_table(loaded, lookup)
    summary = {"jobs": len(table.rows)}
    paths = write_results(table, out, summary, also=[(page, make)])
    assert [path.name for path in paths] == ["results.csv", "results.json", "report.html"]
    assert len(reads) == 2 * 1200  # the counts' pass, then one pass for the three files
    whole = build_table(loaded, done)
    assert (out / "results.csv").read_text() == to_csv(whole)
    assert (out / "results.json").read_text() == to_json(whole, summary)
    expected = render_report(whole, output_dir=out, report_dir=hermetic, history={})
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")  # the page's time of writing
    assert stamp.sub("", page.read_text()) == stamp.sub("", expected)
    assert (
        whole.counts()
        == {
            "succeeded": 666,
            "failed": 334,
            "running": 0,
            "pending": 200,
            "uncertain": 0,
        }
        and whole.possible_duplicates() == 143
    )
