"""The HTML contact sheet, and the place to decide what to redo: one self-contained file.

Each request (one ``id``) is one card: its inputs, then its variants side by side, each variant's
earlier takes smaller beside it, so the best one can be picked by eye. Every job has a checkbox;
the page writes the ``ruxa-batch redo`` command for the selection, copies it, and downloads the
selection as a file for ``redo --from``. A picture opens full size beside the job's inputs. The
status filter and the search text stay in the address (``#status=failed&q=mug``), so a link
shows the same view.

The page works offline: outputs are linked by relative path (or embedded with ``embed``), inputs
by their URL (they may not load offline; every picture sits in a fixed-size frame, so the page
keeps its shape). The script is plain JavaScript inside the file: no framework, no network.

Every value that comes from the manifest or the API is HTML-escaped, and no value is ever placed
inside the script: the script only reads ``data-`` attributes. The command it writes quotes each
argument the way :func:`shlex.quote` does, so any manifest path or id pastes as inert text.
"""

from __future__ import annotations

import base64
import functools
import html
import itertools
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ruxa_batch.jobs import Manifest, display_path
from ruxa_batch.local_files import is_url
from ruxa_batch.results import Table, Writer, write_atomic
from ruxa_batch.statuses import JOB_STATUSES, JobStatus

REPORT_FILENAME = "report.html"
EMBED_LIMIT = 1024 * 1024  # larger outputs are linked even with --embed
FILTERS = ("all", *(status.value for status in JOB_STATUSES))
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_STYLE = """
:root { color-scheme: light; --ink: #1d2430; --muted: #5f6b7a; --line: #d9dee5;
  --ok: #1a7f37; --bad: #c62828; --warn: #9a6700; --frame: #eef1f5; --pick: #0b5cad; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: #fafbfc; }
header.top { padding: 20px 28px 8px; border-bottom: 1px solid var(--line); background: #fff; }
h1 { margin: 0 0 4px; font-size: 22px; }
.meta { margin: 0; color: var(--muted); font-size: 13px; }
ul.summary { display: flex; flex-wrap: wrap; gap: 18px; list-style: none; padding: 0;
  margin: 14px 0 10px; }
ul.summary li b { font-size: 20px; margin-right: 4px; }
nav.controls { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; gap: 8px;
  align-items: center; padding: 10px 28px; background: #fffffff0;
  border-bottom: 1px solid var(--line); }
button { font: inherit; padding: 5px 12px; border: 1px solid var(--line); border-radius: 16px;
  background: #fff; color: var(--ink); cursor: pointer; }
button:disabled { color: var(--muted); cursor: default; opacity: .6; }
nav.controls button[aria-pressed="true"] { background: var(--ink); color: #fff;
  border-color: var(--ink); }
nav.controls input { font: inherit; padding: 5px 10px; min-width: 260px;
  border: 1px solid var(--line); border-radius: 6px; margin-left: auto; }
#shown { color: var(--muted); font-size: 13px; }
main { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 16px;
  padding: 18px 28px 24px; }
/* Wide enough for the inputs and every variant side by side (--jobs: the request's jobs). */
section.request { flex: 1 1 calc(200px + var(--jobs, 1) * 210px); max-width: 100%;
  background: #fff;
  border: 1px solid var(--line); border-radius: 10px; padding: 14px; overflow-wrap: anywhere; }
section.request[hidden], article.job[hidden] { display: none; }
section.request h2 { font-size: 15px; margin: 0; }
section.request h2 small { color: var(--muted); font-weight: normal; margin-left: 6px; }
.badge { display: inline-block; font-size: 12px; padding: 1px 8px; border-radius: 10px;
  color: #fff; background: var(--muted); }
.badge.succeeded { background: var(--ok); } .badge.failed { background: var(--bad); }
.badge.uncertain { background: var(--warn); }
.prompt { margin: 6px 0; }
p.params { display: flex; flex-wrap: wrap; gap: 2px 14px; margin: 0 0 10px; font-size: 13px;
  color: var(--muted); }
p.params b { font-weight: 600; margin-right: 4px; }
.row { display: flex; align-items: flex-start; gap: 10px; }
.inputs { flex: 0 0 auto; display: flex; flex-direction: column; gap: 8px; max-width: 130px; }
.arrow { color: var(--muted); font-size: 20px; align-self: center; }
.variants { flex: 1 1 auto; display: flex; flex-wrap: wrap; gap: 10px; }
article.job { border: 1px solid var(--line); border-radius: 8px; padding: 8px;
  background: #fff; }
article.job.picked { border-color: var(--pick); box-shadow: 0 0 0 2px var(--pick); }
label.pick { display: flex; align-items: center; gap: 6px; margin-bottom: 6px; font-size: 13px;
  cursor: pointer; }
label.pick input { width: 17px; height: 17px; margin: 0; accent-color: var(--pick); }
label.pick .take { color: var(--muted); }
.outputs, .takes { display: flex; flex-wrap: wrap; gap: 8px; align-items: flex-end; }
.takes { margin-top: 6px; }
figure { margin: 0; text-align: center; font-size: 12px; color: var(--muted); }
figure a { display: block; }
figure img { display: block; width: 180px; height: 180px; object-fit: contain;
  background: var(--frame); border: 1px solid var(--line); border-radius: 6px;
  color: var(--muted); font-size: 12px; }
.inputs figure img, .inputs .none { width: 120px; height: 120px; }
figure.take { opacity: .55; }
figure.take:hover { opacity: 1; }
figure.take img, figure.take .none { width: 84px; height: 84px; }
.none { width: 180px; height: 180px; display: flex; align-items: center; justify-content: center;
  background: var(--frame); border: 1px dashed var(--line); border-radius: 6px; padding: 4px; }
p.job-params { margin: 6px 0 0; font-size: 12px; color: var(--muted); }
p.error { margin: 6px 0 0; color: var(--bad); font-size: 13px; max-width: 380px; }
p.flag { margin: 6px 0 0; color: var(--warn); font-size: 13px; }
#empty { padding: 0 28px; color: var(--muted); }
footer.selection { position: sticky; bottom: 0; z-index: 2; display: flex; flex-wrap: wrap;
  gap: 8px 12px; align-items: center; padding: 10px 28px; background: #fffffff4;
  border-top: 1px solid var(--line); }
#selected-count { font-weight: 600; min-width: 90px; }
#command { flex: 1 1 360px; font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace;
  padding: 5px 8px; border: 1px solid var(--line); border-radius: 6px; resize: vertical;
  min-height: 32px; }
footer.selection p { flex-basis: 100%; margin: 0; font-size: 12px; color: var(--muted); }
footer.selection code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
#copied { font-size: 13px; color: var(--ok); }
#lightbox { position: fixed; inset: 0; z-index: 10; display: flex; flex-direction: column;
  background: #0d1117; color: #e8edf3; }
#lightbox[hidden] { display: none; }
.lb-bar { display: flex; flex-wrap: wrap; align-items: center; gap: 10px; padding: 10px 18px; }
.lb-bar button { background: #ffffff14; color: #fff; border-color: #ffffff40; }
#lb-caption { flex: 1 1 auto; font-size: 14px; overflow-wrap: anywhere; }
#lb-position { font-size: 13px; color: #aab4c0; }
#lb-open { color: #9cc7ff; font-size: 13px; }
.lb-body { flex: 1 1 auto; display: flex; gap: 18px; padding: 0 18px 18px; min-height: 0; }
#lb-inputs { flex: 0 0 auto; display: flex; flex-direction: column; gap: 10px;
  overflow-y: auto; }
#lb-inputs figure { color: #aab4c0; }
#lb-inputs img, #lb-inputs .none { width: 200px; height: 200px; background: #ffffff10;
  border-color: #ffffff30; }
.lb-main { flex: 1 1 auto; display: flex; align-items: center; justify-content: center;
  min-width: 0; }
/* As large as the window allows: small pictures grow too, to be looked at closely. */
#lb-image { width: 100%; height: calc(100vh - 90px); object-fit: contain; }
"""

