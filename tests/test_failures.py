"""Task failures get a class: a request at fault fails its job at once, a transient one is retried."""

from __future__ import annotations

import time

import pytest
from helpers import results, run_args, write_manifest

from ruxa_batch.failures import DEFAULT_RULES, FailureRules, classify
from ruxa_batch.sandbox.api import FAIL_REASONS
from ruxa_batch.sandbox.config import FAIL_CODES
from ruxa_batch.state import StateStore
from ruxa_batch.statuses import FailureClass
from ruxa_batch.tuning import Tuning


def state(hermetic) -> StateStore:
    return StateStore(hermetic / "out" / "t" / ".ruxa-batch.sqlite", readonly=True)


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        *(
            (code, message, "transient" if code == "500" else "request")
            for code, message in FAIL_REASONS
        ),
        (None, "The prompt was FLAGGED by a filter", "request"),
        ("999", "something new went wrong", "transient"),
        (None, None, "transient"),
        (" 422 ", "", "request"),
    ],
)
def test_the_default_rules_class_every_failure_the_sandbox_emits(code, message, expected) -> None:
    assert classify(code, message, DEFAULT_RULES) == FailureClass(expected)


def test_the_sandbox_fail_codes_are_its_fail_reasons() -> None:
    assert tuple(code for code, _ in FAIL_REASONS) == FAIL_CODES


def test_the_manifest_replaces_the_rules_key_by_key() -> None:
    tuning = Tuning.resolve({"permanent_failures": {"codes": [500]}}, {})
    assert tuning.permanent_failures == FailureRules(("500",), DEFAULT_RULES.messages)
    assert classify("500", "please try again", tuning.permanent_failures) == FailureClass.REQUEST
    off = FailureRules.of({"codes": [], "messages": []})
    assert classify("400", "content safety filter", off) == FailureClass.TRANSIENT
    assert Tuning().permanent_failures == DEFAULT_RULES
    with pytest.raises(KeyError, match="permanent_failures"):
        Tuning.resolve({}, {"permanent_failures": {"codes": []}})  # manifest only: no flag


def test_a_content_refused_task_is_not_retried(run, hermetic, sandbox_factory, keyed) -> None:
    server = keyed(sandbox_factory(fail_rate=1.0, fail_code="400"))
    write_manifest(hermetic, 1)
    result = run(run_args(server, "--max-attempts", "3", "-v"))
    assert result.code == 1
    assert server.counters()["creates"] == 1
    (row,) = results(hermetic)["jobs"]
    assert (row["status"], row["failure"], row["attempts"]) == ("failed", "request", 1)
    assert row["error"] == (
        "The prompt or image was flagged by the content safety filter (code 400); "
        "not retried: the request itself is at fault"
    )
    assert f"task {row['task_id']} of job-000 (variant 1) failed (request): " in result.err
    assert "; not retried" in result.err


def test_a_server_side_failure_is_retried(run, hermetic, sandbox_factory, keyed) -> None:
    server = keyed(sandbox_factory(fail_rate=1.0, fail_code="500"))
    write_manifest(hermetic, 1)
    result = run(run_args(server, "--max-attempts", "3", "-v"))
    assert result.code == 1
    assert server.counters()["creates"] == 3
    (row,) = results(hermetic)["jobs"]
    assert (row["status"], row["failure"], row["attempts"]) == ("failed", "transient", 3)
    assert result.err.count("failed (transient): ") == 3
    assert result.err.count("; a new task follows") == 2


@pytest.mark.parametrize(
    ("fail_code", "rules", "creates", "failure"),
    [
        ("400", "{codes: [], messages: []}", 2, "transient"),  # retry everything, as before
        ("500", "{codes: ['500']}", 1, "request"),
    ],
)
def test_the_manifest_changes_the_classification(
    run, hermetic, sandbox_factory, keyed, fail_code, rules, creates, failure
) -> None:
    server = keyed(sandbox_factory(fail_rate=1.0, fail_code=fail_code))
    write_manifest(hermetic, 1, extra=f"run:\n  permanent_failures: {rules}\n")
    assert run(run_args(server, "--max-attempts", "2")).code == 1
    assert server.counters()["creates"] == creates
    (row,) = results(hermetic)["jobs"]
    assert (row["failure"], row["attempts"]) == (failure, creates)


def test_a_misspelled_rule_key_is_refused_by_validate(run, hermetic) -> None:
    write_manifest(hermetic, 1, extra="run:\n  permanent_failures: {code: ['500']}\n")
    assert run(["ruxa-batch", "validate", "m.yaml"]).code != 0


def test_after_retry_failed_attempts_count_every_task_and_times_are_the_last(
    run, hermetic, sandbox_factory, keyed
) -> None:
    server = keyed(sandbox_factory(fail_rate=1.0, fail_code="500"))
    write_manifest(hermetic, 1)
    assert run(run_args(server, "--max-attempts", "1")).code == 1
    (first,) = results(hermetic)["jobs"]
    assert (first["status"], first["attempts"], first["failure"]) == ("failed", 1, "transient")
    time.sleep(1.1)  # the state's times have whole seconds: the two tasks' must differ
    server.update(fail_rate=0.0)
    assert run(run_args(server, "--retry-failed")).code == 0
    (row,) = results(hermetic)["jobs"]
    with state(hermetic) as store:
        tasks = store.tasks_for(row["key"])
    assert len(tasks) == 2 and tasks[0]["task_id"] == first["task_id"]
    second = tasks[1]
    assert (row["status"], row["attempts"], row["failure"]) == ("succeeded", 2, None)
    assert row["task_id"] == second["task_id"]
    assert (row["submitted_at"], row["finished_at"]) == (
        second["created_at"],
        second["finished_at"],
    )
    assert row["submitted_at"] > first["finished_at"]
