"""The one home of AWS clients.

``AwsContext`` holds what every client needs (profile, endpoint URL,
credentials source) and is JSON-serialisable, so a task running in a Spark
executor or on EMR builds the same clients as the driver. There are no
module-level clients: every client is made for an explicit region.
"""

from __future__ import annotations

import os
import re
import threading
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import botocore.config
import botocore.exceptions
import botocore.session

from backupctl import __version__
from backupctl.errors import AuthError, InvalidInput

_REGION_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")

# botocore's own retries are off: every call goes through backupctl.retry's
# policy (the one home of retries), so attempts and deadlines are bounded in one
# place instead of multiplying across two layers.
#
# S3 bodies are not hashed again for the signature (UNSIGNED-PAYLOAD, as botocore already does over
# HTTPS): every PutObject carries ChecksumSHA256 (signed, as a header), which S3 checks the body
# against on receipt. Over plain HTTP (moto on loopback, MinIO) botocore otherwise hashed each part's
# bytes a second time, besides the part's own sha256 (~2% of a snapshot's client CPU).
_BASE_CONFIG = botocore.config.Config(
    retries={"mode": "standard", "total_max_attempts": 1},
    s3={"payload_signing_enabled": False},
    user_agent_extra=f"backupctl/{__version__}",
    max_pool_connections=64,
    connect_timeout=10,
    read_timeout=60,
)


def verify_response(http_response: Any, model: Any, **_: Any) -> None:
    """Refuse a response whose body was cut short or corrupted in transit.

    botocore parses a truncated JSON body as an empty result: a Scan page
    cut in half would read as "no items, no more pages" and end the scan
    early, losing items silently. So every non-streaming response's length is
    checked against Content-Length, and DynamoDB's x-amz-crc32 is checked;
    a mismatch raises a retryable error. (Streaming bodies, like S3 GetObject,
    are length-checked by botocore when read.)
    """
    if model.has_streaming_output or (model.http or {}).get("method") == "HEAD":
        return
    body = http_response.content
    expected = http_response.headers.get("content-length")
    if expected is not None and expected.isdigit() and len(body) != int(expected):
        raise botocore.exceptions.IncompleteReadError(actual_bytes=len(body), expected_bytes=int(expected))
    crc = http_response.headers.get("x-amz-crc32")
    if crc is not None and crc.isdigit() and zlib.crc32(body) & 0xFFFFFFFF != int(crc):
        raise botocore.exceptions.IncompleteReadError(actual_bytes=len(body), expected_bytes=len(body))


def endpoint_from_env() -> str | None:
    return os.environ.get("BACKUPCTL_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


def validate_region(region: str | None, what: str = "region") -> str:
    """Return ``region`` if it names an AWS region, else raise InvalidInput."""
    if not region:
        raise InvalidInput(f"{what} is required")
    if not _REGION_RE.match(region):
        raise InvalidInput(f"invalid {what} '{region}': expected a name like us-east-1")
    known = known_regions()
    if known and region not in known:
        raise InvalidInput(f"invalid {what} '{region}': not an AWS region known to this botocore")
    return region


def known_regions() -> set[str]:
    """The regions of every partition botocore knows (its ``partitions`` data: a few KB, read once).

    Read from the partitions file, not from every partition's DynamoDB endpoints (``endpoints.json``,
    ~40 ms of parsing before a command could start).
    """
    global _known_regions
    if _known_regions is None:
        with _lock:
            loader = _session(None).get_component("data_loader")
            try:
                doc = loader.load_data("partitions")
            except botocore.exceptions.DataNotFoundError:  # a botocore without it: the name's shape only
                doc = {}
        _known_regions = {r for p in doc.get("partitions", []) for r in (p.get("regions") or {})}
    return _known_regions


@dataclass(frozen=True)
class AwsContext:
    """How to reach AWS: serialisable into every TaskSpec (holds no secret)."""

    endpoint_url: str | None = None
    profile: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> AwsContext:
        d = d or {}
        return cls(endpoint_url=d.get("endpoint_url"), profile=d.get("profile"))

    def session(self) -> botocore.session.Session:
        return _session(self.profile)

    def client(self, service: str, region: str) -> Any:
        """A botocore client for ``service`` in ``region``, shared by every thread of the process.

        botocore clients are thread-safe once made; making one loads the
        service model (tens of MB and ~0.1 s of CPU), so one per process and
        key is made, under a lock, instead of one per worker thread.
        """
        key = (service, region, self.endpoint_url, self.profile)
        client = _clients.get(key)
        if client is None:
            with _lock:
                client = _clients.get(key)
                if client is None:
                    client = self.session().create_client(
                        service, region_name=region, endpoint_url=self.endpoint_url, config=_BASE_CONFIG
                    )
                    client.meta.events.register("after-call", verify_response)
                    _clients[key] = client
        return client

    def account_id(self, region: str) -> str:
        return self.caller_identity(region)["account"]

    def caller_identity(self, region: str) -> dict[str, str]:
        """Who the credentials are: STS GetCallerIdentity as {account, arn, user_id} (needs no IAM permission)."""
        from backupctl.retry import policy_from_env

        sts = self.client("sts", region)
        try:
            r = policy_from_env().call(sts.get_caller_identity, "identifying the AWS caller")
        except botocore.exceptions.NoCredentialsError as e:
            raise AuthError("no AWS credentials found (set a profile, env vars or an instance role)") from e
        except botocore.exceptions.ClientError as e:
            raise AuthError(f"cannot identify the AWS caller: {e}") from e
        return {"account": str(r["Account"]), "arn": str(r["Arn"]), "user_id": str(r["UserId"])}

    def check_credentials(self) -> None:
        """Raise AuthError now, before any write, when no credentials resolve."""
        try:
            with _lock:
                creds = self.session().get_credentials()
        except botocore.exceptions.BotoCoreError as e:
            raise AuthError(f"cannot load AWS credentials: {e}") from e
        if creds is None:
            raise AuthError(
                "no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, --profile, "
                "or run on a host with a role)"
            )


# Process-wide caches. Sessions are not thread-safe, so they are only used
# under the lock (to make clients and to resolve credentials).
_lock = threading.RLock()
_clients: dict[tuple[str, str, str | None, str | None], Any] = {}
_sessions: dict[str | None, botocore.session.Session] = {}
_known_regions: set[str] | None = None


def _forget_after_fork() -> None:
    """A forked child (a worker of ``engines/processes.py``) makes its own clients: the parent's hold
    open HTTP connections, and two processes writing requests on one socket would corrupt both.
    Sessions hold no connection and keep the service models they loaded (~0.1 s a client saved)."""
    global _lock
    _lock = threading.RLock()
    _clients.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def _session(profile: str | None) -> botocore.session.Session:
    """The process's botocore session for ``profile``.

    botocore's own, not boto3's: boto3 adds resources and S3 transfer managers backupctl does not use,
    and importing it (s3transfer) and its client set-up cost 40-70 ms before every command (measured:
    import and first S3 client 0.205-0.249 s with boto3, 0.169-0.176 s with botocore). The clients
    are the same botocore clients.
    """
    with _lock:
        s = _sessions.get(profile)
        if s is None:
            s = botocore.session.Session(profile=profile)
            try:
                s.get_scoped_config()  # an unknown profile is refused now, as boto3's Session did
            except botocore.exceptions.ProfileNotFound as e:
                raise AuthError(f"AWS profile '{profile}' not found") from e
            _sessions[profile] = s
        return s