_SCRIPT = """
(function () {
  "use strict";
  var SAFE = /^[A-Za-z0-9@%+=:,.\\/_-]+$/;
  // POSIX shell quoting, as Python's shlex.quote: an argument made only of safe characters
  // stays as it is; any other goes in single quotes, each ' written as '"'"'.
  function shellQuote(text) {
    text = String(text);
    if (SAFE.test(text)) { return text; }
    return "'" + text.replace(/'/g, "'\\"'\\"'") + "'";
  }
  var bar = document.getElementById("selection");
  var manifest = bar.dataset.manifest;
  var flags = (bar.dataset.flags || "").split("\\n").filter(function (flag) { return flag; });
  var fileName = bar.dataset.download;
  function redoCommand(selectors) {
    return ["ruxa-batch", "redo", manifest].concat(flags, selectors).map(shellQuote).join(" ");
  }
  window.ruxaReport = { shellQuote: shellQuote, redoCommand: redoCommand };

  var filterButtons = Array.prototype.slice.call(document.querySelectorAll("button[data-filter]"));
  var filters = filterButtons.map(function (button) { return button.dataset.filter; });
  var search = document.getElementById("search");
  var requests = Array.prototype.slice.call(document.querySelectorAll("section.request"));
  var jobs = Array.prototype.slice.call(document.querySelectorAll("article.job"));
  var empty = document.getElementById("empty");
  var shown = document.getElementById("shown");
  var filter = "all";

  function matches(job, terms) {
    if (filter !== "all" && job.dataset.status !== filter) { return false; }
    var text = job.dataset.search;
    return terms.every(function (term) { return text.indexOf(term) !== -1; });
  }
  function apply() {
    var terms = search.value.trim().toLowerCase().split(/\\s+/).filter(Boolean);
    var count = 0;
    jobs.forEach(function (job) {
      job.hidden = !matches(job, terms);
      if (!job.hidden) { count += 1; }
    });
    requests.forEach(function (request) {
      request.hidden = !request.querySelector("article.job:not([hidden])");
    });
    filterButtons.forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.filter === filter));
    });
    shown.textContent = count + " of " + jobs.length + " jobs shown";
    empty.hidden = count > 0;
    update();  // the selection's count says how many chosen jobs the filter hides
  }
  function readAddress() {
    var raw = location.hash.slice(1);
    var params = new URLSearchParams(raw);
    var wanted = params.get("status");
    if (wanted === null && filters.indexOf(raw) !== -1) { wanted = raw; }  // older #failed links
    filter = filters.indexOf(wanted) !== -1 ? wanted : "all";
    search.value = params.get("q") || "";
    apply();
  }
  function writeAddress() {
    var params = new URLSearchParams();
    params.set("status", filter);
    if (search.value) { params.set("q", search.value); }
    history.replaceState(null, "", "#" + params.toString());
  }
  filterButtons.forEach(function (button) {
    button.addEventListener("click", function () {
      filter = button.dataset.filter;
      apply();
      writeAddress();
    });
  });
  search.addEventListener("input", function () { apply(); writeAddress(); });
  window.addEventListener("hashchange", readAddress);

  // Selection: the command and the file follow the checkboxes.
  var selectedCount = document.getElementById("selected-count");
  var command = document.getElementById("command");
  var fromCommand = document.getElementById("from-command");
  var copyButton = document.getElementById("copy");
  var downloadButton = document.getElementById("download");
  var clearButton = document.getElementById("clear");
  var copied = document.getElementById("copied");
  function box(job) { return job.querySelector("input.pick"); }
  function selectors() {
    return jobs.filter(function (job) { return box(job).checked; })
      .map(function (job) { return job.dataset.selector; });
  }
  // The command as built: a textarea's value turns a carriage return into a line feed.
  var built = "";
  function update() {
    var chosen = selectors();
    jobs.forEach(function (job) { job.classList.toggle("picked", box(job).checked); });
    // Jobs chosen and then hidden by a filter stay in the command: say so.
    var unseen = jobs.filter(function (job) { return job.hidden && box(job).checked; }).length;
    selectedCount.textContent = chosen.length + " selected" +
      (unseen ? ", " + unseen + " of them not shown" : "");
    built = chosen.length ? redoCommand(chosen) : "";
    command.value = built;
    copyButton.disabled = downloadButton.disabled = clearButton.disabled = !chosen.length;
    copied.textContent = "";
  }
  jobs.forEach(function (job) { box(job).addEventListener("change", update); });
  document.getElementById("select-visible").addEventListener("click", function () {
    jobs.forEach(function (job) { if (!job.hidden) { box(job).checked = true; } });
    update();
  });
  clearButton.addEventListener("click", function () {
    jobs.forEach(function (job) { box(job).checked = false; });
    update();
  });
  function copyBySelection() {
    command.focus();
    command.select();
    var done = false;
    try { done = document.execCommand("copy"); } catch (error) { done = false; }
    copied.textContent = done ? "Copied" : "Press Ctrl+C to copy";
  }
  copyButton.addEventListener("click", function () {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(built).then(function () {
        copied.textContent = "Copied";
      }, copyBySelection);
    } else {
      copyBySelection();
    }
  });
  downloadButton.addEventListener("click", function () {
    var text = selectors().join("\\n") + "\\n";
    var link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "text/plain" }));
    link.download = fileName;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
  });
  fromCommand.textContent = ["ruxa-batch", "redo", manifest].concat(flags, ["--from", fileName])
    .map(shellQuote).join(" ");

  // The full-size view: the outputs of the jobs shown, in page order.
  var lightbox = document.getElementById("lightbox");
  var image = document.getElementById("lb-image");
  var caption = document.getElementById("lb-caption");
  var position = document.getElementById("lb-position");
  var inputs = document.getElementById("lb-inputs");
  var open = document.getElementById("lb-open");
  var previous = document.getElementById("lb-prev");
  var next = document.getElementById("lb-next");
  var shots = [];
  var current = -1;
  var opener = null;
  function show(index) {
    current = index;
    var shot = shots[index];
    var picture = shot.querySelector("img");
    image.src = picture.getAttribute("src");
    image.alt = shot.dataset.caption;
    caption.textContent = shot.dataset.caption;
    position.textContent = (index + 1) + " / " + shots.length;
    open.href = shot.getAttribute("href");
    previous.disabled = index === 0;
    next.disabled = index === shots.length - 1;
    inputs.textContent = "";
    var request = shot.closest("section.request");
    request.querySelectorAll(".inputs figure").forEach(function (figure) {
      inputs.appendChild(figure.cloneNode(true));
    });
  }
  function openAt(shot) {
    shots = Array.prototype.slice.call(
      document.querySelectorAll("article.job:not([hidden]) a.shot"));
    opener = shot;
    lightbox.hidden = false;
    show(shots.indexOf(shot));
    document.getElementById("lb-close").focus();
  }
  function close() {
    lightbox.hidden = true;
    image.removeAttribute("src");
    if (opener) { opener.focus(); }
  }
  function step(by) {
    var index = current + by;
    if (index >= 0 && index < shots.length) { show(index); }
  }
  document.addEventListener("click", function (event) {
    var shot = event.target.closest && event.target.closest("a.shot");
    if (!shot || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) {
      return;
    }
    event.preventDefault();
    openAt(shot);
  });
  document.addEventListener("keydown", function (event) {
    if (lightbox.hidden) { return; }
    if (event.key === "Escape") { close(); }
    else if (event.key === "ArrowRight") { step(1); }
    else if (event.key === "ArrowLeft") { step(-1); }
    else if (event.key === "Tab") { keepFocus(event); return; }
    else { return; }
    event.preventDefault();
  });
  // Tab cycles through the view's own controls, never the page hidden behind it.
  function keepFocus(event) {
    var controls = Array.prototype.slice.call(
      lightbox.querySelectorAll("button:not([disabled]), a[href]"));
    var at = controls.indexOf(document.activeElement);
    var to = at === -1 ? 0 : (at + (event.shiftKey ? -1 : 1) + controls.length) % controls.length;
    controls[to].focus();
    event.preventDefault();
  }
  document.getElementById("lb-close").addEventListener("click", close);
  previous.addEventListener("click", function () { step(-1); });
  next.addEventListener("click", function () { step(1); });

  readAddress();
})();
"""


