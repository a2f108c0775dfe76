"""What ``run`` would do with each job, and the plan's renderings (text, JSON, markdown).

The plan reads the state file (if any) but never writes it and never touches the network. Each
job's action comes from :func:`ruxa_batch.decide.decide`, the function the engine carries out,
so the plan (and the estimate and the confirmation made from it) says what ``run`` with the same
flags will do: ``submit``, ``resubmit`` (a create's answer was lost), ``retry`` (failed or
uncertain, with a --retry-... flag), ``running``, ``download``, ``done``, ``failed``,
``uncertain``, and ``orphaned`` for state rows whose job is no longer in the manifest.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruxa_batch.decide import (
    ACTIONS,
    Decision,
    Estimate,
    Options,
    decide,
    money_pair,
    pictures_on_disk,
)
from ruxa_batch.jobs import Job, Manifest, display_path
from ruxa_batch.local_files import plural, size_text
from ruxa_batch.models import Prices
from ruxa_batch.shards import Shard
from ruxa_batch.state import JobRecord

ORPHANED = "orphaned"


@dataclass(frozen=True)
class PlannedJob:
    """One job and what ``run`` would do with it."""

    job: Job
    decision: Decision

    @property
    def action(self) -> str:
        """The action's word."""
        return self.decision.action.value


@dataclass(frozen=True)
class Plan:
    """The plan for a manifest."""

    manifest: Manifest
    items: tuple[PlannedJob, ...]
    orphaned: tuple[JobRecord, ...] = ()
    output_dir: Path | None = None  # where this run's pictures go (sandbox runs: their own)

    def totals(self) -> dict[str, int]:
        """Jobs per action, in :data:`ACTIONS` order then orphaned, leaving out empty ones."""
        counts = Counter(item.action for item in self.items)
        counts[ORPHANED] = len(self.orphaned)
        order = [action.value for action in ACTIONS] + [ORPHANED]
        return {action: counts[action] for action in order if counts[action]}

    def local_files(self) -> tuple[int, int]:
        """How many distinct local pictures the jobs that create a task now send, and their
        bytes: what ``run`` publishes at most (each once; a URL recorded earlier is reused)."""
        files = {
            file.sha256: file.size
            for item in self.items
            if item.decision.creates_now
            for file in item.job.local_files
        }
        return len(files), sum(files.values())

    def estimate(self, *, prices: Prices | None, cap: int | None = None) -> Estimate:
        """Tasks (and cost) of carrying the plan out in one run (capped by ``cap``)."""
        return Estimate.of(
            ((item.decision, item.job.model) for item in self.items), prices=prices, cap=cap
        )


@dataclass(frozen=True)
class Scope:
    """Which part of a manifest a plan covers, when it is not every job: a shard, or the
    whole manifest shown with its split into shards."""

    total_jobs: int  # jobs of the whole manifest
    revision: str  # its manifest revision
    jobs: int = 0  # jobs of the shard planned
    shard: Shard | None = None  # the shard planned (None: every job)
    shares: tuple[ShardShare, ...] = ()  # with --shards N: each shard's part

    def lines(self) -> list[str]:
        """The scope in words (text and markdown)."""
        lines = []
        if self.shard is not None:
            lines.append(
                f"Shard {self.shard}: {self.jobs:,} of the manifest's {self.total_jobs:,} jobs "
                f"(manifest revision {self.revision}); its run has its own state file, cap "
                "and confirmation"
            )
        if self.shares:
            lines.append(
                f"Shards ({len(self.shares)}, manifest revision {self.revision}; "
                "each run with --shard I/N has its own cap and confirmation):"
            )
            lines += [f"  {share.text()}" for share in self.shares]
        return lines

    def document(self) -> dict[str, Any]:
        """The scope for the JSON plan."""
        found: dict[str, Any] = {"jobs_in_manifest": self.total_jobs, "revision": self.revision}
        if self.shard is not None:
            found["shard"] = str(self.shard)
        if self.shares:
            found["shards"] = [share.document() for share in self.shares]
        return found


