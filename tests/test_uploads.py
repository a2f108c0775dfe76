"""Local pictures reach the API through an uploader, once per file, before the create that needs
them; a file that cannot be published costs only its own jobs, and never a task.

These runs use the ``command`` and ``base_url`` uploaders (the S3 one has its own tests against a
real S3 server, and the sandbox's own upload route is tested with the sandbox).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import drive, engine_for, results

from ruxa_batch.client import parse_task
from ruxa_batch.local_files import CommandSpec, LocalFile, hash_file
from ruxa_batch.sandbox.images import render
from ruxa_batch.state import StateStore
from ruxa_batch.uploaders import CommandUploader, _fill
from ruxa_batch.uploads import (
    Destination,
    Published,
    Publisher,
    UploadFailed,
    renewal_margin,
)

# An upload command: logs each call (its arguments and whether it saw the API key), then
# behaves as the file named by its first argument says: a URL, a failure, or garbage.
UPLOADER = """\
import json, os, sys
log, mode, path, sha, ext = sys.argv[1:6]
with open(log, "a") as out:
    out.write(json.dumps({"path": path, "sha": sha, "key": "RUXA_API_KEY" in os.environ}) + "\\n")
if mode == "fail":
    print("uploading " + path, flush=True)
    print("AccessDenied: no write permission on bucket photos", file=sys.stderr)
    sys.exit(3)
if mode == "garbage":
    print("done!")
    sys.exit(0)