_SPECIAL = re.compile("[&<>\"'\r]")


def _e(value: Any) -> str:
    text = "" if value is None else str(value)
    if _SPECIAL.search(text) is None:
        return text  # most values: nothing to escape, found without five replacements
    # A carriage return as a reference: the HTML parser turns a raw one into a line feed.
    return html.escape(text, quote=True).replace("\r", "&#13;")


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


def redo_selector(row: Mapping[str, Any], *, variants: int) -> str:
    """How ``redo`` names a job: ``id@variant``, or the plain ``id`` when its id has one job."""
    return str(row["id"]) if variants == 1 else f"{row['id']}@{row['variant']}"


def redo_file_name(name: str) -> str:
    """The name the page gives the selection it downloads: ``redo-<batch name>.txt``."""
    return f"redo-{re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('.-') or 'batch'}.txt"


def _manifest_argument(manifest: Manifest) -> str:
    """The manifest as the command line names it (``./-x.yaml``, never taken for an option)."""
    shown = display_path(manifest.path)
    return "./" + shown if shown.startswith("-") else shown


def render_report(
    table: Table,
    *,
    output_dir: Path,
    report_dir: Path,
    history: Mapping[str, Any],
    embed: bool = False,
    redo_flags: Sequence[str] = (),
) -> str:
    """The report page for ``table``'s jobs (see :func:`report_chunks`)."""
    return "".join(
        report_chunks(
            table,
            output_dir=output_dir,
            report_dir=report_dir,
            history=history,
            embed=embed,
            redo_flags=redo_flags,
        )
    )


