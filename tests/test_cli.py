"""The commands as a user types them: exit codes and exact output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from ruxa_batch.local_files import size_text

EXAMPLE = REPO / "manifests" / "example.yaml"


@pytest.fixture
def example(hermetic: Path) -> Path:
    target = hermetic / "manifests"
    target.mkdir()
    for name in ("example.yaml", "products.csv"):
        shutil.copy(REPO / "manifests" / name, target / name)
    shutil.copytree(REPO / "manifests" / "photos", target / "photos")
    return target / "example.yaml"


def test_validate_the_example(run, example: Path) -> None:
    result = run(["ruxa-batch", "validate", "manifests/example.yaml"])
    assert (result.code, result.out, result.err) == (0, "manifests/example.yaml: ok, 23 jobs\n", "")


def test_validate_quiet(run, example: Path) -> None:
    result = run(["ruxa-batch", "validate", "-q", "manifests/example.yaml"])
    assert (result.code, result.out, result.err) == (0, "", "")


def test_validate_needs_a_file(run) -> None:
    result = run(["ruxa-batch", "validate"])
    assert result.code == 2
    assert "Missing argument 'MANIFESTS...'" in result.err


def test_max_jobs_flag(run, example: Path) -> None:
    result = run(["ruxa-batch", "validate", "--max-jobs", "10", "manifests/example.yaml"])
    assert result.code == 2
    assert result.err == (
        "manifests/example.yaml:49:5: $.jobs[0]: the manifest expands to more than 10 jobs counting "
        "variants (this entry alone: 12); raise --max-jobs if that is intended\n"
    )


def test_plan_text(run, example: Path) -> None:
    result = run(["ruxa-batch", "plan", "manifests/example.yaml"])
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == (
        "Plan for autumn-catalog (manifests/example.yaml): 23 jobs (one per id and variant), "
        "models google/nano-banana-edit (20 jobs), google/nano-banana-pro (2 jobs), "
        "google/nano-banana (1 job)"
    )
    assert lines[2].split() == [
        "ACTION", "ID", "VAR", "MODEL", "SIZE", "RES", "FORMAT", "IMAGES", "PROMPT"
    ]  # fmt: skip
    assert lines[3].split()[:8] == [
        "submit",
        "mug-ember-rustic-oak-table-with-fallen-leaves",
        "1",
        "google/nano-banana-edit",
        "1:1",
        "-",
        "png",
        "1",
    ]
    size = sum(path.stat().st_size for path in (example.parent / "photos").glob("*.png"))
    assert lines[-6:] == [
        "Totals: submit 23",
        "Tasks to create: 23 if each succeeds first time, at most 69 with retries",
        # 21 tasks at 0.04 and 2 of the pro model at 0.12: each model's own price
        "Cost at google/nano-banana-edit 0.04, google/nano-banana 0.04, "
        "google/nano-banana-pro 0.12 per task: expected 1.08, at most 3.24",
        "Capped at 100 tasks per run (max_tasks)",
        f"Local pictures to publish: 6 distinct files, {size_text(size)} (each once; URLs an "
        "earlier run recorded are reused)",
        "Output folder: manifests/out/autumn-catalog",
    ]


def test_plan_json(run, example: Path) -> None:
    result = run(["ruxa-batch", "plan", "--format", "json", "manifests/example.yaml"])
    document = json.loads(result.out)
    assert document["totals"] == {"submit": 23}
    assert document["tasks_to_create"] == 23
    assert len(document["jobs"]) == 23
    assert document["jobs"][-2] == {
        "id": "hero-window",
        "variant": 2,
        "action": "submit",
        "key": document["jobs"][-2]["key"],
        "model": "google/nano-banana-pro",
        "prompt": "Show the ceramic mug and the candle on a rainy window sill, cosy and warm.",
        "images": ["photos/mug-ember.png", "photos/candle-cedar.png"],
        "image_size": "4:5",
        "resolution": "2k",
        "output_format": "png",
    }
    assert document["jobs"][-1]["model"] == "google/nano-banana"
    assert document["jobs"][-1]["images"] == []
    assert document["cost_expected"] == pytest.approx(21 * 0.04 + 2 * 0.12)
    assert len({job["key"] for job in document["jobs"]}) == 23


def test_plan_markdown_escapes_table_cells(run, hermetic: Path) -> None:
    (hermetic / "m.yaml").write_text(
        "version: 1\njobs:\n  - id: a\n    prompt: 'Write <b>A | B</b> on it'\n"
        "    images: ['https://x.example/i.png']\n"
    )
    result = run(["ruxa-batch", "plan", "--format", "markdown", "m.yaml"])
    assert result.code == 0
    assert (
        "| submit | a | 1 | google/nano-banana-edit | 1:1 | - | png | 1 | "
        "Write &lt;b&gt;A \\| B&lt;/b&gt; on it |" in result.out
    )
    assert "| submit | 1 |" in result.out


def test_plan_bad_format(run, example: Path) -> None:
    result = run(["ruxa-batch", "plan", "--format", "yaml", "manifests/example.yaml"])
    assert result.code == 2
    assert "Invalid value for '--format'" in result.err


def test_schema_prints_the_packaged_schema(run) -> None:
    result = run(["ruxa-batch", "schema"])
    assert result.code == 0
    assert json.loads(result.out)["title"] == "ruxa-batch manifest"


def test_init_writes_a_valid_manifest_and_refuses_to_overwrite(run, hermetic: Path) -> None:
    result = run(["ruxa-batch", "init", "spring.yaml"])
    assert result.code == 0
    assert result.out == "wrote spring.yaml\nnext: ruxa-batch validate spring.yaml\n"
    assert yaml.safe_load((hermetic / "spring.yaml").read_text())["name"] == "spring"
    valid = run(["ruxa-batch", "validate", "spring.yaml"])
    assert (valid.code, valid.out) == (0, "spring.yaml: ok, 7 jobs\n")
    before = (hermetic / "spring.yaml").read_text()
    again = run(["ruxa-batch", "init", "spring.yaml"])
    assert (again.code, again.err) == (
        2,
        "error: spring.yaml already exists; not overwriting it (choose another path)\n",
    )
    assert (hermetic / "spring.yaml").read_text() == before


def test_init_default_path_and_missing_folder(run, hermetic: Path) -> None:
    assert run(["ruxa-batch", "init"]).code == 0
    assert (hermetic / "manifest.yaml").exists()
    result = run(["ruxa-batch", "init", "no/such/dir/m.yaml"])
    assert (result.code, result.err) == (
        2,
        "error: cannot write no/such/dir/m.yaml: folder no/such/dir does not exist\n",
    )


@pytest.mark.parametrize(
    "command",
    [
        "validate",
        "plan",
        "run",
        "status",
        "results",
        "verify",
        "report",
        "sandbox",
        "schema",
        "init",
    ],
)
def test_every_command_has_help_with_an_example(run, command: str) -> None:
    result = run(["ruxa-batch", command, "--help"])
    assert result.code == 0
    assert "Example:" in result.out
    assert f"ruxa-batch {command}" in result.out


def test_version(run) -> None:
    from ruxa_batch import __version__

    result = run(["ruxa-batch", "--version"])
    assert (result.code, result.out) == (0, f"ruxa-batch, version {__version__}\n")


def test_unknown_command_is_a_usage_error(run) -> None:
    result = run(["ruxa-batch", "frobnicate"])
    assert result.code == 2
    assert "No such command 'frobnicate'" in result.err


def test_unexpected_error_prints_a_notice_and_logs_the_traceback(
    run, example: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ruxa_batch import app

    def boom(settings: object) -> int:
        raise RuntimeError("something internal")

    monkeypatch.setattr(app, "plan", boom)
    result = run(["ruxa-batch", "plan", "manifests/example.yaml"])
    assert result.code == 70
    first, second = result.err.splitlines()
    assert first.startswith(
        "internal error: RuntimeError: this is a bug in ruxa-batch; the traceback is in "
    )
    assert second == "please report it with that file attached"
    log = Path(first.rsplit(" ", 1)[1])
    assert "something internal" in log.read_text()
    assert "Traceback" not in result.err


def test_keyboard_interrupt_exits_130(run, example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ruxa_batch import app

    def interrupted(settings: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "plan", interrupted)
    result = run(["ruxa-batch", "plan", "manifests/example.yaml"])
    assert (result.code, result.err.strip()) == (130, "interrupted")


def test_installed_entry_point_runs(example: Path) -> None:
    """The console script, as installed, in a real process."""
    exe = Path(sys.executable).parent / "ruxa-batch"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "ruxa_batch"]
    done = subprocess.run(
        [*command, "validate", "manifests/example.yaml"],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "manifests/example.yaml: ok, 23 jobs\n")
    bad = subprocess.run(
        [*command, "validate", "nope.yaml"], capture_output=True, text=True, timeout=60, check=False
    )
    assert (bad.returncode, bad.stderr) == (2, "nope.yaml: $: file not found\n")


@pytest.mark.slow  # the example's own rate limit (10/s) and poll interval (2 s): ~4 s
def test_run_sandbox_the_readme_first_command(run, example: Path) -> None:
    result = run(
        [
            "ruxa-batch",
            "run",
            "manifests/example.yaml",
            "--sandbox",
            "--sandbox-generation-time",
            "0.1",
            "--no-progress",
        ]
    )
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == (
        "23 succeeded, 0 failed, 0 uncertain, 0 running, 0 pending (of 23 jobs)"
    )
    out = example.parent / "out" / "autumn-catalog.sandbox"
    assert len(list(out.glob("*.png"))) == 17 and len(list(out.glob("*.jpg"))) == 6
    status = run(["ruxa-batch", "status", "manifests/example.yaml", "--sandbox"])
    assert status.out.startswith("autumn-catalog: 23 jobs: 23 succeeded")
    # Real runs keep their own state: nothing recorded there.
    assert not (example.parent / "out" / "autumn-catalog").exists()


def test_sandbox_flags_need_sandbox(run, example: Path) -> None:
    result = run(["ruxa-batch", "run", "manifests/example.yaml", "--sandbox-fail-rate", "0.5"])
    assert (result.code, result.err) == (2, "error: the --sandbox-... flags need --sandbox\n")


def test_help_does_not_load_the_sandbox_server() -> None:
    """``--help`` stays fast: the sandbox's server, API and image code load only when used."""
    code = (
        "import contextlib, io, sys\n"
        "from ruxa_batch.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--help']) == 0 and main(['run', '--help']) == 0\n"
        "heavy = ['ruxa_batch.sandbox.server', 'ruxa_batch.sandbox.api',\n"
        "         'ruxa_batch.sandbox.images', 'http.server']\n"
        "print(sorted(name for name in heavy if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "[]\n"


@pytest.mark.parametrize("command", ["run", "plan", "status"])
def test_a_csv_given_as_the_manifest_is_named_for_what_it_is(
    run, example: Path, command: str
) -> None:
    result = run(["ruxa-batch", command, "manifests/products.csv"])
    assert (result.code, result.out, result.err) == (
        2,
        "",
        "error: manifests/products.csv is a CSV file, not a manifest; "
        "a manifest lists it under rows:\n",
    )


def test_init_refuses_a_name_that_is_not_yaml(run, hermetic: Path) -> None:
    result = run(["ruxa-batch", "init", "foo.txt"])
    assert (result.code, result.out, result.err) == (
        2,
        "",
        "error: foo.txt: a manifest's name ends in .yaml or .yml (e.g. foo.yaml)\n",
    )
    assert not (hermetic / "foo.txt").exists()
    assert run(["ruxa-batch", "init", "spring.yml"]).code == 0


def test_validate_json_ok(run, example: Path) -> None:
    result = run(["ruxa-batch", "validate", "--format", "json", "manifests/example.yaml"])
    assert (result.code, result.err) == (0, "")
    assert json.loads(result.out) == {
        "status": "ok",
        "errors": [],
        "checked_paths": ["manifests/example.yaml"],
    }


def test_validate_json_lists_every_problem(run, example: Path, hermetic: Path) -> None:
    shutil.copy(REPO / "tests" / "data" / "misspelled_key.yaml", hermetic / "bad.yaml")
    result = run(
        ["ruxa-batch", "validate", "--format", "json", "manifests/example.yaml", "bad.yaml"]
    )
    assert (result.code, result.err) == (2, "")
    document = json.loads(result.out)
    assert document["status"] == "fail"
    assert document["checked_paths"] == ["manifests/example.yaml", "bad.yaml"]
    text = run(["ruxa-batch", "validate", "bad.yaml"]).err.splitlines()
    assert [
        f"{e['filename']}:{e['line']}:{e['column']}: {e['path']}: {e['message']}"
        for e in document["errors"]
    ] == text
    assert set(document["errors"][0]) == {"filename", "line", "column", "path", "message"}


def test_only_manifests_skips_other_yaml(run, example: Path, hermetic: Path) -> None:
    deploy = hermetic / "deploy" / "manifests"
    deploy.mkdir(parents=True)
    for name in ("kubernetes_configmap.yaml", "github_workflow.yaml"):
        shutil.copy(REPO / "tests" / "data" / "not_manifests" / name, deploy / name)
    result = run(
        [
            "ruxa-batch",
            "validate",
            "--only-manifests",
            "deploy/manifests/kubernetes_configmap.yaml",
            "deploy/manifests/github_workflow.yaml",
            "manifests/example.yaml",
        ]
    )
    assert (result.code, result.out, result.err) == (0, "manifests/example.yaml: ok, 23 jobs\n", "")
    plain = run(["ruxa-batch", "validate", "deploy/manifests/kubernetes_configmap.yaml"])
    assert plain.code == 2


def test_only_manifests_reports_a_broken_manifest(run, hermetic: Path) -> None:
    (hermetic / "m.yaml").write_text("version: 1\njobs:\n  - id: [unclosed\n")
    result = run(["ruxa-batch", "validate", "--only-manifests", "m.yaml"])
    assert result.code == 2
    assert result.err.startswith("m.yaml:")


def test_only_manifests_a_changed_csv_revalidates_the_manifest_reading_it(
    run, example: Path, hermetic: Path
) -> None:
    (hermetic / "other.yaml").write_text(
        "version: 1\njobs:\n  - id: a\n    prompt: p\n    images: ['https://x.example/i.png']\n"
    )
    (hermetic / "unrelated.csv").write_text("a\n1\n")
    command = ["ruxa-batch", "validate", "--only-manifests", "manifests/products.csv"]
    result = run(command)
    assert (result.code, result.out, result.err) == (0, "manifests/example.yaml: ok, 23 jobs\n", "")
    csv = example.parent / "products.csv"
    csv.write_text(csv.read_text() + "one,too,many,fields,here,and,more\n")
    broken = run(command)
    assert broken.code == 2
    assert broken.err.startswith("manifests/products.csv:")
    nobody = run(["ruxa-batch", "validate", "--only-manifests", "unrelated.csv"])
    assert (nobody.code, nobody.out, nobody.err) == (0, "", "")


def test_validate_a_csv_without_only_manifests(run, example: Path) -> None:
    result = run(["ruxa-batch", "validate", "manifests/products.csv"])
    assert (result.code, result.err) == (
        2,
        "manifests/products.csv: $: manifests/products.csv is a CSV file, not a manifest; "
        "a manifest lists it under rows:\n",
    )


def _state_with(hermetic: Path, statuses: list[str]) -> None:
    """Three one-job manifest entries recorded in the state with the given statuses."""
    from ruxa_batch.manifest import load_manifest
    from ruxa_batch.state import StateStore
    from ruxa_batch.statuses import JobStatus

    entries = "".join(
        f"  - id: j{n}\n    prompt: p{n}\n    images: ['https://x.example/i.png']\n"
        for n in range(3)
    )
    (hermetic / "m.yaml").write_text(f"version: 1\nname: t\noutput:\n  dir: out\njobs:\n{entries}")
    jobs = load_manifest(hermetic / "m.yaml").jobs
    store = StateStore.open_for_run(hermetic / "out" / ".ruxa-batch.sqlite")
    try:
        store.ensure_jobs([(job.key, job.id, job.variant, "{}") for job in jobs])
        for job, status in zip(jobs, statuses, strict=True):
            store.set_status(job.key, JobStatus(status))
    finally:
        store.close()


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        (["succeeded", "succeeded", "succeeded"], 0),
        (["succeeded", "failed", "pending"], 1),
        (["succeeded", "uncertain", "succeeded"], 1),
        (["succeeded", "running", "pending"], 4),
    ],
)
def test_status_check_exit_code(run, hermetic: Path, statuses: list[str], code: int) -> None:
    _state_with(hermetic, statuses)
    plain = run(["ruxa-batch", "status", "m.yaml"])
    assert plain.code == 0
    checked = run(["ruxa-batch", "status", "m.yaml", "--check"])
    assert (checked.code, checked.out, checked.err) == (code, plain.out, "")
    as_json = run(["ruxa-batch", "status", "m.yaml", "--check", "--format", "json"])
    assert as_json.code == code