print("progress 100%")
print("https://cdn.example.com/in/" + sha + "." + ext)
"""


def picture(path: Path, key: str, *, size: tuple[int, int] = (24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(render(key, width=size[0], height=size[1], fmt="png"))
    return path


def command_manifest(
    folder: Path,
    *,
    mode: str = "ok",
    extra: str = "",
    photos: int = 3,
    prompt: str = "Make it {tone}",
) -> Path:
    for number in range(photos):
        picture(folder / "photos" / f"p{number}.png", f"photo {number}")
    (folder / "uploader.py").write_text(UPLOADER)
    (folder / "mode").write_text(mode)
    path = folder / "m.yaml"
    path.write_text(
        "version: 1\nname: t\n"
        "upload:\n"
        f"  command: [{json.dumps(sys.executable)}, uploader.py, calls.log, {mode},"
        " '{path}', '{sha256}', '{ext}']\n" + extra + "jobs:\n"
        "  - id: '{stem}-{tone}'\n"
        f"    prompt: '{prompt}'\n"
        "    images: ['{file}']\n"
        "    files: 'photos/*.png'\n"
        "    matrix:\n"
        "      tone: [warm, cold]\n"
    )
    return path


def calls(folder: Path) -> list[dict[str, Any]]:
    log = folder / "calls.log"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def args(server: Any, *extra: str) -> list[str]:
    return [
        "ruxa-batch",
        "run",
        "m.yaml",
        "--base-url",
        server.base_url,
        "--no-progress",
        "--poll-interval",
        "0.05",
        "--rate-limit",
        "1000",
        "--retry-backoff",
        "0.01",
        "--summary-json",
        "summary.json",
        *extra,
    ]


def summary(folder: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return document


def sent_images(server: Any) -> list[list[str]]:
    return [task["request"]["input"]["image_urls"] for task in server.tasks()]


def test_each_file_is_uploaded_once_and_a_second_run_uploads_nothing(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    command_manifest(hermetic, prompt="Make {stem} {tone}")
    first = run(args(sandbox))
    assert first.code == 0, first.err
    # 3 photos x 2 tones: 6 tasks, but each photo uploaded once, and never with the API key.
    assert sandbox.counters()["creates"] == 6
    logged = calls(hermetic)
    assert sorted(call["path"] for call in logged) == sorted(
        str((hermetic / "photos" / f"p{n}.png").resolve()) for n in range(3)
    )
    assert not any(call["key"] for call in logged)
    assert summary(hermetic)["files_published_this_run"] == 3
    # Each task got the URL its own photo was published at (the prompt names the photo).
    shas = {f"p{n}": hash_file(hermetic / "photos" / f"p{n}.png")[0] for n in range(3)}
    for task in sandbox.tasks():
        _, stem, _tone = task["request"]["input"]["prompt"].split()
        (url,) = task["request"]["input"]["image_urls"]
        assert url == f"https://cdn.example.com/in/{shas[stem]}.png"
    # The results show the photo by its path, not by where it was uploaded.
    rows = results(hermetic)["jobs"]
    assert sorted(row["images"][0] for row in rows) == sorted(
        [f"photos/p{n}.png" for n in range(3)] * 2
    )

    again = run(args(sandbox))
    assert again.code == 0
    assert len(calls(hermetic)) == 3  # nothing uploaded again
    assert summary(hermetic)["files_published_this_run"] == 0
    assert sandbox.counters()["creates"] == 6


def test_renamed_photo_resubmits_nothing_and_edited_photo_only_its_jobs(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    command_manifest(hermetic)
    assert run(args(sandbox)).code == 0
    (hermetic / "photos" / "p0.png").rename(hermetic / "photos" / "renamed.png")
    moved = run(args(sandbox))
    assert moved.code == 0, moved.err
    assert sandbox.counters()["creates"] == 6  # same bytes: same jobs, their pictures moved
    assert len(calls(hermetic)) == 3
    ids = sorted(row["id"] for row in results(hermetic)["jobs"])
    assert ids == sorted(
        ["renamed-warm", "renamed-cold", "p1-warm", "p1-cold", "p2-warm", "p2-cold"]
    )
    assert all(row["status"] == "succeeded" for row in results(hermetic)["jobs"])

    picture(hermetic / "photos" / "p1.png", "an edited photo 1")
    edited = run(args(sandbox))
    assert edited.code == 0, edited.err
    assert sandbox.counters()["creates"] == 8  # exactly the edited photo's two jobs
    assert len(calls(hermetic)) == 4  # and only the edited file uploaded


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        (
            "fail",
            "the upload command exited with status 3: AccessDenied: no write permission on "
            "bucket photos",
        ),
        ("garbage", "the upload command's last line is not an http(s) URL: 'done!'"),
    ],
)
def test_a_failed_upload_leaves_only_its_jobs_pending_and_creates_nothing(
    run, hermetic, sandbox, keyed, mode, reason
) -> None:
    keyed(sandbox)
    # One photo goes through a failing command; a URL job beside it is unaffected.
    command_manifest(
        hermetic,
        mode=mode,
        photos=1,
        extra="",
    )
    text = (hermetic / "m.yaml").read_text()
    text += (
        "  - id: web\n    prompt: From the web\n    images: ['https://cdn.example.com/web.png']\n"
    )
    (hermetic / "m.yaml").write_text(text)
    result = run(args(sandbox, "--max-tasks", "2"))
    assert result.code == 4, result.err  # nothing failed: the photo's jobs wait for a later run
    assert sandbox.counters()["creates"] == 1  # the URL job only: the failed upload used no task
    line = f"upload failed: photos/p0.png: {reason}"
    assert line in result.err.splitlines()
    rows = {row["id"]: row for row in results(hermetic)["jobs"]}
    assert rows["web"]["status"] == "succeeded"
    for job in ("p0-warm", "p0-cold"):
        assert rows[job]["status"] == "pending"
        assert rows[job]["error"] == f"left for a later run: upload failed: photos/p0.png: {reason}"
    assert len(calls(hermetic)) == 1  # one try per file per run, shared by its two jobs


def test_local_pictures_without_an_upload_section_are_refused_before_anything_is_sent(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    picture(hermetic / "a.png", "a")
    (hermetic / "m.yaml").write_text(
        "version: 1\nname: t\njobs:\n  - id: a\n    prompt: p\n    images: [a.png]\n"
    )
    result = run(args(sandbox))
    assert result.code == 2
    assert result.err.strip() == (
        "error: the manifest sends local pictures but has no upload: section saying where they "
        'go (s3, command or base_url; see the README\'s "Local images"); --sandbox runs need none'
    )
    assert sandbox.counters()["creates"] == 0
    assert not (hermetic / "out").exists()


def test_an_expired_url_is_renewed_before_a_create(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    command_manifest(hermetic, photos=1, extra="  url_lifetime: 3600\n")
    assert run(args(sandbox)).code == 0
    assert len(calls(hermetic)) == 1
    state = hermetic / "out" / "t" / ".ruxa-batch.sqlite"
    # Its URL expires in 20 minutes: more than half the lifetime has passed. A new job that
    # sends the photo must not get it.
    with sqlite3.connect(state) as conn:
        conn.execute("UPDATE uploads SET expires_at = ?", (time.time() + 1200,))
    text = (hermetic / "m.yaml").read_text().replace("[warm, cold]", "[warm, cold, golden]")
    (hermetic / "m.yaml").write_text(text)
    result = run(args(sandbox))
    assert result.code == 0, result.err
    assert len(calls(hermetic)) == 2  # published again before the new create
    assert sandbox.counters()["creates"] == 3
    with sqlite3.connect(state) as conn:
        ((expires,),) = conn.execute("SELECT expires_at FROM uploads").fetchall()
    assert expires > time.time() + 3000


# -- already published: base_url, checked with a HEAD per file per run --------------------------


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A loopback web server publishing a folder; yields its URL, the folder and its request log."""
    root = tmp_path / "site"
    root.mkdir()
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            seen.append(f"{self.command} {self.path}")

        def end_headers(self) -> None:
            tag = root / "etag"  # a test may make the site send an MD5 ETag, as S3 does
            if tag.exists():
                self.send_header("ETag", f'"{tag.read_text()}"')
            super().end_headers()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/shop/", root, seen
    finally:
        server.shutdown()
        server.server_close()