@dataclass(frozen=True)
class ShardShare:
    """One shard's part of a split: its jobs and what its run would create and cost."""

    shard: Shard
    jobs: int
    cost: Estimate

    def text(self) -> str:
        """One line: ``2/4: 103 jobs, 103 tasks to create (at most 309), cost 4.12``."""
        line = (
            f"{self.shard}: {plural(self.jobs, 'job')}, {self.cost.expected:,} tasks to create "
            f"(at most {self.cost.at_most:,})"
        )
        if self.cost.expected_cost is not None and self.cost.at_most_cost is not None:
            expected, at_most = money_pair(self.cost.expected_cost, self.cost.at_most_cost)
            line += f", cost {expected} (at most {at_most})"
        return line

    def document(self) -> dict[str, Any]:
        """The share for the JSON plan."""
        return {
            "shard": str(self.shard),
            "jobs": self.jobs,
            "tasks_to_create": self.cost.expected,
            "tasks_at_most": self.cost.at_most,
            "cost_expected": self.cost.expected_cost,
            "cost_at_most": self.cost.at_most_cost,
        }


def make_plan(
    manifest: Manifest,
    records: dict[str, JobRecord] | None,
    options: Options,
    *,
    output_dir: Path,
) -> Plan:
    """The plan for ``manifest`` against the recorded state (none: every job is submitted)."""
    known = records or {}
    present = pictures_on_disk(output_dir, manifest)
    items = []
    keys = set()
    never_run = decide(None, options)  # the same for every job the state has not seen
    for job in manifest.jobs:  # one pass: each job is unpacked once
        record = known.get(job.key)
        decision = (
            never_run
            if record is None
            else decide(record, options, files_present=functools.partial(present, job))
        )
        items.append(PlannedJob(job, decision))
        keys.add(job.key)
    orphaned = tuple(record for key, record in known.items() if key not in keys)
    return Plan(manifest, tuple(items), orphaned, output_dir)


def render(plan: Plan, fmt: str, cost: Estimate, scope: Scope | None = None) -> str:
    """The plan as ``text``, ``json`` or ``markdown`` (of a shard, or with the split, when
    ``scope`` says so)."""
    if fmt == "json":
        return render_json(plan, cost, scope)
    if fmt == "markdown":
        return render_markdown(plan, cost, scope)
    return render_text(plan, cost, scope)


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def _totals_text(plan: Plan) -> str:
    return ", ".join(f"{action} {count:,}" for action, count in plan.totals().items()) or "none"


def render_text(plan: Plan, cost: Estimate, scope: Scope | None = None) -> str:
    """A fixed-width table for a terminal."""
    manifest = plan.manifest
    header = ("ACTION", "ID", "VAR", "MODEL", "SIZE", "RES", "FORMAT", "IMAGES", "PROMPT")
    rows = [
        (
            item.action,
            item.job.id,
            str(item.job.variant),
            item.job.model,
            item.job.image_size,
            item.job.resolution or "-",
            item.job.output_format,
            str(len(item.job.images)),
            _one_line(item.job.prompt, 60),
        )
        for item in plan.items
    ]
    last = len(header) - 1
    widths = [max(map(len, column)) for column in zip(header, *rows, strict=True)][:last]
    line = "  ".join([*(f"{{:<{width}}}" for width in widths), "{}"])
    lines = [
        f"Plan for {manifest.name} ({display_path(manifest.path)}): {len(plan.items):,} jobs "
        f"(one per id and variant), {_models_text(plan)}",
        "",
    ]
    lines += [line.format(*row).rstrip() for row in (header, *rows)]
    for record in plan.orphaned:
        lines.append(
            f"orphaned  {record.id} (variant {record.variant}, {record.status}): "
            "in the state file but no longer in the manifest"
        )
    lines += [
        "",
        f"Totals: {_totals_text(plan)}",
        *cost.lines(),
        *_local_lines(plan),
        f"Output folder: {display_path(plan.output_dir or manifest.output.dir)}",
        *(scope.lines() if scope is not None else []),
    ]
    return "\n".join(lines)


