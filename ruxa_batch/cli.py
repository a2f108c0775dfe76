"""The command line: flags in, a frozen settings object to one core function, its exit code out.

Heavy modules (YAML, JSON Schema, HTTP) are imported inside the commands so that ``--help`` is fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click

from ruxa_batch import __version__
from ruxa_batch.errors import EXIT_INTERRUPTED, EXIT_INVALID, emit, run_guarded

DEFAULT_MAX_JOBS = 100_000  # mirrors ruxa_batch.manifest.DEFAULT_MAX_JOBS (kept import-free)

_max_jobs_option = click.option(
    "--max-jobs",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_JOBS,
    show_default=True,
    help="Refuse manifests that expand to more jobs than this.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ruxa-batch")
def cli() -> None:
    """Run large, resumable batches of AI image edits on the Ruxa API from a YAML manifest.

    \b
    Start here:
      ruxa-batch init manifest.yaml         write a commented starter manifest
      ruxa-batch validate manifest.yaml     check it, with errors that point at lines
      ruxa-batch plan manifest.yaml         see every job it expands to
    """


@cli.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path(path_type=Path))
@_max_jobs_option
@click.option("-q", "--quiet", is_flag=True, help="Print nothing for valid manifests.")
def validate(manifests: tuple[Path, ...], max_jobs: int, quiet: bool) -> int:
    """Check manifests against the schema and the manifest rules.

    Every problem in every file is reported at once, as FILE:LINE:COL: JSON.PATH: MESSAGE.
    Exit status 0 when all are valid, 2 otherwise.

    \b
    Example:
      ruxa-batch validate manifests/*.yaml
    """
    from ruxa_batch import app
    from ruxa_batch.settings import ValidateSettings

    return app.validate(ValidateSettings(paths=manifests, max_jobs=max_jobs, quiet=quiet))


@cli.command()
@click.argument("manifest", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="markdown is meant to be pasted into a pull request.",
)
@_max_jobs_option
def plan(manifest: Path, fmt: str, max_jobs: int) -> int:
    """Show every job the manifest expands to and what `run` would do with it.

    Needs no network and no API key.

    \b
    Example:
      ruxa-batch plan manifests/example.yaml --format markdown > plan.md
    """
    from ruxa_batch import app
    from ruxa_batch.settings import PlanSettings

    return app.plan(PlanSettings(path=manifest, format=fmt, max_jobs=max_jobs))


@cli.command()
def schema() -> int:
    """Print the manifest's JSON Schema (draft 2020-12).

    \b
    Example:
      ruxa-batch schema > manifest.schema.json
    """
    from ruxa_batch import app

    return app.print_schema()


@cli.command()
@click.argument("path", required=False, default="manifest.yaml", type=click.Path(path_type=Path))
def init(path: Path) -> int:
    """Write a commented starter manifest to PATH (default manifest.yaml).

    Never overwrites an existing file.

    \b
    Example:
      ruxa-batch init manifests/spring.yaml
    """
    from ruxa_batch import app
    from ruxa_batch.settings import InitSettings

    return app.init(InitSettings(path=path))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ruxa-batch`` command; returns the process exit code."""

    def body() -> int:
        try:
            result = cli.main(
                args=list(argv) if argv is not None else None,
                prog_name="ruxa-batch",
                standalone_mode=False,
            )
        except click.exceptions.Abort:
            emit(["interrupted"])
            return EXIT_INTERRUPTED
        except click.ClickException as exc:
            exc.show()
            return EXIT_INVALID
        return result if isinstance(result, int) else 0

    return run_guarded(body)
