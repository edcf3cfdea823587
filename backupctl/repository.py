"""The S3 snapshot repository: layout, open/create, commit, list, read.

Layout (docs/REPOSITORY_FORMAT.md is the specification this code obeys)::

    s3://BUCKET/PREFIX/
      backupctl.json                          repository config
      snapshots/<source-key>/<snapshot-id>/
         schema.json                          written first
         data/part-SSSSS-CCCC.json.gz         data parts only
         _tasks/<task-id>.json                checkpoints while running (removed on commit)
         manifest.json                        written last: the commit point
      runs/pending/<source-key>/<id>.json     an in-progress snapshot run (plan + lease), for resume
      runs/readers/<id>/<token>.json          a restore reading snapshot <id> (lease): prune keeps it

Every call to S3 goes through ``S3Store``, which wraps it once in the retry
policy (restic's pattern: one small backend interface, retried in one place).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import re
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import IO, Any

import botocore.exceptions
import orjson

from backupctl.aws import AwsContext
from backupctl.errors import (
    AuthError,
    Conflict,
    FormatError,
    InvalidInput,
    NotFound,
    SnapshotNotFound,
)
from backupctl.model import (
    FORMAT_MAJOR,
    FORMAT_VERSION,
    Manifest,
    check_snapshot_id,
    isoformat,
    parse_time,
    utcnow,
)
from backupctl.retry import DEFAULT_POLICY, RetryPolicy, policy_from_env

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()/=+-]*$")


@dataclass(frozen=True)
class RepoURI:
    bucket: str
    prefix: str  # "" or "some/prefix/" (always ends with "/")

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def parse_repo_uri(uri: str) -> RepoURI:
    """Parse ``s3://BUCKET[/PREFIX]``; raise InvalidInput naming what is wrong."""
    if not uri or not uri.startswith("s3://"):
        raise InvalidInput(f"invalid --repo '{uri}': expected s3://BUCKET[/PREFIX]")
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket or re.match(r"^\d+\.\d+\.\d+\.\d+$", bucket):
        raise InvalidInput(f"invalid --repo '{uri}': '{bucket}' is not a valid S3 bucket name")
    prefix = prefix.strip("/")
    if prefix and (not _PREFIX_RE.match(prefix) or any(seg in ("", ".", "..") for seg in prefix.split("/"))):
        raise InvalidInput(f"invalid --repo '{uri}': bad prefix '{prefix}'")
    return RepoURI(bucket, prefix + "/" if prefix else "")


def default_repo_uri(aws: AwsContext, region: str) -> RepoURI:
    return RepoURI(f"backupctl-{aws.account_id(region)}-{region}", "")


LOCK_MODES = ("governance", "compliance")
MAX_LOCK_DAYS = 36_500
_KMS_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{12}:(key|alias)/\S+$")
# Manifests of snapshots whose every part was written with an S3 SHA-256 checksum say so (REPOSITORY_FORMAT.md).
PART_CHECKSUM = "sha256"
PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


@dataclass(frozen=True)
class WriteOptions:
    """How a snapshot writes its objects: SSE-KMS and S3 Object Lock retention.

    ``kms_key_id`` encrypts every object the snapshot writes (parts, schema,
    manifest, checkpoints, the pending pointer). Object Lock applies to the
    snapshot's own objects (``snapshots/<source-key>/<id>/`` except the
    ``_``-prefixed run state, which is deleted at commit), all with the same
    ``lock_until``: the snapshot's ``created_at`` plus ``lock_days``.
    """

    kms_key_id: str | None = None  # the key's ARN once Repository.open has resolved it
    lock_mode: str | None = None  # GOVERNANCE | COMPLIANCE
    lock_days: int | None = None
    lock_until: str | None = None  # ISO 8601 UTC, fixed per snapshot (for_snapshot)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> WriteOptions:
        d = d or {}
        return cls(d.get("kms_key_id"), d.get("lock_mode"), d.get("lock_days"), d.get("lock_until"))

    @property
    def locking(self) -> bool:
        return bool(self.lock_days)

    def plan_params(self) -> dict[str, Any]:
        """What a resumed run must share with the pending one (only the options that are set)."""
        out: dict[str, Any] = {}
        if self.kms_key_id:
            out["kms_key_id"] = self.kms_key_id
        if self.locking:
            out["object_lock"] = [self.lock_mode, self.lock_days]
        return out

    def for_snapshot(self, created_at: str) -> WriteOptions:
        if not self.locking:
            return self
        until = parse_time(created_at) + timedelta(days=int(self.lock_days or 0))
        return dataclasses.replace(self, lock_until=isoformat(until))

    def manifest_fields(self) -> dict[str, Any]:
        """The manifest's ``encryption`` / ``object_lock`` fields (docs/REPOSITORY_FORMAT.md)."""
        out: dict[str, Any] = {}
        if self.kms_key_id:
            out["encryption"] = {"algorithm": "aws:kms", "kms_key_id": self.kms_key_id}
        if self.locking:
            out["object_lock"] = {"mode": self.lock_mode, "days": self.lock_days, "retain_until": self.lock_until}
        return out

    def sse_args(self) -> dict[str, Any]:
        if not self.kms_key_id:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}

    def lock_args(self, key: str) -> dict[str, Any]:
        """Object Lock arguments for ``key`` (relative to the repository), or none."""
        if not self.locking or not is_snapshot_object(key):
            return {}
        if not self.lock_until:
            raise ValueError("WriteOptions.for_snapshot was not applied")  # a bug, not user input
        return {"ObjectLockMode": str(self.lock_mode), "ObjectLockRetainUntilDate": parse_time(self.lock_until)}


