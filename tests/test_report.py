"""The HTML contact sheet: content, escaping, offline links, and (in Chromium) filters and safety."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, results, run_args, write_manifest

from ruxa_batch.manifest import load_manifest
from ruxa_batch.report import redo_file_name, render_report
from ruxa_batch.results import Table, build_table

EVIL = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"


@pytest.fixture
def finished_batch(run, hermetic: Path, sandbox_factory, monkeypatch) -> Path:
    """A run with succeeded and failed jobs, one with a hostile prompt."""
    server = sandbox_factory(fail_rate=0.4, seed=2)
    monkeypatch.setenv("RUXA_API_KEY", server.api_key)
    path = write_manifest(hermetic, 12)
    text = path.read_text().replace(
        "  - id: 'job-{n}'",
        "  - id: evil\n    prompt: "
        + json.dumps(EVIL)
        + "\n    images: ['https://cdn.example.com/evil.png']\n  - id: 'job-{n}'",
    )
    path.write_text(text)
    result = run(run_args(server, "--max-attempts", "1"))
    assert result.code == 1  # some failed, by design
    return hermetic / "out" / "t" / "report.html"


def test_run_writes_the_report_and_prints_its_path(run, finished_batch: Path) -> None:
    assert finished_batch.exists()
    page = finished_batch.read_text()
    rows = results(finished_batch.parent.parent.parent)["jobs"]
    assert page.count('<article class="job"') == len(rows) == 13
    for row in rows:
        assert f'data-status="{row["status"]}"' in page
        for name in row["files"]:
            assert f'<img src="{name}"' in page  # relative to the page: works offline
        if row["status"] == "failed":
            assert row["error"] in page


def test_every_value_is_escaped(finished_batch: Path) -> None:
    page = finished_batch.read_text()
    assert EVIL not in page
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page
    # The only script in the page is ours, and it holds no data.
    assert page.count("<script>") == 1
    assert "pwned" not in page.split("<script>")[1]


def test_report_command_options(run, finished_batch: Path, hermetic: Path) -> None:
    other = hermetic / "elsewhere" / "sheet.html"
    other.parent.mkdir()
    result = run(["ruxa-batch", "report", "m.yaml", "-o", str(other)])
    assert (result.code, result.out) == (0, f"wrote {other.relative_to(hermetic)}\n")
    page = other.read_text()
    assert '<img src="../out/t/job-' in page  # still relative, from the page's folder
    embedded = run(["ruxa-batch", "report", "m.yaml", "-o", "embedded.html", "--embed"])
    assert embedded.code == 0
    assert '<img src="data:image/png;base64,iVBORw0KGgo' in (hermetic / "embedded.html").read_text()


def test_report_of_jobs_not_run_yet(run, hermetic: Path, sandbox, keyed) -> None:
    keyed(sandbox)
    write_manifest(hermetic, 2)
    assert (
        run(["ruxa-batch", "run", "m.yaml", "--sandbox", "--max-tasks", "1", "--no-progress"]).code
        == 3
    )
    result = run(["ruxa-batch", "report", "m.yaml", "--sandbox"])
    assert result.code == 0
    page = (hermetic / "out" / "t.sandbox" / "report.html").read_text()
    assert page.count('data-status="pending"') == 1
    assert "no picture yet" in page


def render(table: Table, hermetic: Path) -> str:
    return render_report(table, output_dir=hermetic / "out", report_dir=hermetic, history={})


def test_variants_share_one_card_and_each_job_is_selectable(hermetic: Path) -> None:
    """Rows as build_table makes them today (no take, no history): first takes."""
    manifest = load_manifest(write_manifest(hermetic, 2, variants=2))
    page = render(build_table(manifest, {}), hermetic)
    assert page.count('<section class="request"') == 2
    assert page.count('<article class="job"') == 4
    assert re.findall(r'data-selector="([^"]*)"', page) == [
        "job-000@1",
        "job-000@2",
        "job-001@1",
        "job-001@2",
    ]
    assert page.count('type="checkbox" class="pick"') == 4
    assert 'class="take"' not in page
    assert 'data-manifest="m.yaml" data-flags="" data-download="redo-t.txt"' in page
    for name in ("all", "succeeded", "failed", "running", "pending", "uncertain"):
        assert f'data-filter="{name}"' in page
    assert ">Pending (4)</button>" in page


def test_a_job_without_variants_is_selected_by_its_id(hermetic: Path) -> None:
    manifest = load_manifest(write_manifest(hermetic, 1))
    page = render(build_table(manifest, {}), hermetic)
    assert 'data-selector="job-000"' in page


def test_earlier_takes_are_linked_and_escaped(hermetic: Path) -> None:
    manifest = load_manifest(write_manifest(hermetic, 1))
    row = dict(build_table(manifest, {}).rows[0])
    row.update(
        status="succeeded",
        files=["job-000-v1-1.png"],
        take=3,
        history=[
            {"take": 1, "status": "failed", "task_id": "t1", "files": []},
            {
                "take": 2,
                "status": "succeeded",
                "task_id": "t2",
                "files": ["history/take-2/a b<.png"],
            },
        ],
    )
    page = render(Table(manifest, (row,)), hermetic)
    assert '<span class="take">take 3</span>' in page
    assert "<figcaption>take 1 · failed</figcaption>" in page
    assert '<img src="out/history/take-2/a%20b%3C.png" alt="take 2 · succeeded"' in page
    assert 'data-caption="job-000 · take 2 · output 1 · history/take-2/a b&lt;.png"' in page


def test_the_manifest_argument_is_never_an_option(hermetic: Path) -> None:
    manifest = load_manifest(write_manifest(hermetic, 1))
    odd = dataclasses.replace(manifest, path=hermetic / "-x.yaml", name="-x")
    page = render(build_table(odd, {}), hermetic)
    assert 'data-manifest="./-x.yaml" data-flags="" data-download="redo-x.txt"' in page


@pytest.mark.parametrize(
    ("name", "file"),
    [
        ("autumn-catalog", "redo-autumn-catalog.txt"),
        ("my batch!", "redo-my-batch.txt"),
        ("../..", "redo-batch.txt"),
        ("été", "redo-t.txt"),
    ],
)
def test_redo_file_name(name: str, file: str) -> None:
    assert redo_file_name(name) == file


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=3000",
]


def browser(hermetic: Path, *args: str) -> str:
    assert CHROMIUM is not None
    profile = hermetic / "chromium-profile"
    done = subprocess.run(
        [CHROMIUM, *BROWSER_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow  # three Chromium starts
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_in_a_real_browser(finished_batch: Path, hermetic: Path) -> None:
    url = finished_batch.resolve().as_uri()
    # Renders: a screenshot of the page (saved for the README when asked to).
    shot = hermetic / "report.png"
    browser(hermetic, f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars", url)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    # The script ran and the hostile prompt did not: the title is ours, no injected element.
    dom = browser(hermetic, "--dump-dom", url)
    assert "<title>ruxa-batch report: t</title>" in dom
    assert 'src="x"' not in dom
    assert "pwned" not in dom.split("<title>")[1].split("</title>")[0]
    all_articles = re.findall(r'<article class="job"[^>]*>', dom)
    assert all_articles and not any(" hidden" in tag for tag in all_articles)
    # The failed filter (the same one its button sets) hides every other row.
    filtered = browser(hermetic, "--dump-dom", url + "#failed")
    tags = re.findall(r'<article class="job"[^>]*>', filtered)
    failed = [tag for tag in tags if 'data-status="failed"' in tag]
    others = [tag for tag in tags if 'data-status="failed"' not in tag]
    assert failed and others
    assert not any(" hidden" in tag for tag in failed)
    assert all(" hidden" in tag for tag in others)
    assert 'data-filter="failed" aria-pressed="true"' in filtered


@pytest.mark.slow  # the example batch, then Chromium
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_the_example_batch_report_renders(run, hermetic: Path) -> None:
    """The README's first command ends with this page; its screenshot is the README's picture."""
    manifests = hermetic / "manifests"
    manifests.mkdir()
    for name in ("example.yaml", "products.csv"):
        shutil.copy(REPO / "manifests" / name, manifests / name)
    shutil.copytree(REPO / "manifests" / "photos", manifests / "photos")
    result = run(
        [
            "ruxa-batch",
            "run",
            "manifests/example.yaml",
            "--sandbox",
            "--sandbox-generation-time",
            "0.1",
            "--sandbox-image-size",
            "256",
            "--no-progress",
            # The page does not depend on pacing; the example's (10 requests/s, a poll every
            # 2 s) would make this run take 4 s. test_cli runs the example as it is.
            "--rate-limit",
            "1000",
            "--poll-interval",
            "0.1",
        ]
    )
    assert result.code == 0, result.err
    page = manifests / "out" / "autumn-catalog.sandbox" / "report.html"
    assert "report: manifests/out/autumn-catalog.sandbox/report.html" in result.out
    shot = hermetic / "example-report.png"
    browser(
        hermetic,
        f"--screenshot={shot}",
        "--window-size=1280,1000",
        "--hide-scrollbars",
        page.resolve().as_uri(),
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("SAVE_REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["SAVE_REPORT_SCREENSHOT"])
