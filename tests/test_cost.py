"""Cost before and during a run: the estimate, the --max-tasks cap, the confirmation."""

from __future__ import annotations

import builtins
import json

import pytest
from helpers import results, run_args, write_manifest


def test_cap_stops_creating_then_resume_continues_under_it(
    run, hermetic, sandbox, monkeypatch
) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 20)
    first = run(run_args(sandbox, "--max-tasks", "7"))
    assert first.code == 3
    assert first.err.splitlines()[-1] == (
        "error: stopped at the cap of 7 tasks for this run (--max-tasks): 13 jobs were not "
        "submitted; run again to continue with them"
    )
    assert sandbox.counters()["creates"] == 7
    summary = results(hermetic)["summary"]
    assert (summary["succeeded"], summary["pending"]) == (7, 13)  # what ran was finished
    second = run(run_args(sandbox, "--max-tasks", "7"))
    assert second.code == 3
    assert sandbox.counters()["creates"] == 14
    last = run(run_args(sandbox))
    assert last.code == 0
    assert sandbox.counters()["creates"] == 20
    assert sandbox.counters()["duplicate_creates"] == 0


def test_retries_count_against_the_cap(run, hermetic, sandbox_factory, monkeypatch) -> None:
    server = sandbox_factory(fail_rate=1.0, fail_code="500")
    monkeypatch.setenv("RUXA_API_KEY", server.api_key)
    write_manifest(hermetic, 5)
    result = run(run_args(server, "--max-tasks", "7", "--max-attempts", "3"))
    assert result.code == 3
    assert server.counters()["creates"] == 7


def test_lost_answers_count_against_the_cap(run, hermetic, sandbox_factory, monkeypatch) -> None:
    # Every create makes a task but its answer is lost: each may have cost money.
    server = sandbox_factory(drop_rate=1.0)
    monkeypatch.setenv("RUXA_API_KEY", server.api_key)
    write_manifest(hermetic, 5)
    result = run(run_args(server, "--max-tasks", "3"))
    assert result.code == 3
    assert server.counters()["creates"] == 3


def test_cap_from_the_manifest(run, hermetic, sandbox, monkeypatch) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 6, extra="run:\n  max_tasks: 4\n")
    assert run(run_args(sandbox)).code == 3
    assert sandbox.counters()["creates"] == 4


def test_estimate_in_plan(run, hermetic, sandbox_factory, monkeypatch) -> None:
    write_manifest(
        hermetic, 10, variants=2, extra="run:\n  price_per_task: 0.5\n  max_attempts: 2\n"
    )
    plan = run(["ruxa-batch", "plan", "m.yaml"])
    assert plan.out.splitlines()[-3:-1] == [
        "Tasks to create: 20 if each succeeds first time, at most 40 with retries",
        "Cost at 0.5 per task: expected 10, at most 20",
    ]
    cheaper = json.loads(
        run(["ruxa-batch", "plan", "m.yaml", "--format", "json", "--price-per-task", "0.1"]).out
    )
    assert (cheaper["tasks_to_create"], cheaper["tasks_at_most"]) == (20, 40)
    assert cheaper["cost_expected"] == pytest.approx(2.0)
    assert cheaper["cost_at_most"] == pytest.approx(4.0)
    # After a partial run, only what is left counts.
    server = sandbox_factory()
    monkeypatch.setenv("RUXA_API_KEY", server.api_key)
    run(run_args(server, "--max-tasks", "12"))
    after = json.loads(run(["ruxa-batch", "plan", "m.yaml", "--format", "json"]).out)
    assert after["totals"] == {"submit": 8, "done": 12}
    assert (after["tasks_to_create"], after["tasks_at_most"]) == (8, 16)


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Pretend a person is at the terminal; returns the prompts shown."""
    from ruxa_batch import runner

    asked: list[str] = []
    monkeypatch.setattr(runner, "is_interactive", lambda: True)
    answers = iter(["n"])

    def fake_input(prompt: str) -> str:
        asked.append(prompt)
        return next(answers)

    monkeypatch.setattr(builtins, "input", fake_input)
    return asked


def test_big_run_on_a_terminal_asks_first(run, hermetic, sandbox, monkeypatch, terminal) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 101)
    declined = run(run_args(sandbox))
    assert terminal == ["Continue? [y/N] "]
    assert (declined.code, declined.err) == (130, "not confirmed: nothing was sent\n")
    assert (
        "Tasks to create: 101 if each succeeds first time, at most 303 with retries" in declined.out
    )
    assert sandbox.counters()["creates"] == 0
    assert run(run_args(sandbox, "--yes")).code == 0
    assert terminal == ["Continue? [y/N] "]  # --yes did not ask


def test_small_run_never_asks(run, hermetic, sandbox, monkeypatch, terminal) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    write_manifest(hermetic, 100)
    assert run(run_args(sandbox)).code == 0
    assert terminal == []


def test_never_asks_off_a_terminal(run, hermetic, sandbox, monkeypatch) -> None:
    monkeypatch.setenv("RUXA_API_KEY", sandbox.api_key)
    monkeypatch.setattr(builtins, "input", lambda prompt: pytest.fail("asked off a terminal"))
    write_manifest(hermetic, 101)
    assert run(run_args(sandbox)).code == 0


def test_plan_with_the_cap_counts_what_one_run_creates(run, hermetic) -> None:
    write_manifest(hermetic, 30)
    plan = run(["ruxa-batch", "plan", "m.yaml", "--max-tasks", "10", "--price-per-task", "0.5"])
    assert plan.out.splitlines()[-4:-1] == [
        "Tasks to create: 10 if each succeeds first time, at most 10 with retries",
        "Cost at 0.5 per task: expected 5, at most 5",
        "Capped at 10 tasks per run (max_tasks); 20 more in later runs",
    ]
    document = json.loads(
        run(["ruxa-batch", "plan", "m.yaml", "--max-tasks", "10", "--format", "json"]).out
    )
    assert (document["tasks_to_create"], document["tasks_at_most"]) == (10, 10)