def is_snapshot_object(key: str) -> bool:
    """True for a snapshot's own objects (what Object Lock protects), false for run state and the rest."""
    segs = key.split("/")
    return len(segs) >= 4 and segs[0] == "snapshots" and not segs[3].startswith("_")


def check_write_options(
    object_lock_days: int | None, object_lock_mode: str | None, kms_key_id: str | None, region: str,
) -> WriteOptions:
    """Validate --object-lock-days/--object-lock-mode/--kms-key-id (no AWS call); raise InvalidInput."""
    mode = None
    if object_lock_days is not None:
        if not 1 <= object_lock_days <= MAX_LOCK_DAYS:
            raise InvalidInput(f"--object-lock-days {object_lock_days} is out of range [1, {MAX_LOCK_DAYS}]")
        mode = (object_lock_mode or "governance").lower()
        if mode not in LOCK_MODES:
            raise InvalidInput(f"--object-lock-mode {object_lock_mode} is not one of {', '.join(LOCK_MODES)}")
        mode = mode.upper()
    elif object_lock_mode is not None:
        raise InvalidInput("--object-lock-mode needs --object-lock-days N")
    if kms_key_id is not None:
        if not kms_key_id.strip() or any(c.isspace() for c in kms_key_id) or len(kms_key_id) > 2048:
            raise InvalidInput(f"invalid --kms-key-id {kms_key_id!r}: expected a key id, key ARN, alias/NAME or alias ARN")
        if kms_key_id.startswith("arn:"):
            m = _KMS_ARN_RE.match(kms_key_id)
            if not m:
                raise InvalidInput(f"invalid --kms-key-id '{kms_key_id}': not a KMS key or alias ARN")
            if m.group(1) != region:
                raise InvalidInput(
                    f"--kms-key-id '{kms_key_id}' is a key in {m.group(1)}, but the repository is in {region}: "
                    f"use a key (or a multi-Region replica) in {region}"
                )
    return WriteOptions(kms_key_id=kms_key_id, lock_mode=mode, lock_days=object_lock_days)


