"""The S3 uploader against a real S3 server (SeaweedFS on loopback, signatures checked)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import obstore
import pytest

from ruxa_batch.errors import UsageError
from ruxa_batch.local_files import LocalFile, S3Spec, hash_file
from ruxa_batch.upload_s3 import EXPORT_HINT, MISSING_EXTRA, make_s3_uploader, store_config
from ruxa_batch.uploads import Published, UploadFailed

if TYPE_CHECKING:
    from s3server import S3Server

# The s3_server fixture; loaded as a plugin (not imported first) so pytest rewrites its asserts.
pytest_plugins = ["s3server"]

PNG = b"\x89PNG\r\n\x1a\n"
NOW = 1_800_000_000.0
WRONG_SECRET = "wrong-secret-Hk4Tq9Xv2Bn7Lp3R"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, hermetic: Path) -> pytest.MonkeyPatch:
    """No AWS_* settings from the machine; credentials files point into the test's folder."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(hermetic / "aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(hermetic / "aws-config"))
    return monkeypatch


@pytest.fixture
def keys(aws_env: pytest.MonkeyPatch, s3_server: S3Server) -> S3Server:
    """The server's key pair in the environment."""
    aws_env.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    return s3_server


def picture(folder: Path, name: str = "photo.png", size: int = 4000) -> LocalFile:
    """A new PNG-headed file of random bytes, known by its hash as the manifest would know it."""
    path = folder / name
    path.write_bytes(PNG + os.urandom(size - len(PNG)))
    sha, length = hash_file(path)
    return LocalFile(name, sha, length, "image/png", path)


def spec_for(server: S3Server, prefix: str, **changes: str) -> S3Spec:
    """A prefix of its own per test: the bucket is shared by a worker's tests."""
    values = {"bucket": server.bucket, "prefix": prefix, "endpoint_url": server.endpoint}
    values.update(changes)
    return S3Spec(**values)


def publish(spec: S3Spec, file: LocalFile, *, lifetime: float = 600.0) -> Published:
    async def go() -> Published:
        uploader = make_s3_uploader(spec, url_lifetime=lifetime)
        try:
            return await uploader.publish(file, now=NOW)
        finally:
            await uploader.aclose()

    return asyncio.run(go())


def failure(spec: S3Spec, file: LocalFile) -> str:
    with pytest.raises(UploadFailed) as caught:
        publish(spec, file)
    return str(caught.value)


def test_publish_puts_the_file_under_its_hash_and_presigns_a_get(
    keys: S3Server, hermetic: Path
) -> None:
    file = picture(hermetic)
    spec = spec_for(keys, "first/")

    published = publish(spec, file, lifetime=900.0)

    assert published.sent_bytes == file.size
    assert published.expires_at == NOW + 900.0
    key = f"first/{file.sha256}.png"
    meta = obstore.head(keys.store(), key)
    assert meta["size"] == file.size
    fetched = httpx.get(published.url)
    assert fetched.status_code == 200
    assert hashlib.sha256(fetched.content).hexdigest() == file.sha256
    assert fetched.headers["content-type"] == "image/png"
    assert "X-Amz-Expires=900" in published.url

    again = publish(spec, file)
    assert again.sent_bytes == 0
    assert httpx.get(again.url).content == fetched.content


def test_an_object_of_another_size_under_the_key_is_replaced(
    keys: S3Server, hermetic: Path
) -> None:
    file = picture(hermetic)
    obstore.put(keys.store(), f"resend/{file.sha256}.png", b"truncated")

    published = publish(spec_for(keys, "resend/"), file)

    assert published.sent_bytes == file.size
    assert hashlib.sha256(httpx.get(published.url).content).hexdigest() == file.sha256


def test_one_uploader_serves_concurrent_publishes(keys: S3Server, hermetic: Path) -> None:
    files = [picture(hermetic, f"p{index}.png", 2000 + index) for index in range(12)]

    async def go() -> list[Published]:
        uploader = make_s3_uploader(spec_for(keys, "many/"), url_lifetime=600)
        try:
            return await asyncio.gather(*(uploader.publish(f, now=NOW) for f in files))
        finally:
            await uploader.aclose()

    results = asyncio.run(go())

    assert [r.sent_bytes for r in results] == [f.size for f in files]
    for file, result in zip(files, results, strict=True):
        assert hashlib.sha256(httpx.get(result.url).content).hexdigest() == file.sha256