def test_base_url_checks_each_file_with_one_head_per_run(
    run, hermetic, sandbox, keyed, static_site
) -> None:
    keyed(sandbox)
    base, root, seen = static_site
    for name in ("a", "b"):
        picture(hermetic / "photos" / f"{name}.png", name)
        (root / "shop" / "photos").mkdir(parents=True, exist_ok=True)
        (root / "shop" / "photos" / f"{name}.png").write_bytes(
            (hermetic / "photos" / f"{name}.png").read_bytes()
        )
    # c differs from the published copy: the check catches it before a task is paid for.
    picture(hermetic / "photos" / "c.png", "c", size=(30, 20))
    picture(root / "shop" / "photos" / "c.png", "another c")
    (hermetic / "m.yaml").write_text(
        f"version: 1\nname: t\nupload:\n  base_url: {base}\njobs:\n"
        "  - id: '{stem}'\n    prompt: p\n    images: ['{file}']\n    files: photos/*.png\n"
    )
    result = run(args(sandbox))
    assert result.code == 4, result.err
    # Ours are the HEADs; the API (the sandbox) GETs the inputs of the tasks it was given.
    assert sorted(line for line in seen if line.startswith("GET")) == [
        "GET /shop/photos/a.png",
        "GET /shop/photos/b.png",
    ]
    assert sorted(line for line in seen if line.startswith("HEAD")) == [
        "HEAD /shop/photos/a.png",
        "HEAD /shop/photos/b.png",
        "HEAD /shop/photos/c.png",
    ]
    assert sorted(url for (url,) in sent_images(sandbox)) == [
        f"{base}photos/a.png",
        f"{base}photos/b.png",
    ]
    rows = {row["id"]: row for row in results(hermetic)["jobs"]}
    assert rows["c"]["status"] == "pending"
    assert "the published copy is not this file" in rows["c"]["error"]
    # The next run checks again (the site may have changed), once per file it needs.
    seen.clear()
    (root / "shop" / "photos" / "c.png").write_bytes((hermetic / "photos" / "c.png").read_bytes())
    assert run(args(sandbox)).code == 0
    assert seen == ["HEAD /shop/photos/c.png", "GET /shop/photos/c.png"]
    assert sandbox.counters()["creates"] == 3


