"""What ``run`` would do with each job, and the plan's renderings (text, JSON, markdown).

The plan reads the state file (if any) but never writes it and never touches the network:
``submit`` (no task yet), ``done`` (succeeded), ``running`` (has a live task), ``retry`` (failed;
resubmitted with ``--retry-failed``), ``uncertain`` (a create whose fate is unknown), and
``orphaned`` for state rows whose job is no longer in the manifest.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ruxa_batch.manifest import Job, Manifest, display_path
from ruxa_batch.state import FAILED, SUCCEEDED, UNCERTAIN, JobRecord

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
    orphaned: tuple[JobRecord, ...] = ()

    def totals(self) -> dict[str, int]:
        """Jobs per action, in :data:`ACTIONS` order, leaving out actions with no job."""
        counts = Counter(item.action for item in self.items)
        counts["orphaned"] = len(self.orphaned)
        return {action: counts[action] for action in ACTIONS if counts[action]}

    @property
    def to_create(self) -> int:
        """Tasks the run would create if every attempt succeeds first time."""
        return sum(1 for item in self.items if item.action in ("submit", "retry"))


def action_for(record: JobRecord | None) -> str:
    """What ``run`` (without --retry-* flags) would do with a job in this state."""
    if record is None:
        return "submit"
    if record.open_attempt is not None or record.status == UNCERTAIN:
        return "uncertain"
    if record.status == SUCCEEDED:
        return "done"
    if record.status == FAILED:
        return "retry"
    if record.status == "running" and record.task_id is not None:
        return "running"
    return "submit"


def make_plan(manifest: Manifest, records: dict[str, JobRecord] | None = None) -> Plan:
    """The plan for ``manifest`` against the recorded state (none: every job is submitted)."""
    known = records or {}
    items = tuple(PlannedJob(job, action_for(known.get(job.key))) for job in manifest.jobs)
    keys = {job.key for job in manifest.jobs}
    orphaned = tuple(record for key, record in known.items() if key not in keys)
    return Plan(manifest, items, orphaned)


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
    for record in plan.orphaned:
        lines.append(
            f"orphaned  {record.id} (variant {record.variant}, {record.status}): "
            "in the state file but no longer in the manifest"
        )
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
        "orphaned": [
            {
                "id": r.id,
                "variant": r.variant,
                "key": r.key,
                "status": r.status,
                "task_id": r.task_id,
            }
            for r in plan.orphaned
        ],
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
