"""The core functions behind each command: settings in, exit code out.

The command-line layer (:mod:`ruxa_batch.cli`) only turns flags into settings and calls these.
"""

from __future__ import annotations

import sys
from importlib import resources

from ruxa_batch.errors import EXIT_INVALID, EXIT_OK, UsageError, emit
from ruxa_batch.manifest import check_manifest, display_path, load_manifest
from ruxa_batch.plan import make_plan, render
from ruxa_batch.schema import schema_text
from ruxa_batch.settings import InitSettings, PlanSettings, ValidateSettings
from ruxa_batch.template import slugify


def plural(count: int, noun: str) -> str:
    """``1 job``, ``2 jobs``, ``12,000 jobs``."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def validate(settings: ValidateSettings) -> int:
    """Check every manifest, reporting every problem in every file; 0 if all are valid."""
    failed = 0
    for path in settings.paths:
        manifest, problems = check_manifest(path, max_jobs=settings.max_jobs)
        if problems:
            failed += 1
            emit([str(problem) for problem in problems])
        elif manifest is not None and not settings.quiet:
            emit([f"{display_path(path)}: ok, {plural(len(manifest.jobs), 'job')}"], sys.stdout)
    if failed and len(settings.paths) > 1:
        emit([f"{failed} of {len(settings.paths)} manifests are invalid"])
    return EXIT_INVALID if failed else EXIT_OK


def plan(settings: PlanSettings) -> int:
    """Print what ``run`` would do with each job of the manifest."""
    manifest = load_manifest(settings.path, max_jobs=settings.max_jobs)
    emit([render(make_plan(manifest), settings.format)], sys.stdout)
    return EXIT_OK


def print_schema() -> int:
    """Print the manifest JSON Schema."""
    emit([schema_text().rstrip("\n")], sys.stdout)
    return EXIT_OK


def init(settings: InitSettings) -> int:
    """Write a commented starter manifest; never overwrite an existing file."""
    path = settings.path
    starter = resources.files("ruxa_batch").joinpath("data/starter.yaml").read_text("utf-8")
    text = starter.replace("@NAME@", slugify(path.stem) or "my-batch").replace("@FILE@", str(path))
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise UsageError(
            f"{path} already exists; not overwriting it (choose another path)"
        ) from None
    except FileNotFoundError:
        raise UsageError(f"cannot write {path}: folder {path.parent} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or type(exc).__name__}") from None
    emit([f"wrote {path}", f"next: ruxa-batch validate {path}"], sys.stdout)
    return EXIT_OK
