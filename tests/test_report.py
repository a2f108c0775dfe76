"""The HTML contact sheet: content, escaping, offline links, and (in Chromium) filters and safety."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, results, run_args, write_manifest

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