def test_a_file_changed_on_disk_after_hashing_is_not_sent(keys: S3Server, hermetic: Path) -> None:
    file = picture(hermetic)
    file.path.write_bytes(PNG + os.urandom(file.size - len(PNG)))

    message = failure(spec_for(keys, "changed/"), file)

    assert message == "photo.png changed on disk since the manifest was read"
    with pytest.raises(FileNotFoundError):
        obstore.head(keys.store(), f"changed/{file.sha256}.png")


def test_a_vanished_file_fails_that_file(keys: S3Server, hermetic: Path) -> None:
    file = picture(hermetic)
    file.path.unlink()

    assert (
        failure(spec_for(keys, "gone/"), file) == "cannot read photo.png: No such file or directory"
    )


def test_a_wrong_secret_is_refused_and_never_shown(
    keys: S3Server, aws_env: pytest.MonkeyPatch, hermetic: Path
) -> None:
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
    file = picture(hermetic)

    message = failure(spec_for(keys, "wrong/"), file)

    assert message == (
        f"s3://{keys.bucket}/wrong/{file.sha256}.png: access denied (403); check the AWS "
        "credentials in use and that they may read and write this bucket"
    )
    assert "\n" not in message
    assert WRONG_SECRET not in message and keys.secret_key not in message
    assert "Signature" not in message


def test_the_server_checks_signatures(keys: S3Server, hermetic: Path) -> None:
    """Without this, the tests above would prove nothing about signing."""
    file = picture(hermetic)
    url = publish(spec_for(keys, "signed/"), file).url
    assert httpx.get(url).status_code == 200

    unsigned = url.split("?", 1)[0]
    assert httpx.get(unsigned).status_code == 403
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert httpx.get(tampered).status_code == 403


def test_a_missing_bucket_is_named(keys: S3Server, hermetic: Path) -> None:
    file = picture(hermetic)

    message = failure(spec_for(keys, "x/", bucket="no-such-bucket"), file)

    assert message == (
        f"s3://no-such-bucket/x/{file.sha256}.png: bucket no-such-bucket does not exist "
        "(404, NoSuchBucket)"
    )


def test_an_unreachable_endpoint_fails_that_file(keys: S3Server, hermetic: Path) -> None:
    from s3server import free_ports

    port = free_ports(1)[0]
    file = picture(hermetic)

    message = failure(spec_for(keys, "x/", endpoint_url=f"http://127.0.0.1:{port}"), file)

    assert message == f"s3://{keys.bucket}/x/{file.sha256}.png: cannot connect to the S3 endpoint"


def test_keys_from_the_shared_credentials_file_and_aws_profile(
    s3_server: S3Server, aws_env: pytest.MonkeyPatch, hermetic: Path
) -> None:
    (hermetic / "aws-credentials").write_text(
        f"[default]\naws_access_key_id = nobody\naws_secret_access_key = {WRONG_SECRET}\n\n"
        f"[seaweed]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n",
        encoding="utf-8",
    )
    aws_env.setenv("AWS_PROFILE", "seaweed")
    file = picture(hermetic)

    published = publish(spec_for(s3_server, "profile/"), file)

    assert published.sent_bytes == file.size
    assert httpx.get(published.url).status_code == 200


def test_keys_from_the_default_files_in_home(
    s3_server: S3Server, aws_env: pytest.MonkeyPatch, hermetic: Path
) -> None:
    aws_env.delenv("AWS_SHARED_CREDENTIALS_FILE")
    aws_env.delenv("AWS_CONFIG_FILE")
    home = Path(os.environ["HOME"])
    assert home.is_relative_to(hermetic.parent)  # the hermetic fixture's, never the real one
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {s3_server.access_key}\n"
        f"aws_secret_access_key = {s3_server.secret_key}\n",
        encoding="utf-8",
    )
    (home / ".aws" / "config").write_text("[default]\nregion = eu-west-3\n", encoding="utf-8")

    published = publish(spec_for(s3_server, "home/"), picture(hermetic))

    assert "%2Feu-west-3%2Fs3%2F" in published.url
    assert httpx.get(published.url).status_code == 200


def test_environment_keys_win_over_the_files(
    keys: S3Server, aws_env: pytest.MonkeyPatch, hermetic: Path
) -> None:
    (hermetic / "aws-credentials").write_text(
        f"[default]\naws_access_key_id = nobody\naws_secret_access_key = {WRONG_SECRET}\n",
        encoding="utf-8",
    )

    assert publish(spec_for(keys, "envwins/"), picture(hermetic)).sent_bytes > 0


