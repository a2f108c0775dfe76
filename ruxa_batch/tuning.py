"""The run's tuning settings, each declared once: name, type, default, range and help.

:class:`Tuning` is that declaration. The command-line flags of ``run`` and ``plan`` are made from
its fields (:func:`tuning_options`), the manifest's ``run:`` keys are the fields marked
``manifest=True`` (the JSON Schema describes them for editors, and a test holds the two
together), and :meth:`Tuning.resolve` merges defaults, manifest and flags by field, never by
two names happening to match.

A structured setting (``permanent_failures``: two lists) has no flag: a list of codes and a
list of patterns do not fit one command-line value without a mini-language of their own, so it
is marked ``flag=False`` and set in the manifest only, where YAML already is that language.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

from ruxa_batch.failures import DEFAULT_RULES, FailureRules
from ruxa_batch.models import Prices

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Spec:
    """How one setting is checked and shown (the field itself holds name, type and default)."""

    help: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    manifest: bool = True  # also a key of the manifest's `run:` section
    flag: bool = True  # also a command-line flag of `run` (False: manifest only)
    metavar: str | None = None
    parse: Callable[[Any], Any] | None = None  # a structured value from its manifest form


def setting(default: Any, help: str, **spec: Any) -> Any:
    """A :class:`Tuning` field with its :class:`Spec`."""
    return field(default=default, metadata={"spec": Spec(help=help, **spec)})


@dataclass(frozen=True)
class Tuning:
    """How a run behaves, beyond the jobs themselves. Defaults are the values used when neither
    the manifest's ``run:`` section nor a flag sets one."""

    concurrency: int = setting(8, "HTTP requests in flight at once.", minimum=1, maximum=256)
    rate_limit: float = setting(
        10.0,
        "API requests per second, creates and status queries together.",
        minimum=0,
        exclusive_minimum=True,
        maximum=10000,
    )
    max_attempts: int = setting(
        3, "Tasks tried per job before the job is failed.", minimum=1, maximum=20
    )
    poll_interval: float = setting(
        3.0,
        "Seconds before a task's first status query.",
        minimum=0,
        exclusive_minimum=True,
        maximum=3600,
    )
    task_timeout: float = setting(
        900.0,
        "Seconds a task may stay unfinished before the attempt counts as failed.",
        minimum=0,
        exclusive_minimum=True,
        maximum=604800,
    )
    # setting() returns a dataclasses.field (None by default): no shared mutable default.
    price_per_task: Prices | None = setting(  # noqa: RUF009
        None,
        "What one task costs; plan and run show the expected and worst-case cost. In the "
        "manifest, one figure or one per model.",
        minimum=0,
        parse=Prices.of,
    )
    max_tasks: int | None = setting(
        None, "Create at most this many tasks in one run, retries included.", minimum=1
    )
    retry_backoff: float = setting(
        1.0,
        "First pause before repeating a request that failed on the network or with a 5xx; "
        "it doubles each time, with jitter, up to 30 s.",
        minimum=0,
        exclusive_minimum=True,
        manifest=False,
        metavar="S",
    )
    max_download_mb: float = setting(
        100.0,
        "Largest result file accepted, in MB.",
        minimum=0,
        exclusive_minimum=True,
        manifest=False,
    )
    # setting() returns a dataclasses.field, and FailureRules is frozen: no shared mutable default.
    permanent_failures: FailureRules = setting(  # noqa: RUF009
        DEFAULT_RULES,
        "Task failures that fail the job at once instead of paying for a new task: "
        "`codes` (failCode values) and `messages` (case-insensitive failMsg substrings).",
        flag=False,
        parse=FailureRules.of,
    )

    @classmethod
    def resolve(cls, manifest_run: Mapping[str, Any], flags: Mapping[str, Any]) -> Tuning:
        """Flags (not None) win over the manifest's ``run:`` keys, which win over the defaults.

        Keys that name no setting are a bug of the caller, not something to ignore.
        """
        merged: dict[str, Any] = {}
        for source, allowed in (
            (manifest_run, {s.name for s in settings() if spec_of(s).manifest}),
            (flags, {s.name for s in settings() if spec_of(s).flag}),
        ):
            unknown = set(source) - allowed
            if unknown:
                raise KeyError(f"not a tuning setting here: {', '.join(sorted(unknown))}")
            merged.update({key: value for key, value in source.items() if value is not None})
        kinds = _kinds()
        fields = {s.name: s for s in settings()}
        return cls(
            **{
                key: (spec_of(fields[key]).parse or kinds[key])(value)
                for key, value in merged.items()
            }
        )


def settings() -> tuple[dataclasses.Field[Any], ...]:
    """The declared settings, in declaration order."""
    return dataclasses.fields(Tuning)


def spec_of(setting_field: dataclasses.Field[Any]) -> Spec:
    """A setting's :class:`Spec`."""
    spec: Spec = setting_field.metadata["spec"]
    return spec


def _kinds() -> dict[str, type]:
    """Each setting's value type (``int`` or ``float``), from its annotation."""
    kinds: dict[str, type] = {}
    for name, hint in get_type_hints(Tuning).items():
        args = [arg for arg in getattr(hint, "__args__", (hint,)) if arg is not type(None)]
        kinds[name] = args[0]
    return kinds


def flag_name(setting_field: dataclasses.Field[Any]) -> str:
    """``max_tasks`` -> ``--max-tasks``."""
    return "--" + setting_field.name.replace("_", "-")


def finite_range(
    low: float | None = None, high: float | None = None, *, min_open: bool = False
) -> Any:
    """A click float type with bounds that also refuses ``inf`` and ``nan`` (``nan`` passes
    every comparison, and an infinite duration hangs a run)."""
    import click

    class FiniteRange(click.FloatRange):
        def convert(self, value: Any, param: Any, ctx: Any) -> Any:
            number = super().convert(value, param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value!r} is not a finite number.", param, ctx)
            return number

    return FiniteRange(low, high, min_open=min_open)


def tuning_options(*, only: tuple[str, ...] | None = None) -> Callable[[F], F]:
    """Click options for the settings (all, or those named in ``only``); each defaults to None
    so that an absent flag lets the manifest's value through."""
    import click

    kinds = _kinds()

    def decorate(command: F) -> F:
        for setting_field in reversed(settings()):
            if only is not None and setting_field.name not in only:
                continue
            if not spec_of(setting_field).flag:
                continue
            spec = spec_of(setting_field)
            low = None if spec.minimum is None else spec.minimum
            high = None if spec.maximum is None else spec.maximum
            kind: Any
            if kinds[setting_field.name] is int:
                kind = click.IntRange(
                    None if low is None else int(low), None if high is None else int(high)
                )
            else:
                kind = finite_range(low, high, min_open=spec.exclusive_minimum)
            where = "run." + setting_field.name if spec.manifest else None
            default = setting_field.default
            shown = "none" if default is None else f"{default:g}"
            source = f"{where}, else {shown}" if where else shown
            command = click.option(
                flag_name(setting_field),
                setting_field.name,
                type=kind,
                default=None,
                metavar=spec.metavar,
                help=f"{spec.help} [default: {source}]",
            )(command)
        return command

    return decorate
