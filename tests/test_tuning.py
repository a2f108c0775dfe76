"""Each run setting is declared once: the flags, the manifest keys and the merge come from it."""

from __future__ import annotations

import json
from importlib import resources

import click
import pytest

from ruxa_batch.cli import cli
from ruxa_batch.tuning import Tuning, flag_name, settings, spec_of


def schema_run_keys() -> dict[str, dict[str, object]]:
    text = resources.files("ruxa_batch").joinpath("schemas/manifest.schema.json").read_text()
    properties: dict[str, dict[str, object]] = json.loads(text)["properties"]["run"]["properties"]
    return properties


def test_the_schema_describes_exactly_the_manifest_settings_with_their_ranges() -> None:
    declared = {s.name: s for s in settings() if spec_of(s).manifest}
    described = schema_run_keys()
    assert set(described) == set(declared)
    for name, entry in described.items():
        if entry.get("type") == "object":  # a structured, manifest-only setting: no range
            assert not spec_of(declared[name]).flag and spec_of(declared[name]).parse, name
            continue
        if entry.get("type") == ["number", "object"]:  # a figure, or one per model: parsed
            assert spec_of(declared[name]).parse, name
            assert entry["minimum"] == spec_of(declared[name]).minimum, name
            continue
        spec = spec_of(declared[name])
        kinds = {"integer": int, "number": float}
        hint = str(declared[name].type)
        assert kinds[str(entry["type"])].__name__ in hint, name
        low = entry.get("exclusiveMinimum", entry.get("minimum"))
        assert low == spec.minimum, name
        assert ("exclusiveMinimum" in entry) == spec.exclusive_minimum, name
        assert entry.get("maximum") == spec.maximum, name


@pytest.mark.parametrize("command", ["run", "plan"])
def test_every_setting_flag_comes_from_the_declaration(command: str) -> None:
    options = {
        param.name: param
        for param in cli.commands[command].params  # type: ignore[union-attr]
        if isinstance(param, click.Option)
    }
    wanted = [
        s
        for s in settings()
        if spec_of(s).flag
        and (command == "run" or s.name in ("max_attempts", "price_per_task", "max_tasks"))
    ]
    for setting in wanted:
        option = options[setting.name]
        assert option.opts == [flag_name(setting)]
        assert option.default is None  # an absent flag lets the manifest's value through
        assert spec_of(setting).help in (option.help or "")


def test_flags_win_over_the_manifest_which_wins_over_the_defaults() -> None:
    tuning = Tuning.resolve(
        {"concurrency": 4, "rate_limit": 2, "max_tasks": 10},
        {"concurrency": 16, "rate_limit": None, "retry_backoff": 0.5},
    )
    assert tuning.concurrency == 16
    assert tuning.rate_limit == 2.0 and isinstance(tuning.rate_limit, float)
    assert tuning.max_tasks == 10
    assert tuning.retry_backoff == 0.5
    assert tuning.poll_interval == Tuning().poll_interval


def test_a_name_that_is_no_setting_is_refused_not_ignored() -> None:
    with pytest.raises(KeyError, match="concurency"):
        Tuning.resolve({}, {"concurency": 3})
    with pytest.raises(KeyError, match="retry_backoff"):
        Tuning.resolve({"retry_backoff": 3}, {})  # a flag-only setting is no manifest key


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--retry-backoff", "inf"),
        ("--price-per-task", "nan"),
        ("--max-download-mb", "1e999"),
        ("--sandbox-latency", "inf"),
    ],
)
def test_no_duration_or_price_flag_takes_a_non_finite_number(run, hermetic, flag, value) -> None:
    (hermetic / "m.yaml").write_text(
        "version: 1\njobs:\n  - id: a\n    prompt: p\n    images: [https://x.example/a.png]\n"
    )
    result = run(["ruxa-batch", "run", "m.yaml", "--sandbox", flag, value])
    assert result.code == 2
    assert result.err.splitlines()[-1] in (
        f"Error: Invalid value for '{flag}': '{value}' is not a finite number.",
        f"Error: Invalid value for '{flag}': {float(value)} is not a finite number.",
    )
