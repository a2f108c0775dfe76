"""The sandbox's fault flags, shared by ``ruxa-batch sandbox`` and ``ruxa-batch run --sandbox``.

Each flag sets the :class:`SandboxConfig` field of the same name. A command whose own flags would
collide (``run`` has a client-side ``--rate-limit``) takes them with a prefix instead:
``@sandbox_options(prefix="sandbox")`` gives ``--sandbox-rate-limit`` and so on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

import click

from ruxa_batch.sandbox.config import FAIL_CODES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, SandboxConfig
from ruxa_batch.tuning import finite_range

F = TypeVar("F", bound=Callable[..., Any])

_RATE = finite_range(0.0, 1.0)
_SECONDS = finite_range(0.0)
_DEFAULT = SandboxConfig()

# field -> (click type, None for an on/off flag; metavar; help); defaults come from SandboxConfig.
# (The type slot is Any because click's ParamType became generic only in recent releases.)
_FLAGS: dict[str, tuple[Any, str, str]] = {
    "generation_time": (
        _SECONDS,
        "S",
        "seconds from create to a task's end (waiting, queuing, generating).",
    ),
    "latency": (_SECONDS, "S", "seconds added to every API and file request."),
    "rate_limit": (
        finite_range(0.0, min_open=True),
        "RPS",
        "creates+queries per second; more get 429 with Retry-After. [default: off]",
    ),
    "error_rate": (
        _RATE,
        "F",
        "fraction of creates and queries answered 500 (no task is made).",
    ),
    "fail_rate": (_RATE, "F", "fraction of tasks that end in state fail, with failMsg/failCode."),
    "fail_code": (
        click.Choice(FAIL_CODES),
        "CODE",
        "every failed task fails this way: 500 try again, 400 content refused, 422 input "
        "image not downloadable. [default: drawn at random]",
    ),
    "credits": (
        click.IntRange(min=0),
        "N",
        "creates allowed in total; later creates get 402. [default: unlimited]",
    ),
    "drop_rate": (
        _RATE,
        "F",
        "fraction of creates that make (and charge) the task, then close the connection "
        "without an answer.",
    ),
    "garbage_rate": (
        _RATE,
        "F",
        "fraction of creates and queries answered with an HTML error page instead of JSON "
        "(no task is made).",
    ),
    "errors_in_body": (None, "", "send API errors as HTTP 200 with the code in the JSON body."),
    "completed_state": (None, "", "report finished tasks as 'completed' instead of 'success'."),
    "minimal_fields": (
        None,
        "",
        "task objects carry only taskId, state, resultJson (and failMsg), none of the extras.",
    ),
    "url_ttl": (
        _SECONDS,
        "S",
        "result URLs answer 404 this many seconds after the task ends. [default: never]",
    ),
    "seed": (
        click.INT,
        "N",
        "seed every random draw, so a fault scenario repeats. [default: random]",
    ),
    "api_key": (
        click.STRING,
        "KEY",
        "the key to accept. [default: a random sk-sandbox-... per start]",
    ),
    "image_size": (
        click.IntRange(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE),
        "PX",
        "long side of 1k result images in pixels (2k and 4k: 2 and 4 times it); the other "
        "side follows image_size.",
    ),
}


def _decorator(prefix: str) -> Callable[[F], F]:
    head = f"{prefix}_" if prefix else ""

    def decorate(command: F) -> F:
        for name, (kind, metavar, text) in reversed(_FLAGS.items()):
            param = head + name
            flag = "--" + param.replace("_", "-")
            default = getattr(_DEFAULT, name)
            if kind is None:
                option = click.option(flag, param, is_flag=True, help=f"Sandbox: {text}")
            else:
                option = click.option(
                    flag,
                    param,
                    type=kind,
                    default=default,
                    show_default=default is not None,
                    metavar=metavar,
                    help=f"Sandbox: {text}",
                )
            command = option(command)
        return command

    return decorate


@overload
def sandbox_options(command: F, *, prefix: str = "") -> F: ...


@overload
def sandbox_options(command: None = None, *, prefix: str = "") -> Callable[[F], F]: ...


def sandbox_options(command: F | None = None, *, prefix: str = "") -> F | Callable[[F], F]:
    """Add every sandbox flag to a click command: ``@sandbox_options`` gives ``--fail-rate``...,
    ``@sandbox_options(prefix="sandbox")`` gives ``--sandbox-fail-rate``...

    Pass the command's parameters to :func:`config_from_options` with the same prefix.
    """
    decorate: Callable[[F], F] = _decorator(prefix)
    return decorate(command) if command is not None else decorate


def config_from_options(*, prefix: str = "", **values: Any) -> SandboxConfig:
    """The :class:`SandboxConfig` for a command's parameters. Parameters that are not sandbox
    flags (a manifest path, ``--host``, ...) are ignored."""
    head = f"{prefix}_" if prefix else ""
    return SandboxConfig(**{name: values[head + name] for name in _FLAGS if head + name in values})