def _models_text(plan: Plan) -> str:
    """``model google/nano-banana-edit``, or ``models A (3 jobs), B (1 job)``."""
    used = Counter(item.job.model for item in plan.items)
    if len(used) <= 1:
        return f"model {next(iter(used), plan.manifest.model)}"
    return "models " + ", ".join(f"{model} ({plural(n, 'job')})" for model, n in used.items())


def _local_lines(plan: Plan) -> list[str]:
    count, size = plan.local_files()
    if not count:
        return []
    return [
        f"Local pictures to publish: {plural(count, 'distinct file')}, {size_text(size)} "
        "(each once; URLs an earlier run recorded are reused)"
    ]


def _job_record(item: PlannedJob) -> dict[str, Any]:
    job = item.job
    return {
        "id": job.id,
        "variant": job.variant,
        "action": item.action,
        "key": job.key,
        "model": job.model,
        "prompt": job.prompt,
        "images": list(job.image_names),
        "image_size": job.image_size,
        "resolution": job.resolution,
        "output_format": job.output_format,
    }


def render_json(plan: Plan, cost: Estimate, scope: Scope | None = None) -> str:
    """The plan as one JSON document."""
    manifest = plan.manifest
    document = {
        "manifest": display_path(manifest.path),
        "name": manifest.name,
        "models": dict(Counter(item.job.model for item in plan.items)),
        "output_dir": display_path(plan.output_dir or manifest.output.dir),
        "totals": plan.totals(),
        "tasks_to_create": cost.expected,
        "tasks_at_most": cost.at_most,
        "price_per_task": _prices_document(cost.prices),
        "cost_expected": cost.expected_cost,
        "cost_at_most": cost.at_most_cost,
        "local_files": dict(zip(("count", "bytes"), plan.local_files(), strict=True)),
        **(scope.document() if scope is not None else {}),
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


def cost_markdown(cost: Estimate) -> list[str]:
    """The cost line of the markdown plan (none without a price)."""
    text = cost.cost_text(strong="**")
    return [] if text is None else [text, ""]


def _prices_document(prices: Prices | None) -> float | dict[str, float] | None:
    """The prices as the manifest gives them: one figure, or one per model."""
    if prices is None:
        return None
    return dict(prices.per_model) if prices.per_model else prices.every


def render_markdown(plan: Plan, cost: Estimate, scope: Scope | None = None) -> str:
    """A summary and a collapsible job table, to paste into a pull request."""
    manifest = plan.manifest
    lines = [
        f"### ruxa-batch plan: {_md(manifest.name)}",
        "",
        f"`{_md(display_path(manifest.path))}` · {_models_text(plan)} · "
        f"{len(plan.items):,} jobs · **{cost.expected:,} tasks to create** "
        f"(at most {cost.at_most:,} with retries)",
        "",
        *cost_markdown(cost),
        *(f"{line}\n" for line in _local_lines(plan)),
        *_scope_markdown(scope),
        "| action | jobs |",
        "| --- | ---: |",
    ]
    lines += [f"| {action} | {count:,} |" for action, count in plan.totals().items()]
    lines += [
        "",
        f"<details><summary>Jobs ({len(plan.items):,})</summary>",
        "",
        "| action | id | variant | model | size | resolution | format | images | prompt |",
        "| --- | --- | ---: | --- | --- | --- | --- | ---: | --- |",
    ]
    lines += [
        f"| {item.action} | {_md(item.job.id)} | {item.job.variant} | {item.job.model} | "
        f"{item.job.image_size} | {item.job.resolution or '-'} | {item.job.output_format} | "
        f"{len(item.job.images)} | {_md(item.job.prompt)} |"
        for item in plan.items
    ]
    lines += ["", "</details>"]
    return "\n".join(lines)


def _scope_markdown(scope: Scope | None) -> list[str]:
    """The scope's lines as markdown: each shard of a split a list item."""
    if scope is None:
        return []
    lines = [line if not line.startswith("  ") else f"- {line.strip()}" for line in scope.lines()]
    return [*lines, ""]