def report_chunks(
    table: Table,
    *,
    output_dir: Path,
    report_dir: Path,
    history: Mapping[str, Any],
    embed: bool = False,
    redo_flags: Sequence[str] = (),
) -> Iterator[str]:
    """The report page for ``table``'s jobs, a card at a time (a big batch's page is written as
    it is made, never held whole).

    A row may carry ``take`` (1 when the job was never redone) and ``history``: its earlier
    takes, oldest first, each ``{"take", "status", "task_id", "files"}`` with files relative to
    ``output_dir``. Rows without them are first takes.
    """
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
    # One card per request: the variants of an id, which follow each other in manifest order.
    links = _Links(output_dir, prefix, embed=embed)
    head = [
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
        f'<p class="meta">{_e(display_path(manifest.path))} · {_e(_models(manifest))} · '
        f"{len(table.rows):,} jobs · generated {generated}</p>",
        f'<ul class="summary">{"".join(summary)}</ul>',
        "</header>",
        '<nav class="controls">',
        *buttons,
        '<span id="shown" aria-live="polite"></span>',
        '<input type="search" id="search" placeholder="Search id or prompt" '
        'aria-label="Search id or prompt">',
        "</nav>",
        '<main id="jobs">',
    ]
    yield "\n".join(head) + "\n"
    for _id, rows in itertools.groupby(table.rows, key=lambda row: str(row["id"])):
        yield _card(list(rows), links, inputs=(table.manifest.base, inputs), embed=embed) + "\n"
    tail = [
        "</main>",
        '<p id="empty" hidden>No job matches.</p>',
        _selection_bar(manifest, redo_flags),
        _LIGHTBOX,
        f"<script>{_SCRIPT}</script>",
        "</body>",
        "</html>",
        "",
    ]
    yield "\n".join(tail)


