"""The HTML contact sheet: every job's inputs beside its outputs, in one self-contained file.

The page works offline: outputs are linked by relative path (or embedded with ``embed``), inputs
by their URL (they may not load offline; every picture sits in a fixed-size frame, so the page
keeps its shape). Filtering and search are a few lines of plain JavaScript inside the file.

Every value that comes from the manifest or the API is HTML-escaped, and no value is ever placed
inside the script: the script only reads ``data-`` attributes.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ruxa_batch.jobs import Manifest, display_path
from ruxa_batch.local_files import is_url
from ruxa_batch.results import Table, write_atomic
from ruxa_batch.statuses import JobStatus

REPORT_FILENAME = "report.html"
EMBED_LIMIT = 1024 * 1024  # larger outputs are linked even with --embed
FILTERS = ("all", JobStatus.SUCCEEDED.value, JobStatus.FAILED.value)
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_STYLE = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5f6b7a; --line: #d9dee5;
  --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --frame: #eef1f5; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: #fafbfc; }
header.top { padding: 20px 28px 8px; border-bottom: 1px solid var(--line); background: #fff; }
h1 { margin: 0 0 4px; font-size: 22px; }
.meta { margin: 0; color: var(--muted); font-size: 13px; }
ul.summary { display: flex; flex-wrap: wrap; gap: 18px; list-style: none; padding: 0;
  margin: 14px 0 10px; }
ul.summary li b { font-size: 20px; margin-right: 4px; }
nav.controls { position: sticky; top: 0; z-index: 1; display: flex; flex-wrap: wrap; gap: 8px;
  align-items: center; padding: 10px 28px; background: #fffffff0;
  border-bottom: 1px solid var(--line); }
nav.controls button { font: inherit; padding: 5px 12px; border: 1px solid var(--line);
  border-radius: 16px; background: #fff; cursor: pointer; }
nav.controls button[aria-pressed="true"] { background: var(--ink); color: #fff;
  border-color: var(--ink); }
nav.controls input { font: inherit; padding: 5px 10px; min-width: 260px;
  border: 1px solid var(--line); border-radius: 6px; margin-left: auto; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 16px;
  padding: 18px 28px 40px; }
article.job { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 14px;
  overflow-wrap: anywhere; }
article.job[hidden] { display: none; }
article.job h2 { display: inline; font-size: 15px; margin: 0 0 0 6px; }
article.job h2 small { color: var(--muted); font-weight: normal; }
.badge { display: inline-block; font-size: 12px; padding: 1px 8px; border-radius: 10px;
  color: #fff; background: var(--muted); }
.badge.succeeded { background: var(--ok); } .badge.failed { background: var(--bad); }
.badge.uncertain { background: var(--warn); }
.prompt { margin: 8px 0; }
p.params { display: flex; flex-wrap: wrap; gap: 2px 14px; margin: 0 0 10px; font-size: 13px;
  color: var(--muted); }
p.params b { font-weight: 600; margin-right: 4px; }
.pictures { display: flex; flex-wrap: wrap; align-items: center; gap: 10px; }
.arrow { color: var(--muted); font-size: 20px; }
figure { margin: 0; text-align: center; font-size: 12px; color: var(--muted); }
figure a { display: block; }
figure img { display: block; width: 180px; height: 180px; object-fit: contain;
  background: var(--frame); border: 1px solid var(--line); border-radius: 6px;
  color: var(--muted); font-size: 12px; }
.none { width: 180px; height: 180px; display: flex; align-items: center; justify-content: center;
  background: var(--frame); border: 1px dashed var(--line); border-radius: 6px; }
p.error { margin: 10px 0 0; color: var(--bad); font-size: 13px; }
p.flag { margin: 6px 0 0; color: var(--warn); font-size: 13px; }
#empty { padding: 0 28px; color: var(--muted); }
"""