# -- the publisher on its own: renewal and failures, on a fake clock ---------------------------


class CountingUploader:
    """Publishes instantly; URLs carry a counter so that a renewal shows."""

    target = "test"

    def __init__(self, *, lifetime: float | None, fail: bool = False) -> None:
        self.lifetime = lifetime
        self.fail = fail
        self.calls: list[str] = []

    async def publish(self, file: LocalFile, *, now: float) -> Published:
        self.calls.append(file.sha256)
        await asyncio.sleep(0)
        if self.fail:
            raise UploadFailed(f"{file.shown}: refused")
        expires = None if self.lifetime is None else now + self.lifetime
        return Published(f"https://x/{file.sha256}/{len(self.calls)}", expires, file.size)

    async def aclose(self) -> None:
        return None


def local(tmp_path: Path, name: str) -> LocalFile:
    path = picture(tmp_path / f"{name}.png", name)
    sha, size = hash_file(path)
    return LocalFile(f"{name}.png", sha, size, "image/png", path)


def test_publisher_renews_a_url_only_when_it_would_expire_too_soon(tmp_path: Path) -> None:
    now = [1_000_000.0]
    uploader = CountingUploader(lifetime=3600)
    margin = renewal_margin(task_timeout=900, url_lifetime=3600)
    assert margin == 1500  # the task timeout and the slack of a create, under half the lifetime
    assert renewal_margin(task_timeout=900, url_lifetime=600) == 300  # a fresh URL is enough
    file = local(tmp_path, "a")

    async def scenario() -> list[str]:
        with StateStore.open_for_run(tmp_path / "state.sqlite") as store:
            publisher = Publisher(
                Destination(uploader), store, concurrency=2, margin=margin, clock=lambda: now[0]
            )
            publisher.start([file, file])
            urls = [await publisher.url(file)]
            now[0] += 2000  # 1,600 s left: still good
            urls.append(await publisher.url(file))
            now[0] += 200  # 1,400 s left: renewed
            urls.append(await publisher.url(file))
            await publisher.aclose()
            return urls

    urls = asyncio.run(scenario())
    assert uploader.calls == [file.sha256, file.sha256]
    assert urls[0] == urls[1] != urls[2]


def test_publisher_reuses_what_an_earlier_run_recorded(tmp_path: Path) -> None:
    file = local(tmp_path, "a")
    uploader = CountingUploader(lifetime=None)

    async def one_run() -> str:
        with StateStore.open_for_run(tmp_path / "state.sqlite") as store:
            publisher = Publisher(Destination(uploader), store, concurrency=1, margin=60)
            publisher.start([file])
            url = await publisher.url(file)
            await publisher.aclose()
            return url

    first = asyncio.run(one_run())
    second = asyncio.run(one_run())
    assert first == second and len(uploader.calls) == 1


def test_a_failed_publish_is_told_to_every_job_of_the_file_once(tmp_path: Path) -> None:
    file = local(tmp_path, "a")
    uploader = CountingUploader(lifetime=None, fail=True)

    async def scenario() -> list[str]:
        with StateStore.open_for_run(tmp_path / "state.sqlite") as store:
            publisher = Publisher(Destination(uploader), store, concurrency=1, margin=60)
            publisher.start([file])
            reasons = []
            for _ in range(3):
                try:
                    await publisher.urls_for([file])
                except UploadFailed as exc:
                    reasons.append(str(exc))
            await publisher.aclose()
            return reasons

    assert asyncio.run(scenario()) == ["a.png: refused"] * 3
    assert len(uploader.calls) == 1


def test_a_file_changed_since_planning_is_not_published(tmp_path: Path) -> None:
    file = local(tmp_path, "a")
    file.path.write_bytes(
        render("edited after the manifest was read", width=8, height=8, fmt="png")
    )
    uploader = CommandUploader(CommandSpec(("true", "{path}")), url_lifetime=None, folder=tmp_path)
    with pytest.raises(UploadFailed) as failed:
        asyncio.run(uploader.publish(file, now=0.0))
    assert str(failed.value) == "a.png changed on disk since the manifest was read"