def test_region_from_the_profile_in_the_config_file(
    keys: S3Server, aws_env: pytest.MonkeyPatch, hermetic: Path
) -> None:
    (hermetic / "aws-config").write_text(
        "[default]\nregion = us-west-2\n\n[profile paris]\nregion = eu-west-3\n", encoding="utf-8"
    )
    aws_env.setenv("AWS_PROFILE", "paris")

    published = publish(spec_for(keys, "region/"), picture(hermetic))

    assert "%2Feu-west-3%2Fs3%2F" in published.url
    assert httpx.get(published.url).status_code == 200


def test_which_region_wins(aws_env: pytest.MonkeyPatch, hermetic: Path) -> None:
    (hermetic / "aws-config").write_text("[default]\nregion = us-west-2\n", encoding="utf-8")
    env = {"AWS_ACCESS_KEY_ID": "id", "AWS_CONFIG_FILE": str(hermetic / "aws-config")}
    spec = S3Spec("b")

    assert store_config(spec, env)["region"] == "us-west-2"
    assert store_config(spec, {**env, "AWS_DEFAULT_REGION": "eu-north-1"})["region"] == "eu-north-1"
    assert store_config(spec, {**env, "AWS_REGION": "ap-south-1"})["region"] == "ap-south-1"
    assert store_config(S3Spec("b", region="sa-east-1"), {**env, "AWS_REGION": "x"})["region"] == (
        "sa-east-1"
    )
    # Keys in the environment: obstore reads them itself; none are copied into the config.
    assert "secret_access_key" not in store_config(spec, env)


def test_a_profile_without_static_keys_says_how_to_export_them(
    aws_env: pytest.MonkeyPatch, hermetic: Path
) -> None:
    (hermetic / "aws-config").write_text(
        "[profile work]\nsso_session = corp\nsso_account_id = 1\nsso_role_name = dev\n",
        encoding="utf-8",
    )
    aws_env.setenv("AWS_PROFILE", "work")

    with pytest.raises(UsageError) as caught:
        make_s3_uploader(S3Spec("b"), url_lifetime=60)

    assert caught.value.message == (
        "no AWS credentials: AWS_ACCESS_KEY_ID is not set and profile 'work' has no static keys "
        f"(SSO and assume-role profiles need exporting first: {EXPORT_HINT})"
    )


def test_without_obstore_the_extra_is_named(
    monkeypatch: pytest.MonkeyPatch, aws_env: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "obstore.store", None)

    with pytest.raises(UsageError) as caught:
        make_s3_uploader(S3Spec("b"), url_lifetime=60)

    assert caught.value.message == MISSING_EXTRA


@pytest.mark.parametrize("lifetime", [0.0, 604_801.0])
def test_a_lifetime_s3_cannot_sign_is_refused(keys: S3Server, lifetime: float) -> None:
    with pytest.raises(UsageError, match="presigned URL lives 1 to 604800 seconds"):
        make_s3_uploader(spec_for(keys, ""), url_lifetime=lifetime)


def test_target_names_bucket_prefix_and_endpoint(keys: S3Server) -> None:
    spec = spec_for(keys, "in/")
    assert make_s3_uploader(spec, url_lifetime=60).target == (
        f"s3://{keys.bucket}/in/ at {keys.endpoint}"
    )
    assert make_s3_uploader(S3Spec("b", "p/"), url_lifetime=60).target == "s3://b/p/"


def test_an_endpoint_from_the_environment_is_in_the_target(
    keys: S3Server, aws_env: pytest.MonkeyPatch, hermetic: Path
) -> None:
    aws_env.setenv("AWS_ENDPOINT_URL", keys.endpoint)
    uploader = make_s3_uploader(S3Spec(keys.bucket, "envpoint/"), url_lifetime=60)

    assert uploader.target == f"s3://{keys.bucket}/envpoint/ at {keys.endpoint}"
    url = asyncio.run(uploader.publish(picture(hermetic), now=NOW)).url
    assert url.startswith(f"{keys.endpoint}/{keys.bucket}/envpoint/")
    assert httpx.get(url).status_code == 200


@pytest.mark.slow
def test_a_presigned_url_is_refused_once_it_expires(keys: S3Server, hermetic: Path) -> None:
    # X-Amz-Date has whole seconds, so a 1 s URL may be dead on arrival on a busy machine;
    # 3 s leaves room to see it work first.
    url = publish(spec_for(keys, "expiry/"), picture(hermetic), lifetime=3.0).url
    assert httpx.get(url).status_code == 200

    time.sleep(4.2)

    assert httpx.get(url).status_code == 403