def _selection_bar(manifest: Manifest, flags: Sequence[str]) -> str:
    argument = _e(_manifest_argument(manifest))
    # The flags of the run the page shows (--sandbox, --state PATH): a redo from a sandbox
    # report must not go to the real API and the real state. A carriage return survives the
    # attribute as a character reference.
    joined = _e("\n".join(flags)).replace("\r", "&#13;")
    return (
        f'<footer class="selection" id="selection" data-manifest="{argument}"'
        f' data-flags="{joined}" data-download="{_e(redo_file_name(manifest.name))}">'
        '<span id="selected-count" aria-live="polite">0 selected</span>'
        '<button type="button" id="select-visible">Select all visible</button>'
        '<button type="button" id="clear">Clear</button>'
        '<textarea id="command" rows="1" readonly spellcheck="false" aria-label="Redo command" '
        'placeholder="Tick the jobs to redo: their ruxa-batch redo command appears here">'
        "</textarea>"
        '<button type="button" id="copy">Copy</button>'
        '<button type="button" id="download">Download list</button>'
        '<span id="copied" aria-live="polite"></span>'
        "<p>The list has one job a line (<code>id@variant</code>, or <code>id</code> for a job "
        'without variants), for <code id="from-command"></code></p>'
        "</footer>"
    )