def _b64_sha256(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e: botocore.exceptions.ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


PART_SPOOL_BYTES = 64 << 20  # a part is built in memory up to this size, past it in a temporary file


class PartSink:
    """Where a part's bytes go as its writer makes them: memory, up to ``spool_bytes``, then a
    temporary file; hashed (sha256) and counted on the way.

    Every part writer's sink (MySQL Parquet parts, DynamoDB JSON parts). A MySQL part of the default
    chunk (100,000 rows) is ~10 MB: written to a temporary file and read back to be sent, its bytes
    crossed the kernel twice more than needed (file writes were ~5% of a snapshot worker's CPU,
    docs/BENCHMARKS.md); held in memory it is sent in one piece (``S3Store.put`` takes ``body()``). A
    part larger than ``spool_bytes`` (wide rows, a large ``--part-size-mb``) still goes to disk: memory
    stays bounded.
    """

    def __init__(self, spool_bytes: int = PART_SPOOL_BYTES) -> None:
        self.h = hashlib.sha256()
        self.n = 0
        self.closed = False
        self.spool_bytes = spool_bytes
        self.chunks: list[bytes] = []
        self.file: IO[bytes] | None = None

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.h.update(data)
        self.n += len(data)
        if self.file is not None:
            self.file.write(data)
        else:
            self.chunks.append(data)
            if self.n > self.spool_bytes:
                self.file = tempfile.TemporaryFile(prefix="backupctl-part-")
                self.file.writelines(self.chunks)
                self.chunks = []
        return len(data)

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()

    def tell(self) -> int:
        return self.n

    def close(self) -> None:
        self.closed = True

    def body(self) -> bytes | IO[bytes]:
        """What was written: one bytes object, or the temporary file (at its start)."""
        if self.file is None:
            return b"".join(self.chunks)
        self.file.flush()
        self.file.seek(0)
        return self.file

    def discard(self) -> None:
        self.chunks = []
        if self.file is not None:
            self.file.close()
            self.file = None


def part_buffer(nbytes: int | None, prefix: str) -> IO[bytes]:
    """Where a downloaded part is kept while it is read: memory up to ``PART_SPOOL_BYTES``, else a
    temporary file (either a context manager; see ``PartSink`` for why)."""
    if nbytes is not None and 0 <= nbytes <= PART_SPOOL_BYTES:
        return io.BytesIO()
    return tempfile.TemporaryFile(prefix=prefix)


class S3Store:
    """Object storage under one bucket/prefix: put, get, head, list, delete.

    Keys passed in are relative to the repository prefix. Transient failures
    are retried here and nowhere else; ``NotFound`` is permanent.
    """

    def __init__(self, aws: AwsContext, region: str, uri: RepoURI, policy: RetryPolicy = DEFAULT_POLICY,
                 write: WriteOptions | None = None):
        self.aws = aws
        self.region = region
        self.uri = uri
        self.policy = policy
        self.write = write or WriteOptions()

    @property
    def s3(self) -> Any:
        return self.aws.client("s3", self.region)

    def full_key(self, key: str) -> str:
        return self.uri.prefix + key

    def url(self, key: str) -> str:
        return f"s3://{self.uri.bucket}/{self.full_key(key)}"

    def put(self, key: str, body: bytes | IO[bytes], metadata: dict[str, str] | None = None) -> None:
        """Write one object. S3 stores its SHA-256 (checked on receipt: a part's is the ``sha256`` in
        ``metadata``), so a restore can check a part with one HEAD; ``self.write`` adds SSE-KMS and
        Object Lock retention."""
        args: dict[str, Any] = {"ChecksumAlgorithm": "SHA256", **self.write.sse_args(), **self.write.lock_args(key)}
        sha = (metadata or {}).get("sha256")
        if sha:
            args["ChecksumSHA256"] = _b64_sha256(sha)

        def call() -> None:
            if hasattr(body, "seek"):
                body.seek(0)  # type: ignore[union-attr]
            self.s3.put_object(
                Bucket=self.uri.bucket, Key=self.full_key(key), Body=body, Metadata=metadata or {}, **args
            )

        self.policy.call(call, f"writing {self.url(key)}")

    def copy(self, src: str, dst: str, metadata: dict[str, str]) -> None:
        """Server-side copy within the repository, written like ``put`` (checksum, SSE-KMS, Object Lock)."""
        s3, bucket = self.s3, self.uri.bucket
        self.policy.call(
            lambda: s3.copy_object(
                Bucket=bucket, Key=self.full_key(dst), CopySource={"Bucket": bucket, "Key": self.full_key(src)},
                MetadataDirective="REPLACE", Metadata=metadata, ChecksumAlgorithm="SHA256", **self.write.sse_args(),
            ),
            f"copying {src} to {dst}",
        )
        lock = self.write.lock_args(dst)
        if lock:  # CopyObject takes the lock headers too, but a separate call works on every S3 implementation
            self.policy.call(
                lambda: s3.put_object_retention(
                    Bucket=bucket, Key=self.full_key(dst),
                    Retention={"Mode": lock["ObjectLockMode"], "RetainUntilDate": lock["ObjectLockRetainUntilDate"]},
                ),
                f"locking {self.url(dst)}",
            )

    def put_json(self, key: str, doc: Any) -> str:
        """Write ``doc`` as JSON; returns the SHA-256 (hex) of the bytes written."""
        data = orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        self.put(key, data)
        return hashlib.sha256(data).hexdigest()

    def get(self, key: str) -> bytes:
        def call() -> bytes:
            try:
                resp = self.s3.get_object(Bucket=self.uri.bucket, Key=self.full_key(key))
            except botocore.exceptions.ClientError as e:
                if _code(e) in ("NoSuchKey", "404", "NotFound"):
                    raise NotFound(f"{self.url(key)} does not exist") from e
                raise
            return bytes(resp["Body"].read())

        return self.policy.call(call, f"reading {self.url(key)}")

    def download_to(self, key: str, fileobj: IO[bytes]) -> str:
        """Stream an object into ``fileobj``; return the sha256 of what was read."""

        def call() -> str:
            fileobj.seek(0)
            fileobj.truncate()
            h = hashlib.sha256()
            try:
                resp = self.s3.get_object(Bucket=self.uri.bucket, Key=self.full_key(key))
            except botocore.exceptions.ClientError as e:
                if _code(e) in ("NoSuchKey", "404", "NotFound"):
                    raise NotFound(f"part {self.url(key)} is missing") from e
                raise
            for chunk in resp["Body"].iter_chunks(1 << 20):
                h.update(chunk)
                fileobj.write(chunk)
            fileobj.flush()
            fileobj.seek(0)
            return h.hexdigest()

        return self.policy.call(call, f"reading {self.url(key)}")

    def get_json(self, key: str) -> Any:
        data = self.get(key)
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise FormatError(f"{self.url(key)} is not valid JSON: {e}") from e

    def head(self, key: str) -> dict[str, Any] | None:
        def call() -> dict[str, Any] | None:
            try:
                return dict(self.s3.head_object(Bucket=self.uri.bucket, Key=self.full_key(key), ChecksumMode="ENABLED"))
            except botocore.exceptions.ClientError as e:
                if _code(e) in ("404", "NoSuchKey", "NotFound") or _status(e) == 404:
                    return None
                raise

        return self.policy.call(call, f"checking {self.url(key)}")

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def _pages(self, prefix: str, delimiter: str | None) -> Iterator[dict[str, Any]]:
        kwargs: dict[str, Any] = {"Bucket": self.uri.bucket, "Prefix": self.full_key(prefix)}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            resp = self.policy.call(partial(self.s3.list_objects_v2, **kwargs), f"listing {self.url(prefix)}")
            yield resp
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def list_keys(self, prefix: str) -> Iterator[str]:
        """Keys (relative to the repository) under ``prefix``."""
        for resp in self._pages(prefix, None):
            for obj in resp.get("Contents", []):
                yield obj["Key"][len(self.uri.prefix) :]

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate 'folders' under ``prefix`` (which ends with /)."""
        base = self.full_key(prefix)
        return [
            cp["Prefix"][len(base) :].rstrip("/")
            for resp in self._pages(prefix, "/")
            for cp in resp.get("CommonPrefixes", [])
        ]

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self.full_key(k)} for k in keys[i : i + 1000]]
            resp = self.policy.call(
                partial(self.s3.delete_objects, Bucket=self.uri.bucket, Delete={"Objects": batch, "Quiet": True}),
                f"deleting under {self.url('')}",
            )
            if resp.get("Errors"):
                err = resp["Errors"][0]
                raise AuthError(f"cannot delete {err.get('Key')}: {err.get('Code')} {err.get('Message')}")


class Repository:
    """A snapshot repository in one bucket/prefix, in one region."""

    CONFIG_KEY = "backupctl.json"

    def __init__(self, store: S3Store, config: dict[str, Any]):
        self.store = store
        self.config = config

    @property
    def uri(self) -> RepoURI:
        return self.store.uri

    @property
    def region(self) -> str:
        return self.store.region

    # -- opening ---------------------------------------------------------------

    @classmethod
    def open(
        cls,
        aws: AwsContext,
        region: str,
        uri: str | RepoURI | None = None,
        create: bool = False,
        policy: RetryPolicy | None = None,
        write: WriteOptions | None = None,
    ) -> Repository:
        """Open the repository at ``uri`` (default: the account's default repo in ``region``).

        With ``create=True`` a missing bucket is created in ``region`` (default
        encryption, public access blocked, versioning on; Object Lock enabled
        when ``write`` asks for locking) and the config is written; without it
        a missing repository raises NotFound. A bucket in another region than
        ``region`` raises InvalidInput.

        Opening to write (``create=True`` or ``write`` given) first checks the
        KMS key of ``write`` (DescribeKey in ``region``), then refuses an
        existing bucket whose public access is not blocked, or that has a
        bucket policy allowing everyone, or (when locking) that lacks Object
        Lock - all before anything is written.
        """
        repo_uri = uri if isinstance(uri, RepoURI) else (parse_repo_uri(uri) if uri else None)
        if repo_uri is None:
            repo_uri = default_repo_uri(aws, region)
        store = S3Store(aws, region, repo_uri, policy or policy_from_env())
        writing = create or write is not None
        write = write or WriteOptions()
        if write.kms_key_id:
            write = dataclasses.replace(write, kms_key_id=cls._check_kms_key(store, write.kms_key_id))
        bucket_region = cls._bucket_region(store)
        if bucket_region is None:
            if not create:
                raise NotFound(f"repository {repo_uri} not found (bucket does not exist)")
            cls._create_bucket(store, object_lock=write.locking)
        elif bucket_region != region:
            raise InvalidInput(
                f"repository bucket '{repo_uri.bucket}' is in {bucket_region}, not {region}: "
                "a repository must be in the target region"
            )
        elif writing:
            cls._check_not_public(store)
            if write.locking:
                cls._check_object_lock(store)
        try:
            config = store.get_json(cls.CONFIG_KEY)
        except NotFound:
            if not create:
                raise NotFound(f"no backupctl repository at {repo_uri} (no {cls.CONFIG_KEY})") from None
            config = {
                "format_version": FORMAT_VERSION,
                "region": region,
                "created_at": isoformat(utcnow()),
            }
            store.write = write
            store.put_json(cls.CONFIG_KEY, config)
        store.write = write
        try:
            major = int(str(config.get("format_version", "")).split(".")[0])
        except ValueError:
            major = -1
        if major != FORMAT_MAJOR:
            raise FormatError(
                f"repository {repo_uri} has format version {config.get('format_version')!r}; "
                f"this backupctl reads {FORMAT_MAJOR}.x"
            )
        return cls(store, config)

    @staticmethod
    def _check_kms_key(store: S3Store, key_id: str) -> str:
        """The ARN of ``key_id`` after checking it is an enabled symmetric key in the repository's region."""
        kms = store.aws.client("kms", store.region)
        try:
            meta = store.policy.call(lambda: kms.describe_key(KeyId=key_id), f"describing KMS key {key_id}")["KeyMetadata"]
        except botocore.exceptions.ClientError as e:
            code = _code(e)
            if code == "NotFoundException":
                raise NotFound(f"KMS key '{key_id}' not found in {store.region} (--kms-key-id needs a key in the "
                               "repository's region)") from e
            if code in ("AccessDeniedException", "AccessDenied"):
                raise AuthError(f"access denied describing KMS key '{key_id}' in {store.region} "
                                "(needs kms:DescribeKey)") from e
            if code in ("InvalidArnException", "ValidationException"):
                raise InvalidInput(f"invalid --kms-key-id '{key_id}': {e.response['Error'].get('Message')}") from e
            raise
        arn = str(meta.get("Arn") or key_id)
        m = _KMS_ARN_RE.match(arn)
        if m and m.group(1) != store.region:
            raise InvalidInput(f"KMS key '{key_id}' is in {m.group(1)}, the repository in {store.region}: "
                               f"SSE-KMS needs a key in {store.region}")
        state = meta.get("KeyState") or ("Enabled" if meta.get("Enabled", True) else "Disabled")
        if state != "Enabled":
            raise InvalidInput(f"KMS key '{key_id}' is {state}: it cannot encrypt new objects")
        if meta.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT" or meta.get(
                "KeySpec", "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT":
            raise InvalidInput(f"KMS key '{key_id}' is not a symmetric encryption key: S3 SSE-KMS needs one")
        return arn

    @staticmethod
    def _check_not_public(store: S3Store) -> None:
        """Refuse a bucket whose public access is not fully blocked, or whose policy allows everyone."""
        s3, bucket = store.s3, store.uri.bucket
        fix = (f"block it with: aws s3api put-public-access-block --bucket {bucket} --public-access-block-configuration "
               + ",".join(f"{f}=true" for f in PUBLIC_ACCESS_FLAGS))

        def get_block() -> dict[str, Any]:
            try:
                return dict(s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"])
            except botocore.exceptions.ClientError as e:
                if _code(e) == "NoSuchPublicAccessBlockConfiguration":
                    return {}
                if _code(e) in ("AccessDenied", "403"):
                    raise AuthError(f"cannot read the public access block of bucket '{bucket}': access denied "
                                    "(needs s3:GetBucketPublicAccessBlock)") from e
                raise

        block = store.policy.call(get_block, f"checking public access of {bucket}")
        if not block:
            raise Conflict(f"repository bucket '{bucket}' has no public access block: refusing to write snapshots "
                           f"into it; {fix}")
        off = [f for f in PUBLIC_ACCESS_FLAGS if not block.get(f)]
        if off:
            raise Conflict(f"repository bucket '{bucket}' does not block public access ({', '.join(off)} off): "
                           f"refusing to write snapshots into it; {fix}")

        def get_policy() -> str | None:
            try:
                return str(s3.get_bucket_policy(Bucket=bucket)["Policy"])
            except botocore.exceptions.ClientError as e:
                if _code(e) == "NoSuchBucketPolicy":
                    return None
                if _code(e) in ("AccessDenied", "403"):
                    raise AuthError(f"cannot read the bucket policy of '{bucket}': access denied "
                                    "(needs s3:GetBucketPolicy)") from e
                raise

        text = store.policy.call(get_policy, f"reading the bucket policy of {bucket}")
        sid = public_policy_statement(text) if text else None
        if sid is not None:
            raise Conflict(f"repository bucket '{bucket}' has a bucket policy that allows everyone (Principal \"*\" "
                           f"in statement {sid}): refusing to write snapshots into it; remove that statement "
                           f"(aws s3api get-bucket-policy --bucket {bucket})")

    @staticmethod
    def _check_object_lock(store: S3Store) -> None:
        bucket = store.uri.bucket

        def call() -> bool:
            try:
                conf = store.s3.get_object_lock_configuration(Bucket=bucket)
            except botocore.exceptions.ClientError as e:
                if _code(e) == "ObjectLockConfigurationNotFoundError":
                    return False
                if _code(e) in ("AccessDenied", "403"):
                    raise AuthError(f"cannot read the Object Lock configuration of bucket '{bucket}': access denied "
                                    "(needs s3:GetBucketObjectLockConfiguration)") from e
                raise
            return (conf.get("ObjectLockConfiguration") or {}).get("ObjectLockEnabled") == "Enabled"

        if not store.policy.call(call, f"checking Object Lock on {bucket}"):
            raise Conflict(
                f"repository bucket '{bucket}' does not have S3 Object Lock enabled, which --object-lock-days needs: "
                f"enable it (aws s3api put-object-lock-configuration --bucket {bucket} --object-lock-configuration "
                "ObjectLockEnabled=Enabled; versioning must be on) or use a new --repo bucket (backupctl creates it "
                "with Object Lock)"
            )

    def object_lock_enabled(self) -> bool:
        try:
            self._check_object_lock(self.store)
        except Conflict:
            return False
        return True

    def lock_until(self, prefix: str, doc: dict[str, Any] | None = None) -> datetime | None:
        """When the Object Lock on snapshot ``prefix`` ends, if it is locked: the later of the manifest's
        recorded ``object_lock.retain_until`` and the manifest object's own retention (which also covers a
        bucket's default retention). None when unlocked."""
        found: list[datetime] = []
        recorded = ((doc or {}).get("object_lock") or {}).get("retain_until")
        if recorded:
            found.append(parse_time(str(recorded)))
        head = self.store.head(prefix + "manifest.json") or {}
        until = head.get("ObjectLockRetainUntilDate")
        if isinstance(until, datetime) and head.get("ObjectLockMode"):
            found.append(until)
        return max(found) if found else None

    @staticmethod
    def _bucket_region(store: S3Store) -> str | None:
        def call() -> str | None:
            try:
                resp = store.s3.head_bucket(Bucket=store.uri.bucket)
            except botocore.exceptions.ClientError as e:
                if _status(e) == 404 or _code(e) in ("404", "NoSuchBucket", "NotFound"):
                    return None
                if _status(e) == 403 or _code(e) in ("403", "AccessDenied"):
                    raise AuthError(f"access denied to bucket '{store.uri.bucket}'") from e
                if _status(e) == 301:
                    hdrs = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
                    return str(hdrs.get("x-amz-bucket-region") or "unknown")
                raise
            hdrs = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            region = hdrs.get("x-amz-bucket-region")
            if region:
                return str(region)
            loc = store.s3.get_bucket_location(Bucket=store.uri.bucket).get("LocationConstraint")
            return str(loc or "us-east-1")

        return store.policy.call(call, f"locating bucket {store.uri.bucket}")

    @staticmethod
    def _create_bucket(store: S3Store, object_lock: bool = False) -> None:
        s3, bucket, region = store.s3, store.uri.bucket, store.region
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True

        def create() -> None:
            try:
                s3.create_bucket(**kwargs)
            except botocore.exceptions.ClientError as e:
                if _code(e) != "BucketAlreadyOwnedByYou":
                    raise

        store.policy.call(create, f"creating bucket {bucket}")
        store.policy.call(
            lambda: s3.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            ),
            f"blocking public access on {bucket}",
        )
        store.policy.call(
            lambda: s3.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
            ),
            f"setting default encryption on {bucket}",
        )
        store.policy.call(
            lambda: s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}),
            f"enabling versioning on {bucket}",
        )

    # -- layout ------------------------------------------------------------------

    @staticmethod
    def snapshot_prefix(source_key: str, snapshot_id: str) -> str:
        return f"snapshots/{source_key}/{snapshot_id}/"

    @staticmethod
    def pending_prefix(source_key: str) -> str:
        return f"runs/pending/{source_key}/"

    @staticmethod
    def pending_key(source_key: str, snapshot_id: str) -> str:
        """One run's pending record (plan, created_at, lease): backupctl/leases.py."""
        return f"runs/pending/{source_key}/{snapshot_id}.json"

    @staticmethod
    def legacy_pending_key(source_key: str) -> str:
        """The single pending pointer of a source written by older backupctl versions (resumed as a dead lease)."""
        return f"runs/pending/{source_key}.json"

    # -- reading -----------------------------------------------------------------

    def source_keys(self) -> list[str]:
        return self.store.list_dirs("snapshots/")

    def find_snapshot(self, snapshot_id: str) -> tuple[str, Manifest]:
        """(snapshot prefix, manifest) of a committed snapshot; raises SnapshotNotFound."""
        check_snapshot_id(snapshot_id)
        for sk in self.source_keys():
            prefix = self.snapshot_prefix(sk, snapshot_id)
            try:
                doc = self.store.get_json(prefix + "manifest.json")
            except NotFound:
                continue
            m = Manifest.from_dict(doc)
            if m.id != snapshot_id:
                raise FormatError(f"{self.store.url(prefix + 'manifest.json')} names snapshot {m.id}, not {snapshot_id}")
            return prefix, m
        raise SnapshotNotFound(f"snapshot {snapshot_id} not found in {self.uri}")

    def list_snapshots(self, source_key_filter: str | None = None,
                       unreadable: list[tuple[str, str, str]] | None = None) -> list[Manifest]:
        """Committed snapshots (those with a manifest), oldest first (``unreadable``: see ``list_snapshot_docs``)."""
        return [m for m, _doc in self.list_snapshot_docs(source_key_filter, unreadable)]

    def list_snapshot_docs(self, source_key_filter: str | None = None,
                           unreadable: list[tuple[str, str, str]] | None = None,
                           ) -> list[tuple[Manifest, dict[str, Any]]]:
        """Committed snapshots with their raw manifest documents (fields the model does not carry), oldest first.

        A manifest that does not follow the format raises FormatError, unless ``unreadable`` is given:
        then (source key, snapshot id, why) is added to it and the listing goes on (a read-only listing
        or audit of a damaged repository still shows the rest; nothing that deletes passes it).
        """
        out: list[tuple[Manifest, dict[str, Any]]] = []
        for sk in self.source_keys():
            if source_key_filter and sk != source_key_filter:
                continue
            for sid in self.store.list_dirs(f"snapshots/{sk}/"):
                key = self.snapshot_prefix(sk, sid) + "manifest.json"
                try:
                    doc = self.store.get_json(key)
                    m = Manifest.from_dict(doc)
                    if m.id != sid:  # as find_snapshot refuses it: a copied or edited manifest
                        raise FormatError(f"{self.store.url(key)} names snapshot {m.id}, not {sid}")
                    out.append((m, dict(doc)))
                except NotFound:
                    continue  # in progress or crashed: not a snapshot
                except FormatError as e:
                    if unreadable is None:
                        raise
                    unreadable.append((sk, sid, str(e)))
        out.sort(key=lambda md: (md[0].created_at, md[0].id))  # ids sort by time to the second only
        if unreadable:
            unreadable.sort(key=lambda u: u[1])
        return out

    def read_schema(self, prefix: str, manifest: Manifest) -> dict[str, Any]:
        """The schema.json of the snapshot at ``prefix``, checked against its ``manifest.schema_sha256``.

        The schema carries what a restore executes (a MySQL ``CREATE TABLE``, a DynamoDB
        CreateTable request), so it is tied to the manifest like the parts; manifests written
        before backupctl recorded the hash (no ``schema_sha256``) are read as they are.
        """
        key = prefix + "schema.json"
        data = self.store.get(key)
        want, got = manifest.schema_sha256, hashlib.sha256(data).hexdigest()
        if want is not None and got != want:
            raise FormatError(f"{self.store.url(key)} differs from the one the manifest recorded (sha256 "
                              f"{got[:16]}... != {want[:16]}...)")
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise FormatError(f"{self.store.url(key)} is not valid JSON: {e}") from e
        if not isinstance(doc, dict):
            raise FormatError(f"{self.store.url(key)} is not a JSON object")
        return doc


    # -- restoring -----------------------------------------------------------------

    def check_parts(self, groups: Iterable[tuple[str, Iterable[dict[str, Any]]]], workers: int = 16) -> int:
        """Before a restore writes anything: check every part it will load, with one HEAD each.

        ``groups`` are (snapshot prefix, manifest part dicts) for every snapshot
        of the chain. Each part must exist with the manifest's size, and the
        SHA-256 S3 stored for it (checked by S3 when it was written) must
        equal the manifest's; parts of snapshots written before S3 checksums
        (no ``part_checksum`` in the manifest) must carry the manifest's
        sha256 as metadata. A missing, truncated or rewritten part raises
        FormatError naming it. Reading each part while loading still checks
        its bytes. Returns the number of parts checked.
        """
        items = [(prefix, p) for prefix, parts in groups for p in parts]
        if not items:
            return 0
        strict = {prefix: self._has_part_checksums(prefix) for prefix in {prefix for prefix, _p in items}}
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items))), thread_name_prefix="precheck") as ex:
            problems = list(ex.map(lambda it: self.part_problem(it[0], it[1], strict[it[0]]), items))
        for problem in problems:
            if problem:
                raise FormatError(f"{problem}; restore refused before writing anything")
        return len(items)

    def _has_part_checksums(self, prefix: str) -> bool:
        return self.store.get_json(prefix + "manifest.json").get("part_checksum") == PART_CHECKSUM

    def part_problem(self, prefix: str, part: dict[str, Any], require_checksum: bool) -> str | None:
        """What is wrong with a stored part according to its HEAD (None: intact); see ``check_parts``."""
        key = str(part["key"])
        sid = prefix.rstrip("/").rsplit("/", 1)[-1]
        where = f"part {key} of snapshot {sid}"
        head = self.store.head(prefix + key)
        if head is None:
            return f"{where} is missing ({self.store.url(prefix + key)})"
        size, want = int(head.get("ContentLength", -1)), int(part["bytes"])
        if size != want:
            return f"{where} is {size} bytes, the manifest says {want} (truncated or replaced)"
        want_sha = str(part["sha256"])
        stored = head.get("ChecksumSHA256")
        if stored and "-" not in str(stored) and head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            if stored != _b64_sha256(want_sha):
                got = base64.b64decode(str(stored)).hex()
                return f"{where} has sha256 {got[:16]}... in S3, the manifest says {want_sha[:16]}... (corrupt or replaced)"
            return None
        if require_checksum and not stored:
            return f"{where} has no SHA-256 checksum in S3, which backupctl wrote it with (replaced after the snapshot)"
        meta = (head.get("Metadata") or {}).get("sha256")
        if meta != want_sha:
            return (f"{where} was replaced: it carries " + (f"sha256 {str(meta)[:16]}..." if meta else "no sha256")
                    + f", the manifest says {want_sha[:16]}...")
        return None


