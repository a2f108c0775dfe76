"""Performance benchmark: ruxa-batch against the hand-written alternatives and the rate-limit floor.

Run (after installing the project):  python benchmarks/run_bench.py [--quick]

Every contender runs in its own process against a sandbox in another process, so "client CPU" is
the contender's own user+system time (from wait4) and peak RSS its own. Figures are compared as
ratios measured in one run; absolute times depend on the machine and are printed for reference.

Scenarios (see the README's Performance section):
1. overhead: ruxa-batch vs a bare asyncio+httpx loop (same requests, same connection count, no
   state, no progress, no validation) vs a sequential loop.
2. rate-limit floor: the sandbox answers 429 above 50 requests/s; how close does a run get to the
   time the necessary requests need at that rate?
3. scale: CPU per job and peak memory at 10,000 and 100,000 jobs (no downloads).
4. resume cost: `run` again and `status` after the 100,000-job run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

KEY = "sk-sandbox-benchmark"
CONCURRENCY = 32


# -- the contenders that are not ruxa-batch --------------------------------------------------------


def request_body(index: int) -> dict[str, object]:
    return {
        "model": "google/nano-banana-edit",
        "input": {
            "prompt": f"Edit picture {index:05d}",
            "image_urls": [f"https://cdn.example.com/{index:05d}.png"],
            "output_format": "png",
            "image_size": "1:1",
        },
    }


async def bare_loop(base_url: str, jobs: int, concurrency: int, poll: float, out: Path) -> None:
    """What a careful user writes by hand: asyncio, httpx, a semaphore; nothing else."""
    import httpx

    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    out.mkdir(parents=True, exist_ok=True)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits) as http:

        async def one(index: int) -> None:
            async with semaphore:
                answer = await http.post("/api/v1/tasks/create", json=request_body(index))
            task_id = answer.json()["data"]["taskId"]
            delay = poll
            while True:
                await asyncio.sleep(delay)
                async with semaphore:
                    data = (await http.get(f"/api/v1/tasks/query/{task_id}")).json()["data"]
                if data["state"] in ("success", "completed"):
                    break
                delay = min(delay * 1.5, 30)
            url = json.loads(data["resultJson"])["resultUrls"][0]
            async with semaphore:
                picture = await http.get(url)
            (out / f"{index:05d}.png").write_bytes(picture.content)

        await asyncio.gather(*(one(index) for index in range(jobs)))


def sequential_loop(base_url: str, jobs: int, poll: float, out: Path) -> None:
    """The simplest script: one job at a time."""
    import httpx

    out.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for index in range(jobs):
            task_id = http.post("/api/v1/tasks/create", json=request_body(index)).json()["data"][
                "taskId"
            ]
            while True:
                time.sleep(poll)
                data = http.get(f"/api/v1/tasks/query/{task_id}").json()["data"]
                if data["state"] in ("success", "completed"):
                    break
            url = json.loads(data["resultJson"])["resultUrls"][0]
            (out / f"{index:05d}.png").write_bytes(http.get(url).content)


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Measure:
    wall: float
    cpu: float
    rss_mb: float
    requests: int
    code: int


def measured(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Measure:
    """Run a process; its wall time, user+system CPU and peak RSS (from wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        assert process.stderr is not None
        sys.stderr.write(process.stderr.read().decode(errors="replace"))
    return Measure(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, 0, code)


@contextmanager
def sandbox(*flags: str) -> Iterator[str]:
    """A sandbox in its own process; yields its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "ruxa_batch", "sandbox", "--port", "0", "--api-key", KEY, *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    match = re.search(r"(http://127\.0\.0\.1:\d+)", process.stdout.readline())
    if not match:
        process.kill()
        raise SystemExit("the sandbox did not start")
    try:
        yield match.group(1)
    finally:
        process.terminate()
        process.wait(timeout=10)


def counters(base_url: str) -> dict[str, int]:
    with urllib.request.urlopen(base_url + "/_sandbox/counters", timeout=10) as answer:
        loaded: dict[str, int] = json.load(answer)
        return loaded


def requests_of(before: dict[str, int], after: dict[str, int]) -> int:
    names = ("creates", "queries", "downloads", "rate_limited", "server_errors")
    return sum(after[name] - before[name] for name in names)


def write_manifest(folder: Path, jobs: int) -> Path:
    rows = ["n"] + [f"{index:05d}" for index in range(jobs)]
    (folder / "rows.csv").write_text("\n".join(rows) + "\n")
    manifest = folder / "bench.yaml"
    manifest.write_text(
        "version: 1\nname: bench\njobs:\n  - id: 'job-{n}'\n    prompt: 'Edit picture {n}'\n"
        "    images: ['https://cdn.example.com/{n}.png']\n    rows: rows.csv\n"
    )
    return manifest


def ruxa_batch(folder: Path, base_url: str, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ruxa_batch",
        "run",
        str(folder / "bench.yaml"),
        "--base-url",
        base_url,
        "--no-progress",
        "--quiet",
        *flags,
    ]


ENV = {**os.environ, "RUXA_API_KEY": KEY}


def this_script(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def run_measured(argv: list[str], cwd: Path, base_url: str) -> Measure:
    before = counters(base_url)
    measure = measured(argv, cwd, ENV)
    measure.requests = requests_of(before, counters(base_url))
    if measure.code != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... exited {measure.code}")
    return measure


# -- the scenarios ---------------------------------------------------------------------------------


Row = tuple[str, str, str, str]  # figure, value, target, verdict


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def overhead(root: Path, jobs: int, sequential_jobs: int) -> list[Row]:
    poll = "0.1"
    folder = root / "overhead"
    folder.mkdir()
    write_manifest(folder, jobs)
    with sandbox("--generation-time", "0.05") as url:
        ours = run_measured(
            ruxa_batch(
                folder,
                url,
                "--concurrency",
                str(CONCURRENCY),
                "--rate-limit",
                "10000",
                "--poll-interval",
                poll,
            ),
            folder,
            url,
        )
        bare = run_measured(
            this_script(
                "--bare", url, "--jobs", str(jobs), "--poll", poll, "--out", str(folder / "bare")
            ),
            folder,
            url,
        )
        seq = run_measured(
            this_script(
                "--sequential",
                url,
                "--jobs",
                str(sequential_jobs),
                "--poll",
                "0.05",
                "--out",
                str(folder / "seq"),
            ),
            folder,
            url,
        )
    seq_wall_per_job = seq.wall / sequential_jobs
    rows: list[Row] = []
    for name, m, count in (
        ("ruxa-batch", ours, jobs),
        ("bare asyncio+httpx", bare, jobs),
        ("sequential loop", seq, sequential_jobs),
    ):
        rows.append(
            (
                f"1. {name} ({count:,} jobs)",
                f"wall {m.wall:.1f} s, CPU {m.cpu / count * 1000:.2f} ms/job, "
                f"{m.requests / count:.2f} req/job, RSS {m.rss_mb:.0f} MB",
                "",
                "",
            )
        )
    cpu_ratio = (ours.cpu / jobs) / (bare.cpu / jobs)
    wall_ratio = ours.wall / bare.wall
    slower = seq_wall_per_job / (ours.wall / jobs)
    rows += [
        (
            "1. CPU per job, ruxa-batch / bare",
            f"{cpu_ratio:.2f}x",
            "<= 1.3x",
            verdict(cpu_ratio <= 1.3),
        ),
        (
            "1. wall time, ruxa-batch / bare",
            f"{wall_ratio:.2f}x",
            "<= 1.2x",
            verdict(wall_ratio <= 1.2),
        ),
        (
            "1. sequential / ruxa-batch (per job)",
            f"{slower:.1f}x slower",
            ">= 10x",
            verdict(slower >= 10),
        ),
    ]
    return rows


def same_connections(root: Path, jobs: int, connections: int) -> list[Row]:
    """CPU per job of ruxa-batch and the bare loop with the same number of connections (the
    pool split helps most at 32; at 16 both have fewer to scan)."""
    poll = "0.1"
    folder = root / f"connections-{connections}"
    folder.mkdir()
    write_manifest(folder, jobs)
    with sandbox("--generation-time", "0.05") as url:
        ours = run_measured(
            ruxa_batch(
                folder,
                url,
                "--concurrency",
                str(connections),
                "--rate-limit",
                "10000",
                "--poll-interval",
                poll,
            ),
            folder,
            url,
        )
        bare = run_measured(
            this_script(
                "--bare",
                url,
                "--jobs",
                str(jobs),
                "--poll",
                poll,
                "--connections",
                str(connections),
                "--out",
                str(folder / "bare"),
            ),
            folder,
            url,
        )
    ratio = (ours.cpu / jobs) / (bare.cpu / jobs)
    return [
        (
            f"1. CPU per job at {connections} connections, ruxa-batch / bare",
            f"{ratio:.2f}x ({ours.cpu / jobs * 1000:.2f} / {bare.cpu / jobs * 1000:.2f} ms/job)",
            "<= 1.0x",
            verdict(ratio <= 1.0),
        )
    ]


def rate_floor(root: Path, jobs: int) -> list[Row]:
    folder = root / "floor"
    folder.mkdir()
    write_manifest(folder, jobs)
    generation, rate = 2.0, 50
    with sandbox("--generation-time", str(generation), "--rate-limit", str(rate)) as url:
        before = counters(url)
        m = run_measured(
            ruxa_batch(
                folder,
                url,
                "--concurrency",
                str(CONCURRENCY),
                "--rate-limit",
                str(rate),
                "--poll-interval",
                str(generation),
            ),
            folder,
            url,
        )
        after = counters(url)
    floor = 2 * jobs / rate + generation
    limited = after["rate_limited"] - before["rate_limited"]
    api_requests = sum(after[k] - before[k] for k in ("creates", "queries", "rate_limited"))
    share = limited / api_requests
    ratio = m.wall / floor
    return [
        (
            f"2. {jobs} jobs at {rate} req/s",
            f"wall {m.wall:.1f} s, floor {floor:.1f} s, {api_requests} API requests, "
            f"{limited} 429s",
            "",
            "",
        ),
        ("2. wall / floor", f"{ratio:.2f}x", "<= 1.3x", verdict(ratio <= 1.3)),
        ("2. share of requests answered 429", f"{share:.2%}", "< 1%", verdict(share < 0.01)),
    ]


def scale(root: Path, small: int, large: int) -> list[Row]:
    """CPU per job and peak memory at two batch sizes (no downloads, as the issue measured:
    pictures cost disk, not memory), then the larger batch run again and its status."""
    measures = {}
    resume: list[Row] = []
    for jobs in (small, large):
        folder = root / f"scale-{jobs}"
        folder.mkdir()
        write_manifest(folder, jobs)
        flags = ("--concurrency", "16", "--rate-limit", "10000", "--poll-interval", "0.05")
        flags += ("--no-download", "--max-jobs", str(large))
        with sandbox("--generation-time", "0") as url:
            measures[jobs] = run_measured(ruxa_batch(folder, url, *flags), folder, url)
            if jobs == large:
                resume = resume_cost(folder, url, jobs, flags)
    per_small = measures[small].cpu / small
    per_large = measures[large].cpu / large
    ratio = per_large / per_small
    memory = measures[large].rss_mb / measures[small].rss_mb
    rows: list[Row] = [
        (
            f"3. {n:,} jobs",
            f"wall {m.wall:.1f} s, CPU {m.cpu / n * 1000:.2f} ms/job, "
            f"{m.requests / n:.2f} req/job, RSS {m.rss_mb:.0f} MB",
            "",
            "",
        )
        for n, m in measures.items()
    ]
    rows += [
        (
            f"3. CPU per job, {large:,} / {small:,}",
            f"{ratio:.2f}x",
            "<= 1.1x",
            verdict(ratio <= 1.1),
        ),
        (
            f"3. peak RSS, {large:,} / {small:,}",
            f"{memory:.2f}x ({measures[large].rss_mb:.0f} / {measures[small].rss_mb:.0f} MB)",
            "<= 1.3x",
            verdict(memory <= 1.3),
        ),
    ]
    return rows + resume


def resume_cost(folder: Path, url: str, jobs: int, flags: tuple[str, ...]) -> list[Row]:
    """`run` again and `status`, after every job is done: fast, and no request at all."""
    again = run_measured(ruxa_batch(folder, url, *flags), folder, url)
    status = measured(
        [
            sys.executable,
            "-m",
            "ruxa_batch",
            "status",
            str(folder / "bench.yaml"),
            "--max-jobs",
            str(jobs),
        ],
        folder,
        ENV,
    )
    return [
        (
            f"4. run again after {jobs:,} done",
            f"{again.wall:.2f} s, {again.requests} requests, RSS {again.rss_mb:.0f} MB",
            "< 10 s, 0 requests",
            verdict(again.wall < 10 and again.requests == 0),
        ),
        (
            f"4. status of {jobs:,} jobs",
            f"{status.wall:.2f} s",
            "< 3 s",
            verdict(status.wall < 3 and status.code == 0),
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small N, for a smoke test")
    parser.add_argument("--bare", metavar="URL")
    parser.add_argument("--sequential", metavar="URL")
    parser.add_argument("--jobs", type=int, default=0)
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--connections", type=int, default=CONCURRENCY)
    parser.add_argument(
        "--only-connections", action="store_true", help="only CPU per job at 16 and 32 connections"
    )
    parser.add_argument(
        "--only-scale", action="store_true", help="only the 10,000 and 100,000 job runs"
    )
    args = parser.parse_args()
    if args.bare:
        asyncio.run(bare_loop(args.bare, args.jobs, args.connections, args.poll, args.out))
        return 0
    if args.sequential:
        sequential_loop(args.sequential, args.jobs, args.poll, args.out)
        return 0

    sizes = (
        {"overhead": 200, "sequential": 20, "floor": 100, "small": 100, "large": 1000}
        if args.quick
        else {"overhead": 2000, "sequential": 200, "floor": 500, "small": 10000, "large": 100000}
    )
    root = Path(tempfile.mkdtemp(prefix="ruxa-bench-"))
    started = time.perf_counter()
    try:
        rows = []
        every = not (args.only_connections or args.only_scale)
        if every:
            rows += overhead(root, sizes["overhead"], sizes["sequential"])
        if every or args.only_connections:
            for connections in (16, 32):
                rows += same_connections(root, sizes["overhead"], connections)
        if every:
            rows += rate_floor(root, sizes["floor"])
        if every or args.only_scale:
            rows += scale(root, sizes["small"], sizes["large"])
    finally:
        shutil.rmtree(root, ignore_errors=True)
    width = max(len(row[0]) for row in rows)
    print(f"{'figure':<{width}}  {'measured':<70}  {'target':<18}  result")
    for figure, value, target, result in rows:
        print(f"{figure:<{width}}  {value:<70}  {target:<18}  {result}")
    failed = sum(row[3] == "FAIL" for row in rows)
    print(
        f"\n{sum(row[3] == 'PASS' for row in rows)} passed, {failed} failed "
        f"in {time.perf_counter() - started:.0f} s (sequential loop measured on "
        f"{sizes['sequential']} jobs; its per-job time is compared)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
