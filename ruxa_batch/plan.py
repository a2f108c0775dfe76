"""What ``run`` would do with each job, and the plan's renderings (text, JSON, markdown).

Until a state file exists for the manifest, every job is ``submit``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ruxa_batch.manifest import Job, Manifest, display_path

ACTIONS = ("submit", "retry", "uncertain", "running", "done", "orphaned")


@dataclass(frozen=True)
class PlannedJob:
    """One job and what ``run`` would do with it."""

    job: Job
    action: str


@dataclass(frozen=True)
class Plan:
    """The plan for a manifest."""

    manifest: Manifest
    items: tuple[PlannedJob, ...]

    def totals(self) -> dict[str, int]:
        """Jobs per action, in :data:`ACTIONS` order, leaving out actions with no job."""
        counts = Counter(item.action for item in self.items)
        return {action: counts[action] for action in ACTIONS if counts[action]}

    @property
    def to_create(self) -> int:
        """Tasks the run would create if every attempt succeeds first time."""
        return sum(1 for item in self.items if item.action in ("submit", "retry"))


def make_plan(manifest: Manifest) -> Plan:
    """The plan for ``manifest`` with no state recorded yet: every job is submitted."""
    return Plan(manifest, tuple(PlannedJob(job, "submit") for job in manifest.jobs))


def render(plan: Plan, fmt: str) -> str:
    """The plan as ``text``, ``json`` or ``markdown``."""
    if fmt == "json":
        return render_json(plan)
    if fmt == "markdown":
        return render_markdown(plan)
    return render_text(plan)


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _totals_text(plan: Plan) -> str:
    return ", ".join(f"{action} {count:,}" for action, count in plan.totals().items()) or "none"


def render_text(plan: Plan) -> str:
    """A fixed-width table for a terminal."""
    manifest = plan.manifest
    header = ("ACTION", "ID", "VAR", "SIZE", "FORMAT", "IMAGES", "PROMPT")
    rows = [
        (
            item.action,
            item.job.id,
            str(item.job.variant),
            item.job.image_size,
            item.job.output_format,
            str(len(item.job.images)),
            _one_line(item.job.prompt, 60),
        )
        for item in plan.items
    ]
    widths = [max(len(header[col]), *(len(row[col]) for row in rows)) for col in range(6)]
    lines = [
        f"Plan for {manifest.name} ({display_path(manifest.path)}): {len(plan.items):,} jobs "
        f"(one per id and variant), model {manifest.model}",
        "",
    ]
    for row in (header, *rows):
        cells = [row[col].ljust(widths[col]) for col in range(6)]
        lines.append("  ".join([*cells, row[6]]).rstrip())
    lines += [
        "",
        f"Totals: {_totals_text(plan)}",
        f"Tasks to create: {plan.to_create:,}",
        f"Output folder: {display_path(manifest.output.dir)}",
    ]
    return "\n".join(lines)


def _job_record(item: PlannedJob) -> dict[str, Any]:
    job = item.job
    return {
        "id": job.id,
        "variant": job.variant,
        "action": item.action,
        "key": job.key,
        "prompt": job.prompt,
        "images": list(job.images),
        "image_size": job.image_size,
        "output_format": job.output_format,
    }


def render_json(plan: Plan) -> str:
    """The plan as one JSON document."""
    manifest = plan.manifest
    document = {
        "manifest": display_path(manifest.path),
        "name": manifest.name,
        "model": manifest.model,
        "output_dir": display_path(manifest.output.dir),
        "totals": plan.totals(),
        "tasks_to_create": plan.to_create,
        "jobs": [_job_record(item) for item in plan.items],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def _md(text: str, width: int = 80) -> str:
    """Text made safe for one markdown table cell."""
    flat = _one_line(text, width)
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("`", "\\`")):
        flat = flat.replace(raw, escaped)
    return flat


def render_markdown(plan: Plan) -> str:
    """A summary and a collapsible job table, to paste into a pull request."""
    manifest = plan.manifest
    lines = [
        f"### ruxa-batch plan: {_md(manifest.name)}",
        "",
        f"`{_md(display_path(manifest.path))}` · model `{manifest.model}` · "
        f"{len(plan.items):,} jobs · **{plan.to_create:,} tasks to create**",
        "",
        "| action | jobs |",
        "| --- | ---: |",
    ]
    lines += [f"| {action} | {count:,} |" for action, count in plan.totals().items()]
    lines += [
        "",
        f"<details><summary>Jobs ({len(plan.items):,})</summary>",
        "",
        "| action | id | variant | size | format | images | prompt |",
        "| --- | --- | ---: | --- | --- | ---: | --- |",
    ]
    lines += [
        f"| {item.action} | {_md(item.job.id)} | {item.job.variant} | {item.job.image_size} | "
        f"{item.job.output_format} | {len(item.job.images)} | {_md(item.job.prompt)} |"
        for item in plan.items
    ]
    lines += ["", "</details>"]
    return "\n".join(lines)