def public_policy_statement(policy_text: str) -> str | None:
    """The Sid (or index) of the first Allow statement of a bucket policy whose Principal is everyone, else None."""
    try:
        doc = orjson.loads(policy_text)
    except orjson.JSONDecodeError:
        return None
    statements = doc.get("Statement") if isinstance(doc, dict) else None
    if isinstance(statements, dict):
        statements = [statements]
    for i, st in enumerate(statements or []):
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        values: list[Any] = []
        if isinstance(principal, dict):
            for v in principal.values():
                values.extend(v if isinstance(v, list) else [v])
        else:
            values = principal if isinstance(principal, list) else [principal]
        if "*" in values:
            return str(st.get("Sid") or f"#{i}")
    return None


def resolve_repo_region(aws: AwsContext, repo: str | None, region: str | None) -> str:
    """The region to open a repository in: ``region`` if given, else the bucket's own.

    Commands that read a repository take ``--repo`` or ``--region`` (or both).
    """
    if region:
        return region
    if not repo:
        raise InvalidInput("give --repo s3://BUCKET[/PREFIX] or --region REGION")
    uri = parse_repo_uri(repo)
    found = Repository._bucket_region(S3Store(aws, "us-east-1", uri))
    if found is None:
        raise NotFound(f"repository {uri} not found (bucket does not exist)")
    return found


def task_store(spec: dict[str, Any]) -> S3Store:
    """The repository store a task spec names (``repo``, ``aws``, ``retry``): the same for every task kind.

    ``repo.write`` (set by the snapshot protocol) carries the snapshot's SSE-KMS key and Object Lock retention.
    """
    aws = AwsContext.from_dict(spec.get("aws"))
    r = spec["repo"]
    return S3Store(aws, r["region"], RepoURI(r["bucket"], r["prefix"]), RetryPolicy.from_dict(spec.get("retry")),
                   WriteOptions.from_dict(r.get("write")))
