"""The report as the place to decide what to redo: real clicks in Chromium through Playwright.

One browser for the module (each test gets its own context); the system's Chromium, never a
downloaded one. The pages are built from a :class:`Table` made here, so they can hold what a run
cannot make yet (earlier takes) and what a manifest refuses (hostile ids).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, write_manifest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ruxa_batch.manifest import load_manifest
from ruxa_batch.report import write_report
from ruxa_batch.results import Table
from ruxa_batch.sandbox import derive, images
from ruxa_batch.sandbox.pngread import decode_png

pytestmark = pytest.mark.slow  # Chromium

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
COMMAND = "ruxa-batch redo catalog/m.yaml"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Chromium for the whole module; its driver and downloads kept in a temporary folder."""
    if not CHROMIUM.exists():
        message = (
            f"{CHROMIUM} is missing: the report's browser tests need it (apt-get install chromium)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    home = tmp_path_factory.mktemp("playwright")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("TMPDIR", str(home))
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=LAUNCH_ARGS, downloads_path=home
            )
            yield chromium
            chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page that may use the clipboard; any dialog or script error fails the test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    tab = context.new_page()
    problems: list[str] = []
    tab.on(
        "dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss())
    )
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    tab.on("console", lambda message: problems.append(console_error(message.type, message.text)))
    yield tab
    context.close()
    assert [problem for problem in problems if problem] == []


def console_error(kind: str, text: str) -> str:
    """A console message worth failing for: any error but a picture that is not there."""
    if kind != "error" or text.startswith("Failed to load resource"):
        return ""
    return f"console: {text}"