_SCRIPT = """
(function () {
  var buttons = document.querySelectorAll("button[data-filter]");
  var search = document.getElementById("search");
  var jobs = document.querySelectorAll("article.job");
  var empty = document.getElementById("empty");
  var filter = "all";
  function apply() {
    var query = search.value.trim().toLowerCase();
    var shown = 0;
    jobs.forEach(function (job) {
      var visible = (filter === "all" || job.dataset.status === filter) &&
        (!query || job.dataset.search.indexOf(query) !== -1);
      job.hidden = !visible;
      if (visible) { shown += 1; }
    });
    buttons.forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.filter === filter));
    });
    empty.hidden = shown > 0;
  }
  buttons.forEach(function (button) {
    button.addEventListener("click", function () {
      filter = button.dataset.filter;
      history.replaceState(null, "", "#" + filter);
      apply();
    });
  });
  search.addEventListener("input", apply);
  var wanted = location.hash.slice(1);
  if (["all", "succeeded", "failed"].indexOf(wanted) !== -1) { filter = wanted; }
  apply();
})();
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _embedded(path: Path) -> str | None:
    """A data: URI of a small picture (None when too big or unreadable)."""
    try:
        if path.stat().st_size > EMBED_LIMIT:
            return None
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        return None
    return f"data:{_MIME.get(path.suffix.lower(), 'application/octet-stream')};base64,{data}"


def _is_web_url(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


def render_report(
    table: Table,
    *,
    output_dir: Path,
    report_dir: Path,
    history: Mapping[str, Any],
    embed: bool = False,
) -> str:
    """The report page for ``table``'s jobs."""
    manifest: Manifest = table.manifest
    counts = table.counts()
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = [
        f"<li><b>{counts[JobStatus.SUCCEEDED]:,}</b> succeeded</li>",
        f"<li><b>{counts[JobStatus.FAILED]:,}</b> failed</li>",
    ]
    for status in (JobStatus.RUNNING, JobStatus.PENDING, JobStatus.UNCERTAIN):
        if counts[status]:
            summary.append(f"<li><b>{counts[status]:,}</b> {status}</li>")
    summary += [
        f"<li><b>{history.get('tasks_created', 0):,}</b> tasks created</li>",
        f"<li><b>{table.possible_duplicates():,}</b> possible duplicates</li>",
        f"<li><b>{_duration(history.get('seconds', 0.0))}</b> run time "
        f"({history.get('runs', 0):,} run{'s' if history.get('runs', 0) != 1 else ''})</li>",
    ]
    buttons = [
        f'<button type="button" data-filter="{name}" aria-pressed="{str(name == "all").lower()}">'
        f"{name.capitalize()} ({len(table.rows) if name == 'all' else counts[name]:,})</button>"
        for name in FILTERS
    ]
    # Outputs are linked relative to the page: computed once, not per picture.
    prefix = os.path.relpath(output_dir, report_dir).replace(os.sep, "/")
    prefix = "" if prefix == "." else prefix + "/"
    # Local inputs are shown from the file itself (the report works offline and after upload
    # URLs expire): their paths are relative to the manifest's folder.
    inputs = os.path.relpath(table.manifest.base.resolve(), report_dir).replace(os.sep, "/")
    inputs = "" if inputs == "." else inputs + "/"
    cards = [
        _card(row, output_dir, prefix, embed=embed, inputs=(table.manifest.base, inputs))
        for row in table.rows
    ]
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>ruxa-batch report: {_e(manifest.name)}</title>",
            f"<style>{_STYLE}</style>",
            "</head>",
            "<body>",
            '<header class="top">',
            f"<h1>{_e(manifest.name)}</h1>",
            f'<p class="meta">{_e(display_path(manifest.path))} · model {_e(manifest.model)} · '
            f"{len(table.rows):,} jobs · generated {generated}</p>",
            f'<ul class="summary">{"".join(summary)}</ul>',
            "</header>",
            '<nav class="controls">',
            *buttons,
            '<input type="search" id="search" placeholder="Search id or prompt" '
            'aria-label="Search id or prompt">',
            "</nav>",
            '<main id="jobs">',
            *cards,
            "</main>",
            '<p id="empty" hidden>No job matches.</p>',
            f"<script>{_SCRIPT}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def _card(
    row: Mapping[str, Any],
    output_dir: Path,
    prefix: str,
    *,
    embed: bool,
    inputs: tuple[Path, str],
) -> str:
    status = str(row["status"])
    search = f"{row['id']} {row['prompt']}".lower()
    pictures = []
    for number, image in enumerate(row["images"], start=1):
        if _is_web_url(image):
            href = source = _e(image)
            caption = f"input {number}"
        elif is_url(image):
            pictures.append(f'<figure><div class="none">input {number}</div></figure>')
            continue
        else:  # a local picture: its path relative to the manifest's folder, or absolute
            local = Path(image)
            folder, relative = inputs
            href = _e(
                local.resolve().as_uri()
                if local.is_absolute()
                else quote(relative + image, safe="/")
            )
            source = (_embedded(folder / image) if embed else None) or href
            caption = _e(image)
        pictures.append(
            f'<figure><a href="{href}"><img src="{source}" alt="input {number}" '
            f'loading="lazy"></a><figcaption>{caption}</figcaption></figure>'
        )
    outputs = []
    for number, name in enumerate(row["files"], start=1):
        href = _e(quote(prefix + name, safe="/"))
        source = (_embedded(output_dir / name) if embed else None) or href
        outputs.append(
            f'<figure><a href="{href}"><img src="{source}" alt="output {number}" '
            f'loading="lazy"></a><figcaption>{_e(name)}</figcaption></figure>'
        )
    if not outputs:
        label = "no picture yet" if status != JobStatus.FAILED else "no picture"
        outputs.append(f'<figure><div class="none">{label}</div></figure>')
    params = [
        ("size", row["image_size"]),
        ("format", row["output_format"]),
        ("attempts", row["attempts"]),
        ("task", row["task_id"] or "none"),
    ]
    parts = [
        f'<article class="job" data-status="{_e(status)}" data-search="{_e(search)}">',
        f'<span class="badge {_e(status)}">{_e(status)}</span>'
        f"<h2>{_e(row['id'])} <small>variant {_e(row['variant'])}</small></h2>",
        f'<p class="prompt">{_e(row["prompt"])}</p>',
        '<p class="params">'
        + "".join(f"<span><b>{_e(key)}</b>{_e(value)}</span>" for key, value in params)
        + "</p>",
        '<div class="pictures">',
        *pictures,
        '<span class="arrow" aria-hidden="true">→</span>',
        *outputs,
        "</div>",
    ]
    if row["error"]:
        parts.append(f'<p class="error">{_e(row["error"])}</p>')
    if row["possible_duplicate"]:
        parts.append('<p class="flag">possible duplicate: a create may have been charged twice</p>')
    parts.append("</article>")
    return "".join(parts)


def _duration(total: float) -> str:
    seconds = round(total)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def write_report(
    table: Table,
    *,
    output_dir: Path,
    destination: Path,
    history: Mapping[str, Any],
    embed: bool = False,
) -> Path:
    """Write the report atomically; returns its path."""
    text = render_report(
        table,
        output_dir=output_dir.resolve(),
        report_dir=destination.parent.resolve(),
        history=history,
        embed=embed,
    )
    write_atomic(destination, text)
    return destination