def test_run_summary_json_when_the_run_finishes(run, hermetic: Path, sandbox, keyed) -> None:
    from helpers import run_args, write_manifest

    keyed(sandbox)
    write_manifest(hermetic, 2)
    result = run(run_args(sandbox, "--summary-json", "reports/summary.json"))
    assert (result.code, result.err) == (0, "")
    document = json.loads((hermetic / "reports" / "summary.json").read_text())
    assert {key: document[key] for key in ("succeeded", "failed", "jobs", "exit_code")} == {
        "succeeded": 2,
        "failed": 0,
        "jobs": 2,
        "exit_code": 0,
    }
    assert document["stopped_by"] is None
    assert document["tasks_created_this_run"] == 2


def test_run_summary_json_when_the_cap_stops_the_run(run, hermetic: Path, sandbox, keyed) -> None:
    from helpers import run_args, write_manifest

    keyed(sandbox)
    write_manifest(hermetic, 5)
    result = run(run_args(sandbox, "--max-tasks", "2", "--summary-json", "s.json"))
    assert result.code == 3
    document = json.loads((hermetic / "s.json").read_text())
    assert (document["exit_code"], document["stopped_by"]) == (3, "max_tasks")
    assert (document["succeeded"], document["pending"], document["max_tasks"]) == (2, 3, 2)