def job_row(
    job_id: str,
    variant: int,
    status: str,
    *,
    files: Sequence[str] = (),
    images: Sequence[str] = (),
    prompt: str = "Place the product on white marble",
    take: int | None = None,
    history: Sequence[dict[str, Any]] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A results row as build_table makes it, with the redo work's take and history when given."""
    row: dict[str, Any] = {
        "id": job_id,
        "variant": variant,
        "status": status,
        "task_id": None if status == "pending" else f"task-{job_id}-{variant}",
        "prompt": prompt,
        "images": list(images),
        "image_size": "1:1",
        "output_format": "png",
        "result_urls": [],
        "files": list(files),
        "error": error,
        "failure": "request" if status == "failed" else None,
        "attempts": 0 if status == "pending" else 1,
        "possible_duplicate": False,
        "submitted_at": None,
        "finished_at": None,
        "key": f"key-{job_id}-{variant}",
    }
    if take is not None:
        row["take"] = take
    if history is not None:
        row["history"] = list(history)
    return row


def draw_output(photo: Path, destination: Path, key: str) -> str:
    """A sandbox-style result of ``photo`` (tinted, framed) at ``destination``."""
    rows = derive.result_rows(
        key, width=192, height=192, source=("5b7fa3" + "0" * 58, decode_png(photo.read_bytes()))
    )
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(images.encode_png(192, 192, rows))
    return destination.name


# The review page: 9 jobs in 7 requests, every status, two redone jobs.
SELECTORS = {
    "mug-marble@1": "succeeded",
    "mug-marble@2": "succeeded",
    "mug-wood@1": "succeeded",
    "mug-wood@2": "failed",
    "lamp-marble": "succeeded",
    "scarf-marble": "running",
    "candle-marble": "pending",
    "throw-marble": "uncertain",
    "beanie-marble": "failed",
}


@pytest.fixture(scope="module")
def review(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The review page (``catalog/out/report.html``), rendered from the folder above ``catalog``."""
    root = tmp_path_factory.mktemp("review")
    folder = root / "catalog"
    folder.mkdir()
    shutil.copytree(REPO / "manifests" / "photos", folder / "photos")
    out = folder / "out"
    manifest = dataclasses.replace(load_manifest(write_manifest(folder, 1)), name="autumn-catalog")

    def output(name: str, photo: str) -> str:
        draw_output(folder / "photos" / f"{photo}.png", out / name, name)
        return name

    def photo(name: str) -> list[str]:
        return [f"photos/{name}.png"]

    mug = photo("mug-ember")
    rows = [
        job_row(
            "mug-marble",
            1,
            "succeeded",
            images=mug,
            files=[output("mug-marble-v1-1.png", "mug-ember")],
        ),
        job_row(
            "mug-marble",
            2,
            "succeeded",
            images=mug,
            files=[output("mug-marble-v2-1.png", "mug-ember")],
            take=2,
            history=[
                {
                    "take": 1,
                    "status": "succeeded",
                    "task_id": "task-old",
                    "files": [output("history/take-1/mug-marble-v2-1.png", "mug-ember")],
                }
            ],
        ),
        job_row(
            "mug-wood",
            1,
            "succeeded",
            images=mug,
            prompt="Place the product on a wooden table",
            files=[output("mug-wood-v1-1.png", "mug-ember")],
        ),
        job_row(
            "mug-wood",
            2,
            "failed",
            images=mug,
            prompt="Place the product on a wooden table",
            error="content safety: the request was refused",
        ),
        job_row(
            "lamp-marble",
            1,
            "succeeded",
            images=photo("lamp-copper"),
            files=[output("lamp-marble-1.png", "lamp-copper")],
        ),
        job_row("scarf-marble", 1, "running", images=photo("scarf-rust")),
        job_row("candle-marble", 1, "pending", images=photo("candle-cedar")),
        job_row("throw-marble", 1, "uncertain", images=photo("throw-ochre")),
        job_row(
            "beanie-marble",
            1,
            "failed",
            images=photo("beanie-moss"),
            take=2,
            error="the task timed out",
            history=[{"take": 1, "status": "failed", "task_id": "task-b1", "files": []}],
        ),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the command names the manifest from here: catalog/m.yaml
        return write_report(
            Table(manifest, tuple(rows)),
            output_dir=out,
            destination=out / "report.html",
            history={"tasks_created": 11, "seconds": 95, "runs": 2},
        )


def visible(page: Page) -> list[str]:
    """The selectors of the jobs shown, in page order."""
    selectors: list[str] = page.eval_on_selector_all(
        "article.job:not([hidden])", "jobs => jobs.map(job => job.dataset.selector)"
    )
    return selectors


def test_search_then_select_all_visible_builds_the_command(page: Page, review: Path) -> None:
    page.goto(review.as_uri())
    expect(page.locator("#selected-count")).to_have_text("0 selected")
    expect(page.locator("#copy")).to_be_disabled()
    page.fill("#search", "mug")
    assert visible(page) == ["mug-marble@1", "mug-marble@2", "mug-wood@1", "mug-wood@2"]
    expect(page.locator("#shown")).to_have_text("4 of 9 jobs shown")
    page.click("#select-visible")
    expect(page.locator("#selected-count")).to_have_text("4 selected")
    expected = f"{COMMAND} mug-marble@1 mug-marble@2 mug-wood@1 mug-wood@2"
    expect(page.locator("#command")).to_have_value(expected)
    page.click("#copy")
    expect(page.locator("#copied")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == expected
    # A narrower search, then one more job by its checkbox: the selection adds up.
    page.fill("#search", "lamp")
    assert visible(page) == ["lamp-marble"]
    expect(page.locator("#selected-count")).to_have_text("4 selected, 4 of them not shown")
    page.get_by_label("Select lamp-marble").check()
    expect(page.locator("#selected-count")).to_have_text("5 selected, 4 of them not shown")
    expect(page.locator("#command")).to_have_value(
        f"{COMMAND} mug-marble@1 mug-marble@2 mug-wood@1 mug-wood@2 lamp-marble"
    )
    page.fill("#search", "")
    expect(page.locator("#selected-count")).to_have_text("5 selected")
    page.click("#clear")
    expect(page.locator("#selected-count")).to_have_text("0 selected")
    expect(page.locator("#command")).to_have_value("")


def test_copy_without_the_clipboard_api_selects_the_text(page: Page, review: Path) -> None:
    """Where navigator.clipboard is missing, the command is selected and execCommand copies."""
    page.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    page.goto(review.as_uri())
    page.get_by_label("Select beanie-marble").check()
    page.click("#copy")
    expect(page.locator("#copied")).to_have_text("Copied")
    assert (
        page.evaluate(
            "(() => { var t = document.getElementById('command');"
            " return t.value.substring(t.selectionStart, t.selectionEnd); })()"
        )
        == f"{COMMAND} beanie-marble"
    )


def test_the_download_holds_the_selectors(page: Page, review: Path, hermetic: Path) -> None:
    page.goto(review.as_uri())
    for selector in ("mug-marble@2", "mug-wood@2", "beanie-marble"):
        page.get_by_label(f"Select {selector}").check()
    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "redo-autumn-catalog.txt"
    saved = hermetic / "redo.txt"
    download.value.save_as(saved)
    assert saved.read_bytes() == b"mug-marble@2\nmug-wood@2\nbeanie-marble\n"
    expect(page.locator("#from-command")).to_have_text(
        "ruxa-batch redo catalog/m.yaml --from redo-autumn-catalog.txt"
    )


def test_the_full_size_view(page: Page, review: Path) -> None:
    page.goto(review.as_uri())
    lightbox = page.locator("#lightbox")
    expect(lightbox).to_be_hidden()
    page.click('article.job[data-selector="mug-marble@1"] a.shot img')
    expect(lightbox).to_be_visible()
    expect(page.locator("#lb-image")).to_have_attribute("src", "mug-marble-v1-1.png")
    expect(page.locator("#lb-caption")).to_have_text(
        "mug-marble@1 · take 1 · output 1 · mug-marble-v1-1.png"
    )
    expect(page.locator("#lb-position")).to_have_text("1 / 5")
    # The job's input beside the output, and loaded (a real picture, not a broken link).
    expect(page.locator("#lb-inputs img")).to_have_attribute("src", "../photos/mug-ember.png")
    assert page.eval_on_selector("#lb-image", "image => image.naturalWidth") == 192
    page.keyboard.press("ArrowRight")
    expect(page.locator("#lb-caption")).to_have_text(
        "mug-marble@2 · take 2 · output 1 · mug-marble-v2-1.png"
    )
    page.keyboard.press("ArrowRight")  # the earlier take of the same job comes next
    expect(page.locator("#lb-caption")).to_have_text(
        "mug-marble@2 · take 1 · output 1 · history/take-1/mug-marble-v2-1.png"
    )
    page.keyboard.press("ArrowLeft")
    expect(page.locator("#lb-position")).to_have_text("2 / 5")
    # Tab stays within the view (a modal dialog), and Escape gives focus back to the picture.
    for _ in range(8):
        page.keyboard.press("Tab")
        assert page.evaluate("document.getElementById('lightbox').contains(document.activeElement)")
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    assert page.evaluate("document.activeElement.dataset.caption").startswith("mug-marble@1 ")
    # From the keyboard alone: Enter on a focused picture opens the view.
    page.keyboard.press("Enter")
    expect(lightbox).to_be_visible()
    expect(page.locator("#lb-position")).to_have_text("1 / 5")
    page.keyboard.press("Escape")
    expect(lightbox).to_be_hidden()
    # Among the visible jobs only: with the search "lamp", one picture; the button closes.
    page.fill("#search", "lamp")
    page.click('article.job[data-selector="lamp-marble"] a.shot img')
    expect(page.locator("#lb-position")).to_have_text("1 / 1")
    expect(page.locator("#lb-next")).to_be_disabled()
    expect(page.locator("#lb-inputs img")).to_have_attribute("src", "../photos/lamp-copper.png")
    page.click("#lb-close")
    expect(lightbox).to_be_hidden()


def test_each_status_filter_and_the_address(page: Page, review: Path, browser: Browser) -> None:
    page.goto(review.as_uri())
    assert visible(page) == list(SELECTORS)
    counts = {"all": 9, "succeeded": 4, "failed": 2, "running": 1, "pending": 1, "uncertain": 1}
    for name, count in counts.items():
        button = page.locator(f'button[data-filter="{name}"]')
        expect(button).to_have_text(f"{name.capitalize()} ({count})")
        button.click()
        expect(button).to_have_attribute("aria-pressed", "true")
        wanted = [s for s, status in SELECTORS.items() if name in ("all", status)]
        assert visible(page) == wanted
        assert len(wanted) == count
        assert page.evaluate("location.hash") == f"#status={name}"
        # A request is hidden only when none of its jobs is shown.
        cards = page.eval_on_selector_all(
            "section.request:not([hidden])", "cards => cards.map(card => card.dataset.id)"
        )
        assert cards == list(dict.fromkeys(s.split("@")[0] for s in wanted))
    page.locator('button[data-filter="failed"]').click()
    page.fill("#search", "mug")
    assert visible(page) == ["mug-wood@2"]
    assert page.evaluate("location.hash") == "#status=failed&q=mug"
    # The address alone restores the view, in a new tab.
    other = page.context.new_page()
    other.goto(page.url)
    assert visible(other) == ["mug-wood@2"]
    expect(other.locator("#search")).to_have_value("mug")
    expect(other.locator('button[data-filter="failed"]')).to_have_attribute("aria-pressed", "true")
    # A search of several words keeps the jobs that have them all, and a space survives the URL.
    other.goto(review.as_uri() + "#status=all&q=wooden+mug")
    assert visible(other) == ["mug-wood@1", "mug-wood@2"]
    expect(other.locator("#search")).to_have_value("wooden mug")
    other.goto(review.as_uri() + "#status=nonsense")
    assert visible(other) == list(SELECTORS)
    other.close()


def test_variants_side_by_side_and_earlier_takes(page: Page, review: Path) -> None:
    page.goto(review.as_uri())
    card = page.locator('section.request[data-id="mug-marble"]')
    expect(card.locator("article.job")).to_have_count(2)
    expect(card.locator("h2 small")).to_have_text("2 variants")
    first, second = (card.locator(f'article.job[data-selector="mug-marble@{n}"]') for n in (1, 2))
    one, two = first.bounding_box(), second.bounding_box()
    assert one and two and one["y"] == two["y"] and two["x"] > one["x"] + one["width"]
    expect(second.locator("label.pick .take")).to_have_text("take 2")
    expect(first.locator("label.pick .take")).to_have_count(0)
    earlier = second.locator(".takes figure.take")
    expect(earlier.locator("figcaption")).to_have_text("take 1 · succeeded")
    assert earlier.locator("img").get_attribute("src") == "history/take-1/mug-marble-v2-1.png"
    # Smaller and dimmed than the take shown.
    size = earlier.locator("img").bounding_box()
    current = second.locator(".outputs img").bounding_box()
    assert size and current and size["width"] < current["width"] / 2
    assert float(earlier.evaluate("figure => getComputedStyle(figure).opacity")) < 1
    # A failed earlier take without pictures still shows its label.
    expect(
        page.locator('article.job[data-selector="beanie-marble"] .takes figcaption')
    ).to_have_text("take 1 · failed")
    # Every request once, in manifest order; a job without variants is named by its id.
    ids = page.eval_on_selector_all("section.request", "cards => cards.map(c => c.dataset.id)")
    assert ids == list(dict.fromkeys(s.split("@")[0] for s in SELECTORS))


def test_review_page_with_made_up_takes(page: Page, review: Path, hermetic: Path) -> None:
    """A selection made and the full-size view closed, on the page made here."""
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(review.as_uri())
    for selector in ("mug-marble@2", "mug-wood@2", "beanie-marble"):
        page.get_by_label(f"Select {selector}").check()
    page.click('article.job[data-selector="mug-wood@1"] a.shot img')
    page.keyboard.press("Escape")
    expect(page.locator("#lightbox")).to_be_hidden()
    expect(page.locator("#selected-count")).to_have_text("3 selected")
    page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    shot = hermetic / "review.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


# -- the loop on a real batch: the report, a selection, redo, the next report ---------------------

FAST_SANDBOX = (
    "--sandbox",
    "--sandbox-generation-time",
    "0.1",
    "--sandbox-image-size",
    "192",
    "--no-progress",
    "--rate-limit",
    "1000",
    "--poll-interval",
    "0.1",
)


def ruxa_batch(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A ruxa-batch command as its own process (Playwright's loop holds this thread)."""
    return subprocess.run(
        [sys.executable, "-m", "ruxa_batch", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_from_the_report_to_redo_to_the_next_report(page: Page, hermetic: Path) -> None:
    """The README's "Review and redo" picture comes from here: the example batch, two hero
    shots made again from a selection in its report."""
    manifests = hermetic / "manifests"
    manifests.mkdir()
    for name in ("example.yaml", "products.csv"):
        shutil.copy(REPO / "manifests" / name, manifests / name)
    shutil.copytree(REPO / "manifests" / "photos", manifests / "photos")
    first = ruxa_batch(hermetic, "run", "manifests/example.yaml", *FAST_SANDBOX)
    assert first.returncode == 0, first.stderr
    out = manifests / "out" / "autumn-catalog.sandbox"
    report = out / "report.html"
    page.set_viewport_size({"width": 1280, "height": 1000})
    page.goto(report.as_uri() + "#q=hero")
    assert visible(page) == ["hero-table@1", "hero-table@2", "hero-window@1", "hero-window@2"]
    page.get_by_label("Select hero-table@2").check()
    page.get_by_label("Select hero-window@1").check()
    expect(page.locator("#command")).to_have_value(
        "ruxa-batch redo manifests/example.yaml --sandbox hero-table@2 hero-window@1"
    )
    with page.expect_download() as download:
        page.click("#download")
    picked = hermetic / download.value.suggested_filename
    download.value.save_as(picked)
    before = {
        name: (out / name).read_bytes() for name in ("hero-table-v2-1.png", "hero-window-v1-1.png")
    }
    untouched = (out / "hero-table-v1-1.png").read_bytes()
    jobs = json.loads((out / "results.json").read_text())["jobs"]
    keys = {job["files"][0]: job["key"] for job in jobs}

    redone = ruxa_batch(
        hermetic, "redo", "manifests/example.yaml", "--from", str(picked), *FAST_SANDBOX
    )
    assert redone.returncode == 0, redone.stderr
    assert "tasks created this run: 2;" in redone.stdout
    for name, data in before.items():
        key = keys[name]
        assert (out / "history" / "take-1" / key[:12] / name).read_bytes() == data
        assert (out / name).read_bytes() != data
    assert (out / "hero-table-v1-1.png").read_bytes() == untouched

    # The next report: the new takes, with the earlier ones beside them.
    page.goto(report.as_uri() + "#q=hero")
    page.reload()
    redone_job = page.locator('article.job[data-selector="hero-table@2"]')
    expect(redone_job.locator("label.pick .take")).to_have_text("take 2")
    expect(redone_job.locator(".takes figcaption")).to_have_text("take 1 · succeeded")
    assert (
        redone_job.locator(".takes img").get_attribute("src")
        == f"history/take-1/{keys['hero-table-v2-1.png'][:12]}/hero-table-v2-1.png"
    )
    expect(
        page.locator('article.job[data-selector="hero-table@1"] label.pick .take')
    ).to_have_count(0)
    page.get_by_label("Select hero-window@2").check()
    page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    shot = hermetic / "review.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("SAVE_REVIEW_SCREENSHOT"):
        shutil.copy(shot, os.environ["SAVE_REVIEW_SCREENSHOT"])


# -- hostile values: nothing breaks out of the page or of the command ------------------------------

HOSTILE = [
    "",
    "plain",
    "it's",
    "'",
    "''",
    '"double"',
    "a b",
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "$(touch {pwned})",
    "`touch {pwned}`",
    "${{HOME}}",
    "$HOME",
    "; touch {pwned}",
    "&& touch {pwned} ||",
    "| tee {pwned}",
    "> {pwned}",
    "*",
    "~",
    "#comment",
    "!!",
    "\\",
    "back\\slash'quote\"mix",
    "-rf",
    "--from=x",
    "é ü 漢字",
    "</script><script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "'\"'\"'",
    "a@1",
    "x=1,y:2/z.%+_-",
]


def test_the_quoting_function_is_shlex_quote(page: Page, review: Path, hermetic: Path) -> None:
    page.goto(review.as_uri())
    pwned = hermetic / "pwned"
    values = [text.format(pwned=pwned) for text in HOSTILE]
    quoted = page.evaluate("values => values.map(window.ruxaReport.shellQuote)", values)
    assert quoted == [shlex.quote(value) for value in values]
    # And a shell gives every argument back as it was, running nothing.
    assert shell_arguments(" ".join(quoted), hermetic) == values
    assert not pwned.exists()


def shell_arguments(arguments: str, hermetic: Path) -> list[str]:
    """What ``sh`` makes of ``arguments`` (a command line's tail), run in an empty folder."""
    folder = hermetic / "shell"
    folder.mkdir(exist_ok=True)
    done = subprocess.run(
        ["sh", "-c", "printf '%s\\0' " + arguments],
        cwd=folder,
        capture_output=True,
        check=True,
        timeout=30,
    )
    assert list(folder.iterdir()) == []
    return [part.decode() for part in done.stdout.split(b"\0")[:-1]]


EVIL = "<script>alert('pwned')</script><img src=x onerror=\"alert('pwned')\">"


def test_hostile_values_stay_inert(page: Page, hermetic: Path) -> None:
    pwned = hermetic / "pwned"
    folder = hermetic / "batch"
    folder.mkdir()
    # A manifest path no one would choose, and ids a manifest would refuse: the page must not care.
    weird = (
        f'we\'ird $(touch {pwned}) `touch {pwned}` "q"\n\r;</script><img src=x onerror=alert(1)>'
    )
    manifest = dataclasses.replace(
        load_manifest(write_manifest(folder, 1)), path=hermetic / weird / "m.yaml", name="t"
    )
    ids = [
        f"evil'$(touch {pwned})",
        f"`touch {pwned}`",
        'quote"d\nline',
        "</script><script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
    ]
    rows = [job_row(ids[0], 1, "failed", prompt=EVIL), job_row(ids[0], 2, "failed", prompt=EVIL)]
    rows += [
        job_row(job_id, 1, "succeeded", prompt=EVIL, files=[f"{job_id}.png"]) for job_id in ids[1:]
    ]
    report = write_report(
        Table(manifest, tuple(rows)),
        output_dir=hermetic / "out",
        destination=hermetic / "out" / "report.html",
        history={},
    )
    page.goto(report.as_uri())
    page.fill("#search", "evil")
    page.fill("#search", "")
    page.click("#select-visible")
    expect(page.locator("#selected-count")).to_have_text("6 selected")
    # Nothing ran: the title is ours, no element came from a value, the one script is ours.
    assert page.title() == "ruxa-batch report: t"
    assert page.locator("img[src=x]").count() == 0
    assert page.locator("script").count() == 1
    expect(page.locator("h1")).to_have_text("t")
    assert page.locator("section.request").nth(2).locator("h2").text_content() == 'quote"d\nline'

    # The command: what shlex.quote would write, and a shell gives back exactly the values.
    selectors = [f"{ids[0]}@1", f"{ids[0]}@2", *ids[1:]]
    manifest_argument = str(Path(weird) / "m.yaml")
    page.click("#copy")
    expect(page.locator("#copied")).to_have_text("Copied")
    command = page.evaluate("navigator.clipboard.readText()")
    words = ["ruxa-batch", "redo", manifest_argument, *selectors]
    assert command == " ".join(shlex.quote(word) for word in words)
    assert shell_arguments(command, hermetic) == words
    assert not pwned.exists()
    # The downloaded list names the same jobs, one a line (a newline inside an id stays in it).
    with page.expect_download() as download:
        page.click("#download")
    saved = hermetic / "list.txt"
    download.value.save_as(saved)
    assert saved.read_text() == "".join(selector + "\n" for selector in selectors)
    # The full-size view's caption is text, not markup.
    page.click("a.shot >> nth=2")
    expect(page.locator("#lb-caption")).to_have_text(
        "</script><script>alert(1)</script> · take 1 · output 1 · </script><script>alert(1)</script>.png"
    )
    page.keyboard.press("Escape")
    assert page.locator("img[src=x]").count() == 0