def test_command_arguments_are_templates_with_literal_braces(tmp_path: Path) -> None:
    file = local(tmp_path, "a")
    argv = ("echo", "{{path}}", "{path}", "{name}:{sha256}.{ext}")
    assert _fill(argv, file) == [
        "echo",
        "{path}",
        str(file.path),
        f"a.png:{file.sha256}.png",
    ]


def test_an_upload_command_runs_in_the_manifests_folder(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    folder = hermetic / "catalog"
    folder.mkdir()
    command_manifest(folder, photos=1)  # its command names uploader.py relative to the folder
    result = run([*args(sandbox)[:2], "catalog/m.yaml", *args(sandbox)[3:]])
    assert result.code == 0, result.err
    assert len(calls(folder)) == 1


def test_an_upload_command_that_is_not_there_is_refused_before_anything_is_sent(
    run, hermetic, sandbox, keyed
) -> None:
    keyed(sandbox)
    command_manifest(hermetic, photos=1)
    text = (hermetic / "m.yaml").read_text()
    (hermetic / "m.yaml").write_text(text.replace(json.dumps(sys.executable), "./publish-photo"))
    result = run(args(sandbox))
    assert result.code == 2
    assert result.err.strip() == (
        "error: the upload command './publish-photo' was not found in the manifest's folder (or "
        "is not executable); a relative path in upload.command is relative to the manifest's "
        "folder"
    )
    assert sandbox.counters()["creates"] == 0


def test_republish_uploads_again_what_earlier_runs_recorded(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    command_manifest(hermetic, photos=2)
    assert run(args(sandbox)).code == 0
    assert len(calls(hermetic)) == 2
    text = (hermetic / "m.yaml").read_text().replace("[warm, cold]", "[warm, cold, golden]")
    (hermetic / "m.yaml").write_text(text)
    assert run(args(sandbox, "--republish")).code == 0
    assert len(calls(hermetic)) == 4
    assert summary(hermetic)["files_published_this_run"] == 2


SLOW_UPLOADER = """\
import os, sys, time
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(60)
print("https://cdn.example.com/late.png")
"""


def test_ctrl_c_during_an_upload_stops_it_at_once_and_loses_nothing(
    hermetic: Path, sandbox_factory
) -> None:
    server = sandbox_factory()
    picture(hermetic / "a.png", "a")
    (hermetic / "slow.py").write_text(SLOW_UPLOADER)
    (hermetic / "m.yaml").write_text(
        "version: 1\nname: t\nupload:\n"
        f"  command: [{json.dumps(sys.executable)}, slow.py, pid, '{{path}}']\n"
        "jobs:\n  - id: a\n    prompt: p\n    images: [a.png]\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "ruxa_batch", "run", "m.yaml", "--base-url", server.base_url],
        cwd=hermetic,
        env={**os.environ, "RUXA_API_KEY": server.api_key},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_file = hermetic / "pid"
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline and process.poll() is None, "the upload never began"
        time.sleep(0.05)
    uploader = int(pid_file.read_text())
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=20)
    assert process.returncode == 130, err
    assert time.monotonic() - started < 10  # not the upload command's 60 s
    with pytest.raises(ProcessLookupError):  # the upload command was killed, not orphaned
        os.kill(uploader, 0)
    assert server.counters()["creates"] == 0
    rows = results(hermetic)["jobs"]
    assert [(row["id"], row["status"]) for row in rows] == [("a", "pending")]


def test_the_cap_stops_uploads_too(run, hermetic, sandbox, keyed) -> None:
    keyed(sandbox)
    command_manifest(hermetic, photos=4)  # 8 jobs: p0-warm, p0-cold, p1-warm, ...
    result = run(args(sandbox, "--max-tasks", "2"))
    assert result.code == 3, result.err
    assert sandbox.counters()["creates"] == 2
    # Only the photo of the two jobs the cap let through was uploaded.
    assert [Path(call["path"]).name for call in calls(hermetic)] == ["p0.png"]
    statuses = {row["id"]: row["status"] for row in results(hermetic)["jobs"]}
    assert [job for job, status in statuses.items() if status == "succeeded"] == [
        "p0-warm",
        "p0-cold",
    ]


def test_base_url_refuses_a_copy_whose_checksum_differs(
    run, hermetic, sandbox, keyed, static_site
) -> None:
    keyed(sandbox)
    base, root, _seen = static_site
    picture(hermetic / "photos" / "a.png", "a")
    # The same size, other bytes: only the server's MD5 ETag tells them apart.
    local = (hermetic / "photos" / "a.png").read_bytes()
    other = bytes([local[0] ^ 0]) + local[1:-1] + bytes([local[-1] ^ 1])
    (root / "shop" / "photos").mkdir(parents=True)
    (root / "shop" / "photos" / "a.png").write_bytes(other)
    (root / "etag").write_text(hashlib.md5(other).hexdigest())
    (hermetic / "m.yaml").write_text(
        f"version: 1\nname: t\nupload:\n  base_url: {base}\njobs:\n"
        "  - id: a\n    prompt: p\n    images: [photos/a.png]\n"
    )
    result = run(args(sandbox))
    assert result.code == 4, result.err
    assert sandbox.counters()["creates"] == 0
    assert (
        f"upload failed: photos/a.png: the copy at {base}photos/a.png has other bytes than the "
        "local file (its checksum differs): publish the folder again"
    ) in result.err.splitlines()
    (root / "shop" / "photos" / "a.png").write_bytes(local)
    (root / "etag").write_text(hashlib.md5(local).hexdigest())
    assert run(args(sandbox)).code == 0
    assert sandbox.counters()["creates"] == 1


class JumpingPublisher(Publisher):
    """Hands out URLs, then moves the wall clock on: the create waited long for its turn."""

    def __init__(self, *args: Any, now: list[float], **kwargs: Any) -> None:
        super().__init__(*args, clock=lambda: now[0], **kwargs)
        self.now = now
        self.jumped = False

    async def urls_for(self, files: Any) -> dict[str, str]:
        urls = await super().urls_for(files)
        if not self.jumped:
            self.jumped = True
            self.now[0] += 2500  # 1,100 s of the first URL's 3,600 left: under the margin
        return urls


def test_a_url_that_went_stale_while_the_create_waited_is_renewed_before_it_leaves(
    hermetic: Path, sandbox
) -> None:
    picture(hermetic / "a.png", "a")
    path = hermetic / "m.yaml"
    path.write_text(
        "version: 1\nname: t\nupload:\n  command: [x, '{path}']\n"
        "jobs:\n  - id: a\n    prompt: p\n    images: [a.png]\n"
    )
    engine = engine_for(path, sandbox, hermetic)
    uploader = CountingUploader(lifetime=3600)
    engine.publisher = JumpingPublisher(
        Destination(uploader),
        engine.store,
        concurrency=1,
        margin=renewal_margin(task_timeout=900, url_lifetime=3600),
        now=[1_000_000.0],
    )
    asyncio.run(drive(engine))
    (task,) = sandbox.tasks()
    sha = engine.manifest.jobs[0].local_files[0].sha256
    # The first URL never left: the create carried the renewed one.
    assert task["request"]["input"]["image_urls"] == [f"https://x/{sha}/2"]
    assert uploader.calls == [sha, sha]
    assert sandbox.counters()["creates"] == 1


def test_a_presigned_urls_query_is_hidden_in_what_the_api_says() -> None:
    # The API quotes an input it could not read, signature and access key ID included: that
    # text goes into the state, the results and the report.
    signed = (
        "https://shop.s3.amazonaws.com/in/a.png?X-Amz-Credential=AKIAEXAMPLE%2F20261125"
        "&X-Amz-Signature=0123456789abcdef"
    )
    info = parse_task("t1", {"state": "fail", "failCode": "422", "failMsg": f"({signed}) gone"})
    assert info.fail_msg == "(https://shop.s3.amazonaws.com/in/a.png?[query hidden]) gone"