_LIGHTBOX = (
    '<div id="lightbox" role="dialog" aria-modal="true" aria-label="Full-size picture" hidden>'
    '<div class="lb-bar"><span id="lb-caption"></span><span id="lb-position"></span>'
    '<button type="button" id="lb-prev">← Previous</button>'
    '<button type="button" id="lb-next">Next →</button>'
    '<a id="lb-open" target="_blank" rel="noopener">open the file</a>'
    '<button type="button" id="lb-close" aria-label="Close">✕ Close</button></div>'
    '<div class="lb-body"><div id="lb-inputs"></div>'
    '<div class="lb-main"><img id="lb-image" alt=""></div></div>'
    "</div>"
)


class _Links:
    """Where the page finds an output file: relative to the page, or embedded."""

    def __init__(self, output_dir: Path, prefix: str, *, embed: bool) -> None:
        self.output_dir = output_dir
        self.prefix = prefix
        self.embed = embed

    def __call__(self, name: str) -> tuple[str, str]:
        """The escaped href and img source of the output file ``name``."""
        href = _e(quote(self.prefix + name, safe="/"))
        source = (_embedded(self.output_dir / name) if self.embed else None) or href
        return href, source


def _card(
    rows: Sequence[Mapping[str, Any]],
    links: _Links,
    *,
    inputs: tuple[Path, str],
    embed: bool,
) -> str:
    """One request's card: its inputs once (the variants send the same ones), then each job."""
    first = rows[0]
    pictures = []
    for number, image in enumerate(first["images"], start=1):
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
    params = [("model", first.get("model")), ("size", first["image_size"])]
    if first.get("resolution"):
        params.append(("resolution", first["resolution"]))
    params.append(("format", first["output_format"]))
    count = f"{len(rows)} variants" if len(rows) > 1 else ""
    return "".join(
        [
            f'<section class="request" data-id="{_e(first["id"])}" style="--jobs: {len(rows)}">',
            f"<h2>{_e(first['id'])}<small>{count}</small></h2>",
            f'<p class="prompt">{_e(first["prompt"])}</p>',
            '<p class="params">'
            + "".join(f"<span><b>{_e(key)}</b>{_e(value)}</span>" for key, value in params)
            + "</p>",
            '<div class="row">',
            f'<div class="inputs">{"".join(pictures)}</div>',
            '<span class="arrow" aria-hidden="true">→</span>',
            '<div class="variants">',
            *(_job(row, links, variants=len(rows)) for row in rows),
            "</div></div></section>",
        ]
    )