def test_a_missing_weed_binary_fails_loudly(
    monkeypatch: pytest.MonkeyPatch, hermetic: Path
) -> None:
    import sysconfig

    from s3server import find_weed

    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(hermetic))
    monkeypatch.setattr(sys, "executable", str(hermetic / "python"))
    monkeypatch.setenv("PATH", str(hermetic))

    with pytest.raises(RuntimeError, match=r"pip install -e '\.\[test\]'"):
        find_weed()


# -- a whole run: local photos through the real S3 API to the sandbox, which fetches them ----------


def s3_manifest(folder: Path, server: S3Server, prefix: str, *, photos: int = 3) -> list[Path]:
    from ruxa_batch.sandbox.images import render

    paths = []
    for number in range(photos):
        path = folder / "photos" / f"p{number}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render(f"s3 photo {number}", width=32, height=24, fmt="png"))
        paths.append(path)
    (folder / "m.yaml").write_text(
        "version: 1\nname: t\n"
        "upload:\n"
        f"  s3: {{bucket: {server.bucket}, prefix: {prefix}, endpoint_url: '{server.endpoint}',"
        f" region: {server.region}}}\n"
        "  url_lifetime: 3600\n"
        "jobs:\n"
        "  - id: '{stem}'\n    prompt: 'Autumn light'\n    images: ['{file}']\n"
        "    files: 'photos/*.png'\n"
    )
    return paths


def run_line(*extra: str) -> list[str]:
    return [
        "ruxa-batch",
        "run",
        "m.yaml",
        "--no-progress",
        "--poll-interval",
        "0.05",
        "--rate-limit",
        "1000",
        "--summary-json",
        "summary.json",
        *extra,
    ]


def test_a_run_uploads_through_s3_and_the_sandbox_fetches_the_presigned_urls(
    run, keys: S3Server, hermetic: Path, sandbox, keyed
) -> None:
    keyed(sandbox)
    paths = s3_manifest(hermetic, keys, "run/")
    first = run(run_line("--base-url", sandbox.base_url))
    assert first.code == 0, first.err
    shas = sorted(hash_file(path)[0] for path in paths)
    tasks = sandbox.tasks()
    # The sandbox read each task's input from the presigned URL: the bytes it got are the photo's.
    assert sorted(task["inputSha256"] for task in tasks) == shas
    for task in tasks:
        (url,) = task["request"]["input"]["image_urls"]
        assert url.startswith(f"{keys.endpoint}/{keys.bucket}/run/")
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=3600" in url
    # Objects are stored under their content's hash.
    listed = {item["path"] for chunk in obstore.list(keys.store(), "run/") for item in chunk}
    assert listed == {f"run/{sha}.png" for sha in shas}
    summary = json.loads((hermetic / "summary.json").read_text())
    assert summary["files_published_this_run"] == 3
    assert summary["upload_bytes_sent_this_run"] == sum(path.stat().st_size for path in paths)

    # A second run sends nothing: every job is done and no file is published again.
    second = run(run_line("--base-url", sandbox.base_url))
    assert second.code == 0
    summary = json.loads((hermetic / "summary.json").read_text())
    assert (summary["files_published_this_run"], summary["upload_bytes_sent_this_run"]) == (0, 0)
    assert sandbox.counters()["creates"] == 3


def test_a_sandbox_run_with_an_s3_section_uses_s3(run, keys: S3Server, hermetic: Path) -> None:
    paths = s3_manifest(hermetic, keys, "sandboxrun/", photos=2)
    result = run(run_line("--sandbox"))
    assert result.code == 0, result.err
    jobs = json.loads((hermetic / "out" / "t.sandbox" / "results.json").read_text())["jobs"]
    assert sorted(job["images"][0] for job in jobs) == ["photos/p0.png", "photos/p1.png"]
    listed = {item["path"] for chunk in obstore.list(keys.store(), "sandboxrun/") for item in chunk}
    assert listed == {f"sandboxrun/{hash_file(path)[0]}.png" for path in paths}


def test_wrong_s3_credentials_leave_the_jobs_pending_without_a_task(
    run, keys: S3Server, hermetic: Path, sandbox, keyed, aws_env: pytest.MonkeyPatch
) -> None:
    keyed(sandbox)
    aws_env.setenv("AWS_SECRET_ACCESS_KEY", WRONG_SECRET)
    s3_manifest(hermetic, keys, "denied/", photos=2)
    result = run(run_line("--base-url", sandbox.base_url))
    assert result.code == 4, result.err
    assert sandbox.counters()["creates"] == 0
    failed = [line for line in result.err.splitlines() if line.startswith("upload failed:")]
    assert len(failed) == 2 and WRONG_SECRET not in result.err
    assert all("403" in line for line in failed)
