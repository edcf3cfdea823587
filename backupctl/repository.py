"""The S3 snapshot repository: layout, open/create, commit, list, read.

Layout (docs/REPOSITORY_FORMAT.md is the specification this code obeys)::

    s3://BUCKET/PREFIX/
      backupctl.json                          repository config
      snapshots/<source-key>/<snapshot-id>/
         schema.json                          written first
         data/part-SSSSS-CCCC.json.gz         data parts only
         _tasks/<task-id>.json                checkpoints while running (removed on commit)
         manifest.json                        written last: the commit point
      runs/pending/<source-key>.json          the in-progress snapshot of a source, for resume

Every call to S3 goes through ``S3Store``, which wraps it once in the retry
policy (restic's pattern: one small backend interface, retried in one place).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import IO, Any

import botocore.exceptions
import orjson

from backupctl.aws import AwsContext
from backupctl.errors import (
    AuthError,
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


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _status(e: botocore.exceptions.ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


class S3Store:
    """Object storage under one bucket/prefix: put, get, head, list, delete.

    Keys passed in are relative to the repository prefix. Transient failures
    are retried here and nowhere else; ``NotFound`` is permanent.
    """

    def __init__(self, aws: AwsContext, region: str, uri: RepoURI, policy: RetryPolicy = DEFAULT_POLICY):
        self.aws = aws
        self.region = region
        self.uri = uri
        self.policy = policy

    @property
    def s3(self) -> Any:
        return self.aws.client("s3", self.region)

    def full_key(self, key: str) -> str:
        return self.uri.prefix + key

    def url(self, key: str) -> str:
        return f"s3://{self.uri.bucket}/{self.full_key(key)}"

    def put(self, key: str, body: bytes | IO[bytes], metadata: dict[str, str] | None = None) -> None:
        def call() -> None:
            if hasattr(body, "seek"):
                body.seek(0)  # type: ignore[union-attr]
            self.s3.put_object(
                Bucket=self.uri.bucket, Key=self.full_key(key), Body=body, Metadata=metadata or {}
            )

        self.policy.call(call, f"writing {self.url(key)}")

    def put_json(self, key: str, doc: Any) -> None:
        self.put(key, orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")

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
                return dict(self.s3.head_object(Bucket=self.uri.bucket, Key=self.full_key(key)))
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
    ) -> Repository:
        """Open the repository at ``uri`` (default: the account's default repo in ``region``).

        With ``create=True`` a missing bucket is created in ``region`` (default
        encryption, public access blocked, versioning on) and the config is
        written; without it a missing repository raises NotFound. A bucket in
        another region than ``region`` raises InvalidInput.
        """
        repo_uri = uri if isinstance(uri, RepoURI) else (parse_repo_uri(uri) if uri else None)
        if repo_uri is None:
            repo_uri = default_repo_uri(aws, region)
        store = S3Store(aws, region, repo_uri, policy or policy_from_env())
        bucket_region = cls._bucket_region(store)
        if bucket_region is None:
            if not create:
                raise NotFound(f"repository {repo_uri} not found (bucket does not exist)")
            cls._create_bucket(store)
        elif bucket_region != region:
            raise InvalidInput(
                f"repository bucket '{repo_uri.bucket}' is in {bucket_region}, not {region}: "
                "a repository must be in the target region"
            )
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
            store.put_json(cls.CONFIG_KEY, config)
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
    def _create_bucket(store: S3Store) -> None:
        s3, bucket, region = store.s3, store.uri.bucket, store.region
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}

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
    def pending_key(source_key: str) -> str:
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
            return prefix, Manifest.from_dict(doc)
        raise SnapshotNotFound(f"snapshot {snapshot_id} not found in {self.uri}")

    def list_snapshots(self, source_key_filter: str | None = None) -> list[Manifest]:
        """Committed snapshots (those with a manifest), oldest first."""
        out: list[Manifest] = []
        for sk in self.source_keys():
            if source_key_filter and sk != source_key_filter:
                continue
            for sid in self.store.list_dirs(f"snapshots/{sk}/"):
                try:
                    doc = self.store.get_json(self.snapshot_prefix(sk, sid) + "manifest.json")
                except NotFound:
                    continue  # in progress or crashed: not a snapshot
                out.append(Manifest.from_dict(doc))
        out.sort(key=lambda m: m.id)
        return out

    def read_schema(self, prefix: str) -> dict[str, Any]:
        doc = self.store.get_json(prefix + "schema.json")
        if not isinstance(doc, dict):
            raise FormatError(f"{self.store.url(prefix + 'schema.json')} is not a JSON object")
        return doc


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
    """The repository store a task spec names (``repo``, ``aws``, ``retry``): the same for every task kind."""
    aws = AwsContext.from_dict(spec.get("aws"))
    r = spec["repo"]
    return S3Store(aws, r["region"], RepoURI(r["bucket"], r["prefix"]), RetryPolicy.from_dict(spec.get("retry")))