def test_top_level_help_does_not_cut_command_summaries(run) -> None:
    result = run(["ruxa-batch", "--help"])
    assert result.code == 0
    commands = result.out.split("Commands:\n", 1)[1]
    assert commands == (
        "  init      Write a commented starter manifest.\n"
        "  merge     Combine the output folders of shard runs into one.\n"
        "  plan      Show every job and what `run` would do with it.\n"
        "  redo      Make chosen jobs again: a new take each, the earlier ones kept.\n"
        "  report    Write an HTML contact sheet of inputs and outputs.\n"
        "  results   Print the results table, one row per job.\n"
        "  run       Submit, poll and download every job; resumable.\n"
        "  sandbox   Serve a local stand-in of the API, with fault injection.\n"
        "  schema    Print the manifest's JSON Schema.\n"
        "  status    Count the jobs in each status, from the state file.\n"
        "  validate  Check manifests, with errors that point at lines.\n"
        "  verify    Check that downloaded pictures are unchanged.\n"
    )


def test_run_help_groups_its_flags_in_sections(run) -> None:
    out = run(["ruxa-batch", "run", "--help"]).out
    sections: dict[str, str] = {}
    heading = ""
    for line in out.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            heading = line[:-1]
            sections[heading] = ""
        elif heading:
            sections[heading] += line + "\n"
    assert list(sections) == [
        "Run options",
        "Retries and cost",
        "Output",
        "Sandbox (no account, no cost)",
        "Other options",
    ]
    assert "--base-url" in sections["Run options"]
    assert "--max-tasks" in sections["Retries and cost"]
    assert "--retry-failed" in sections["Retries and cost"]
    assert "--summary-json" in sections["Output"]
    assert "--sandbox-fail-rate" in sections["Sandbox (no account, no cost)"]
    assert "\nOptions:\n" not in out
