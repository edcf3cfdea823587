"""Preconditions: checks that must hold before an activity runs, polled until true or a timeout.

``DynamoDBTableExists`` (ACTIVE), ``DynamoDBDataExists`` (at least one item),
``S3KeyExists`` and ``S3PrefixNotEmpty`` (under an S3Repository node's bucket
and prefix), ``SnapshotExists`` (the repository holds a committed snapshot
of a source: in a runbook run the selected one, with its whole increment
chain; elsewhere any) and ``ShellCommandPrecondition`` (exit status 0). Each is polled
through ``RetryPolicy.poll`` (the one home of waiting: backoff, a deadline)
until it holds, its ``retries`` are used up or its ``timeout`` passes; then
``PreconditionNotMet`` (exit 3) names the precondition and what was missing.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import botocore.exceptions

from backupctl.aws import AwsContext
from backupctl.errors import DataPathError, NotFound
from backupctl.model import Manifest
from backupctl.pipelines.model import Node, Precondition
from backupctl.repository import default_repo_uri, parse_repo_uri
from backupctl.retry import RetryPolicy


class PreconditionNotMet(NotFound):
    """A precondition did not hold within its timeout or retries (exit 3)."""


def _repo_location(aws: AwsContext, node: Node, key: str) -> tuple[str, str]:
    uri = parse_repo_uri(str(node.get("uri"))) if node.get("uri") else default_repo_uri(aws, str(node.get("region")))
    return uri.bucket, uri.prefix + key.lstrip("/")


def check_once(aws: AwsContext, pre: Precondition, nodes: dict[str, Node], env: dict[str, str],
               timeout_s: float) -> tuple[bool, str]:
    """Evaluate a precondition once: (holds, what was checked)."""
    node = nodes.get(str(pre.get("node"))) if pre.get("node") else None
    if pre.type in ("DynamoDBTableExists", "DynamoDBDataExists"):
        assert node is not None
        region, table = str(node.get("region")), str(node.get("table"))
        what = f"table {table} in {region}"
        ddb = aws.client("dynamodb", region)
        try:
            status = ddb.describe_table(TableName=table)["Table"]["TableStatus"]
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return False, f"{what} does not exist"
            raise
        if status != "ACTIVE":
            return False, f"{what} is {status}"
        if pre.type == "DynamoDBDataExists":
            r = ddb.scan(TableName=table, Limit=1, Select="COUNT")
            if not r.get("Count") and not r.get("LastEvaluatedKey"):
                return False, f"{what} has no items"
        return True, what
    if pre.type in ("S3KeyExists", "S3PrefixNotEmpty"):
        assert node is not None
        region = str(node.get("region"))
        bucket, key = _repo_location(aws, node, str(pre.get("key") if pre.type == "S3KeyExists" else pre.get("prefix")))
        s3 = aws.client("s3", region)
        if pre.type == "S3KeyExists":
            try:
                s3.head_object(Bucket=bucket, Key=key)
                return True, f"s3://{bucket}/{key}"
            except botocore.exceptions.ClientError as e:
                if int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)) in (403, 404):
                    return False, f"s3://{bucket}/{key} does not exist"
                raise
        try:
            r = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
        except botocore.exceptions.ClientError as e:
            if e.response.get("Error", {}).get("Code") == "NoSuchBucket":
                return False, f"bucket {bucket} does not exist"
            raise
        return (bool(r.get("KeyCount")), f"s3://{bucket}/{key}" + ("" if r.get("KeyCount") else " is empty"))
    if pre.type == "SnapshotExists":
        assert node is not None
        return _snapshot_exists(aws, node, nodes[str(pre.get("source"))], env.get("BACKUPCTL_SNAPSHOT_ID"))
    # ShellCommandPrecondition
    cmd = str(pre.get("command"))
    full_env = {**os.environ, **env, **{str(k): str(v) for k, v in (pre.get("env") or {}).items()}}
    try:
        p = subprocess.run(["sh", "-c", cmd], env=full_env, capture_output=True, text=True,
                           timeout=max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        return False, f"command '{cmd}' did not finish in time"
    return p.returncode == 0, f"command '{cmd}' exited {p.returncode}"


def _snapshot_exists(aws: AwsContext, repo_node: Node, source: Node, snapshot_id: str | None) -> tuple[bool, str]:
    """Does the repository hold snapshot ``snapshot_id`` of ``source`` (and its parents), or any snapshot of it?"""
    from backupctl.pipelines.activities import _source_key
    from backupctl.repository import Repository
    from backupctl.restore import mysql_chain

    try:
        repo = Repository.open(aws, str(repo_node.get("region")), repo_node.get("uri"))
    except NotFound as e:
        return False, e.message
    sk = _source_key(source)
    if snapshot_id is None:
        found = repo.list_snapshots(sk)
        if not found:
            return False, f"no snapshot of {source.describe()} in {repo.uri}"
        return True, f"{len(found)} snapshot(s) of {source.describe()} in {repo.uri}, newest {found[-1].id}"
    prefix = repo.snapshot_prefix(sk, snapshot_id)
    try:
        doc = repo.store.get_json(prefix + "manifest.json")
    except NotFound:
        return False, f"snapshot {snapshot_id} of {source.describe()} is not committed in {repo.uri}"
    m = Manifest.from_dict(doc)
    if m.mode != "incremental":
        return True, f"snapshot {snapshot_id} of {source.describe()} is committed in {repo.uri}"
    try:
        chain = mysql_chain(repo, prefix, m)
    except NotFound as e:
        return False, e.message
    return True, (f"snapshot {snapshot_id} of {source.describe()} and its chain ({len(chain)} snapshots) are "
                  f"committed in {repo.uri}")


def wait_for(aws: AwsContext, pre: Precondition, nodes: dict[str, Node], env: dict[str, str] | None = None,
             say: Callable[[str], None] | None = None) -> dict[str, object]:
    """Poll ``pre`` until it holds. Returns {name, checks, waited_s}; raises PreconditionNotMet."""
    started = time.monotonic()
    deadline = started + pre.timeout_s
    state: dict[str, Any] = {"checks": 0, "detail": ""}

    def check() -> bool | None:
        state["checks"] = int(state["checks"]) + 1
        ok, detail = check_once(aws, pre, nodes, env or {}, deadline - time.monotonic())
        state["detail"] = detail
        if ok:
            return True
        if pre.retries is not None and int(state["checks"]) > pre.retries:
            return False  # retries used up: stop polling
        return None

    policy = RetryPolicy(max_attempts=3, deadline_s=pre.timeout_s, max_backoff_s=min(5.0, pre.timeout_s / 4))
    try:
        held = policy.poll(check, f"precondition '{pre.name}'", interval_s=min(0.5, pre.timeout_s / 10),
                           max_interval_s=min(10.0, pre.timeout_s / 4))
    except DataPathError:
        held = False
    waited = time.monotonic() - started
    if not held:
        why = (f"after {state['checks']} checks" if pre.retries is not None and int(state["checks"]) > pre.retries
               else f"within {pre.timeout_s:g}s")
        raise PreconditionNotMet(f"precondition '{pre.name}' ({pre.type}) not met {why}: {state['detail']}")
    if say:
        say(f"precondition '{pre.name}' holds: {state['detail']}")
    return {"name": pre.name, "checks": state["checks"], "waited_s": round(waited, 3)}