def _job(row: Mapping[str, Any], links: _Links, *, variants: int) -> str:
    """One job (one variant): its checkbox, its outputs, its earlier takes."""
    status = str(row["status"])
    selector = redo_selector(row, variants=variants)
    take = int(row.get("take") or 1)
    search = f"{selector} {row['id']} {row['prompt']}".lower()
    name = f"variant {row['variant']}" if variants > 1 else str(row["id"])
    outputs = []
    for number, file in enumerate(row["files"], start=1):
        href, source = links(file)
        label = f"{selector} · take {take} · output {number} · {file}"
        outputs.append(
            f'<figure><a class="shot" href="{href}" data-caption="{_e(label)}">'
            f'<img src="{source}" alt="output {number}" loading="lazy"></a>'
            f"<figcaption>{_e(file)}</figcaption></figure>"
        )
    if not outputs:
        label = "no picture yet" if status != JobStatus.FAILED else "no picture"
        outputs.append(f'<figure><div class="none">{label}</div></figure>')
    earlier = []
    for past in row.get("history") or ():
        files = list(past.get("files") or ())
        heading = f"take {past.get('take')} · {past.get('status')}"
        # Why the next take was asked for (redo --reason), as the picture's tooltip.
        reason = f' title="redone: {_e(past["reason"])}"' if past.get("reason") else ""
        for number, file in enumerate(files, start=1):
            href, source = links(file)
            label = f"{selector} · take {past.get('take')} · output {number} · {file}"
            earlier.append(
                f'<figure class="take"{reason}><a class="shot" href="{href}" '
                f'data-caption="{_e(label)}">'
                f'<img src="{source}" alt="{_e(heading)}" loading="lazy"></a>'
                f"<figcaption>{_e(heading)}</figcaption></figure>"
            )
        if not files:
            earlier.append(
                f'<figure class="take"{reason}><div class="none">no picture</div>'
                f"<figcaption>{_e(heading)}</figcaption></figure>"
            )
    details = [f"attempts {_e(row['attempts'])}", f"task {_e(row['task_id'] or 'none')}"]
    parts = [
        f'<article class="job" data-status="{_e(status)}" data-search="{_e(search)}" '
        f'data-selector="{_e(selector)}">',
        f'<label class="pick"><input type="checkbox" class="pick" '
        f'aria-label="Select {_e(selector)}">'
        f'<span class="badge {_e(status)}">{_e(status)}</span> <b>{_e(name)}</b>'
        + (f' <span class="take">take {take}</span>' if take > 1 else "")
        + "</label>",
        f'<div class="outputs">{"".join(outputs)}</div>',
    ]
    if earlier:
        parts.append(f'<div class="takes">{"".join(earlier)}</div>')
    parts.append(f'<p class="job-params">{" · ".join(details)}</p>')
    if row["error"]:
        parts.append(f'<p class="error">{_e(row["error"])}</p>')
    if row["possible_duplicate"]:
        parts.append('<p class="flag">possible duplicate: a create may have been charged twice</p>')
    parts.append("</article>")
    return "".join(parts)


def _models(manifest: Manifest) -> str:
    models = manifest.models() or (manifest.model,)
    return ("model " if len(models) == 1 else "models ") + ", ".join(models)


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
    redo_flags: Sequence[str] = (),
) -> Path:
    """Write the report atomically, as it is made; returns its path. ``redo_flags`` go into
    the page's redo command (see :func:`run_flags`)."""
    make = report_writer(
        output_dir=output_dir,
        destination=destination,
        history=history,
        embed=embed,
        redo_flags=redo_flags,
    )
    write_atomic(destination, make(table))
    return destination


def report_writer(
    *,
    output_dir: Path,
    destination: Path,
    history: Mapping[str, Any],
    embed: bool = False,
    redo_flags: Sequence[str] = (),
) -> Writer:
    """What makes the report at ``destination`` of a table (for :func:`write_results`, which
    writes it in the same pass as the results files)."""
    return functools.partial(
        report_chunks,
        output_dir=output_dir.resolve(),
        report_dir=destination.parent.resolve(),
        history=history,
        embed=embed,
        redo_flags=redo_flags,
    )


def run_flags(*, sandbox: bool, state: Path | None) -> tuple[str, ...]:
    """The flags that point a command at the run a report shows: its sandbox, its state file."""
    flags: tuple[str, ...] = ("--sandbox",) if sandbox else ()
    if state is not None:
        flags += ("--state", display_path(state))
    return flags
