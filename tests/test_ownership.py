"""A job is succeeded only with its own pictures: files are checked by their sha256, another
identity's picture is never overwritten, and `verify` re-checks every file."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import results, run_args, write_manifest

OUT = Path("out") / "t"


def write_jobs(folder: Path, *jobs: tuple[str, str], output: str = "") -> None:
    """A manifest of (id, prompt) jobs on one input image."""
    entries = "".join(
        f"  - {{id: {job_id}, prompt: '{prompt}', images: ['https://cdn.example.com/a.png']}}\n"
        for job_id, prompt in jobs
    )
    (folder / "m.yaml").write_text("version: 1\nname: t\n" + output + "jobs:\n" + entries)


def keys(folder: Path) -> dict[str, str]:
    return {row["id"]: row["key"] for row in results(folder)["jobs"]}


def test_a_reverted_prompt_gets_its_own_picture_back(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    out = hermetic / OUT
    write_jobs(hermetic, ("x", "Make it pixel art"))
    assert run(run_args(sandbox)).code == 0
    first, first_key = (out / "x-1.png").read_bytes(), keys(hermetic)["x"]

    write_jobs(hermetic, ("x", "Make it a watercolour"))
    assert run(run_args(sandbox)).code == 0
    edited, edited_key = (out / "x-1.png").read_bytes(), keys(hermetic)["x"]
    assert edited != first
    # The earlier request's picture was moved out of the way, not overwritten.
    assert (out / f"x-1.{first_key[:8]}.png").read_bytes() == first

    write_jobs(hermetic, ("x", "Make it pixel art"))
    plan = run(["ruxa-batch", "plan", "m.yaml", "--format", "json"])
    assert json.loads(plan.out)["totals"] == {"download": 1, "orphaned": 1}
    before = sandbox.counters()
    assert run(run_args(sandbox)).code == 0
    after = sandbox.counters()
    # Put back from the copy on disk: no task, not even a download.
    assert (after["creates"], after["downloads"]) == (before["creates"], before["downloads"])
    assert (out / "x-1.png").read_bytes() == first
    assert (out / f"x-1.{edited_key[:8]}.png").read_bytes() == edited
    row = results(hermetic)["jobs"][0]
    assert (row["status"], row["files"], row["key"]) == ("succeeded", ["x-1.png"], first_key)
    assert run(["ruxa-batch", "verify", "m.yaml"]).code == 0


def test_a_renamed_job_keeps_its_picture_when_a_new_job_takes_its_id(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    out = hermetic / OUT
    write_jobs(hermetic, ("alpha", "Make it pixel art"))
    assert run(run_args(sandbox)).code == 0
    original = (out / "alpha-1.png").read_bytes()

    write_jobs(hermetic, ("gamma", "Make it pixel art"), ("alpha", "Make it a watercolour"))
    creates = sandbox.counters()["creates"]
    assert run(run_args(sandbox)).code == 0
    assert sandbox.counters()["creates"] == creates + 1  # only the new alpha
    rows = {row["id"]: row for row in results(hermetic)["jobs"]}
    assert rows["gamma"]["files"] == ["gamma-1.png"]
    assert (out / "gamma-1.png").read_bytes() == original
    assert rows["alpha"]["files"] == ["alpha-1.png"]
    assert (out / "alpha-1.png").read_bytes() != original
    assert sorted(path.name for path in out.glob("*.png")) == ["alpha-1.png", "gamma-1.png"]
    assert run(["ruxa-batch", "verify", "m.yaml"]).code == 0


def test_an_id_named_like_another_jobs_second_picture_is_refused(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    write_jobs(
        hermetic,
        ("a", "Make it pixel art"),
        ("a-2", "Make it a watercolour"),
        output='output:\n  filename: "{id}.{ext}"\n',
    )
    result = run(run_args(sandbox))
    assert (result.code, result.err) == (
        2,
        "m.yaml:4:13: $.output.filename: output.filename gives output 2 of job 'a' and "
        "output 1 of job 'a-2' the same file name 'a-2.png' (without {n}, a task's second and "
        "later pictures get -2, -3... before the extension); put {n} in it, "
        'e.g. "{id}-{n}.{ext}", or rename one of the jobs\n',
    )
    assert sandbox.counters()["creates"] == 0


def test_no_free_name_for_the_picture_in_the_way_leaves_the_job_and_overwrites_nothing(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    out = hermetic / OUT
    write_jobs(hermetic, ("x", "Make it pixel art"))
    assert run(run_args(sandbox)).code == 0
    first, first_key = (out / "x-1.png").read_bytes(), keys(hermetic)["x"]
    stray = out / f"x-1.{first_key[:8]}.png"
    stray.write_bytes(b"somebody's file")

    write_jobs(hermetic, ("x", "Make it a watercolour"))
    assert run(run_args(sandbox)).code == 4
    assert (out / "x-1.png").read_bytes() == first
    assert stray.read_bytes() == b"somebody's file"
    row = results(hermetic)["jobs"][0]
    assert row["status"] == "running"
    assert row["error"] == (
        "left for a later run: out/t/x-1.png holds the picture of job 'x' (an earlier request, "
        "no longer in the manifest) and no free name is left to keep it under; nothing was "
        "overwritten: move that file away and run again"
    )

    stray.unlink()
    creates = sandbox.counters()["creates"]
    assert run(run_args(sandbox)).code == 0
    assert sandbox.counters()["creates"] == creates  # the task it had is downloaded
    assert (out / "x-1.png").read_bytes() != first
    assert stray.read_bytes() == first


# -- verify ---------------------------------------------------------------------------------------


def test_verify_when_every_picture_is_as_downloaded(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    write_manifest(hermetic, 2)
    assert run(run_args(sandbox)).code == 0
    result = run(["ruxa-batch", "verify", "m.yaml"])
    assert (result.code, result.out, result.err) == (
        0,
        "t: 2 pictures of 2 succeeded jobs checked, all as downloaded\n",
        "",
    )


def test_verify_lists_an_edited_picture_and_run_puts_it_back(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    write_manifest(hermetic, 2)
    assert run(run_args(sandbox)).code == 0
    edited = hermetic / OUT / "job-001-v1-1.png"
    edited.write_bytes(edited.read_bytes() + b"\0")
    result = run(["ruxa-batch", "verify", "m.yaml"])
    assert (result.code, result.out, result.err) == (
        1,
        "changed: out/t/job-001-v1-1.png (job 'job-001')\n",
        "not as downloaded: 1 of 2 pictures (0 missing, 1 changed); `ruxa-batch run` downloads "
        "them again from the recorded result URLs\n",
    )
    plan = run(["ruxa-batch", "plan", "m.yaml"])
    assert "Totals: download 1, done 1" in plan.out
    before = sandbox.counters()
    assert run(run_args(sandbox)).code == 0
    after = sandbox.counters()
    assert (after["creates"], after["downloads"]) == (before["creates"], before["downloads"] + 1)
    assert run(["ruxa-batch", "verify", "m.yaml"]).code == 0


def test_verify_lists_a_deleted_picture(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    write_manifest(hermetic, 2, variants=2)
    assert run(run_args(sandbox)).code == 0
    (hermetic / OUT / "job-000-v2-1.png").unlink()
    result = run(["ruxa-batch", "verify", "m.yaml"])
    assert (result.code, result.out) == (
        1,
        "missing: out/t/job-000-v2-1.png (job 'job-000' variant 2)\n",
    )
    assert result.err.startswith("not as downloaded: 1 of 4 pictures (1 missing, 0 changed); ")


def test_verify_without_a_state_file(run, hermetic) -> None:
    write_manifest(hermetic, 1)
    result = run(["ruxa-batch", "verify", "m.yaml"])
    assert (result.code, result.out, result.err) == (
        2,
        "",
        "error: no state file at out/t/.ruxa-batch.sqlite: nothing to verify; run the manifest "
        "first\n",
    )
    result = run(["ruxa-batch", "verify", "m.yaml", "--sandbox"])
    assert result.err == (
        "error: no state file at out/t.sandbox/.ruxa-batch.sqlite: nothing to verify; run the "
        "manifest first\n"
    )
