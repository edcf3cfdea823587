"""Least privilege: the IAM policy each command needs, and how API calls map to IAM actions.

This module is the one home of both:

* ``STATEMENTS`` / ``COMMANDS`` - the policy data: for each command
  (``snapshot``, ``restore``, ``drill``, ``agent``) the statements it needs,
  each one a named feature (``Sid``) with its actions and the kind of
  resource it applies to. ``backupctl iam-policy --for COMMAND`` renders it.
* ``actions_for_call`` - which IAM actions one AWS API call needs (most are
  ``service:Operation``; S3 and a few others differ, and some calls need
  more than one action, e.g. a PutObject with SSE-KMS also needs
  ``kms:GenerateDataKey``).

``tests/unit/test_iam_policy.py`` records every AWS call the code makes while
snapshots, restores and verifies run against moto, maps them with
``actions_for_call`` and asserts the ``snapshot`` and ``restore`` policies
list exactly those actions: an action the code stops calling, or a new call,
fails the test until this file follows.

Statements a user does not need can be dropped (e.g. ``MySQLSecret`` without
``--secret-id``, ``KMSKey`` without ``--kms-key-id``); each Sid says what it
is for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from backupctl.errors import InvalidInput
from backupctl.repository import parse_repo_uri


@dataclass(frozen=True)
class Statement:
    sid: str
    actions: tuple[str, ...]
    resource: str  # a kind: bucket | objects | redshift_manifests | table | control_table | any
    purpose: str
    # Reached only against real AWS (the code path needs a service moto cannot stand in for);
    # the recording test names these instead of observing them.
    aws_only: bool = False


# -- what each command calls -----------------------------------------------------------

_REPO_READ_BUCKET = ("s3:ListBucket",)  # HeadBucket (where the bucket is), ListObjectsV2
_REPO_WRITE_BUCKET = (
    "s3:CreateBucket",  # a missing repository bucket is created...
    "s3:PutBucketObjectLockConfiguration",  # ...with Object Lock when --object-lock-days asks for it
    "s3:PutBucketPublicAccessBlock",
    "s3:PutEncryptionConfiguration",
    "s3:PutBucketVersioning",
    "s3:GetBucketPublicAccessBlock",  # an existing bucket must block public access...
    "s3:GetBucketPolicy",  # ...and have no policy allowing everyone
    "s3:GetBucketObjectLockConfiguration",  # --object-lock-days: the bucket must have Object Lock
)
_DDB_DESCRIBE = ("dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive", "dynamodb:ListTagsOfResource")

STATEMENTS: dict[str, Statement] = {
    s.sid: s
    for s in (
        Statement("RepositoryBucket", tuple(sorted(_REPO_READ_BUCKET + _REPO_WRITE_BUCKET)), "bucket",
                  "find, create and check the repository bucket (public access, Object Lock)"),
        Statement("RepositoryObjects", (
            "s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:PutObject", "s3:PutObjectAcl",
            "s3:PutObjectRetention"), "objects",
            "write parts, schema, manifest and run state (checkpoints are deleted at commit); Object Lock "
            "retention; the native export writes here with the caller's permissions (AbortMultipartUpload, "
            "PutObjectAcl)"),
        Statement("ReadSourceTable", tuple(sorted(_DDB_DESCRIBE + (
            "dynamodb:DescribeContinuousBackups", "dynamodb:ExportTableToPointInTime", "dynamodb:Scan",
            "dynamodb:DescribeExport"))), "table",
            "DynamoDB source: describe it, parallel Scan, or --method export (point-in-time export)"),
        Statement("RDSEndpoint", ("rds:DescribeDBInstances",), "any",
                  "MySQL source named by --rds-instance: its endpoint"),
        Statement("MySQLSecret", ("secretsmanager:GetSecretValue",), "any",
                  "--secret-id: the database password (add kms:Decrypt if the secret uses a customer key)"),
        Statement("KMSKey", ("kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"), "any",
                  "--kms-key-id: check the key, encrypt new objects, read the snapshot's own objects back"),
        # restore
        Statement("ReadRepositoryBucket", _REPO_READ_BUCKET, "bucket", "find the repository and its snapshots"),
        Statement("ReadRepositoryObjects", ("s3:GetObject",), "objects",
                  "read manifests, schemas and parts (HEAD before any write, GET to load)"),
        Statement("ReadEncryptedObjects", ("kms:Decrypt",), "any", "snapshots written with --kms-key-id"),
        Statement("WriteTargetTable", tuple(sorted(_DDB_DESCRIBE + (
            "dynamodb:BatchWriteItem", "dynamodb:CreateTable", "dynamodb:Scan", "dynamodb:TagResource",
            "dynamodb:UpdateTimeToLive"))), "table",
            "DynamoDB target: create it from schema.json (tags, TTL), check it is empty, empty it (--mode "
            "replace), write items"),
        Statement("RestoreSecret", ("secretsmanager:GetSecretValue",), "any",
                  "--secret-id: the MySQL / Redshift password"),
        Statement("RestoreReaderLeases", ("s3:DeleteObject", "s3:PutObject"), "reader_leases",
                  "a reader lease under runs/readers/ on every snapshot the restore reads, so that "
                  "snapshots prune keeps them until it ends (deleted at the end)"),
        Statement("RedshiftCopyManifests", ("s3:PutObject",), "redshift_manifests",
                  "Redshift target: the COPY manifests backupctl writes under runs/redshift/ (the cluster's "
                  "--iam-role needs s3:GetObject, s3:ListBucket and kms:Decrypt on the repository)",
                  aws_only=True),
        # drill: a snapshot, a restore into a scratch table, the check, the teardown, the report
        Statement("DrillScratchTable", ("dynamodb:DeleteTable", "dynamodb:DescribeTable", "dynamodb:GetItem",
                                        "dynamodb:Scan"), "table",
                  "DynamoDB drills: read the copy back, compare sampled items, drop the scratch table"),
        Statement("DrillSourceSamples", ("dynamodb:GetItem",), "table",
                  "DynamoDB drills: read sampled items from the live source"),
        # agent: the control table (backupctl/pipelines/control.py)
        Statement("ControlTable", (
            "dynamodb:CreateTable", "dynamodb:DeleteItem", "dynamodb:DescribeTable", "dynamodb:GetItem",
            "dynamodb:PutItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:UpdateItem"), "control_table",
            "schedules, runs and leases in the control table (default backupctl-control) and its index"),
    )
}

_SNAPSHOT = ("RepositoryBucket", "RepositoryObjects", "ReadSourceTable", "RDSEndpoint", "MySQLSecret", "KMSKey")
_RESTORE = ("ReadRepositoryBucket", "ReadRepositoryObjects", "ReadEncryptedObjects", "WriteTargetTable",
            "RestoreSecret", "RestoreReaderLeases", "RedshiftCopyManifests")
COMMANDS: dict[str, tuple[str, ...]] = {
    "snapshot": _SNAPSHOT,
    "restore": _RESTORE,
    "drill": _SNAPSHOT + _RESTORE + ("DrillScratchTable", "DrillSourceSamples"),
    "agent": _SNAPSHOT + _RESTORE + ("DrillScratchTable", "DrillSourceSamples", "ControlTable"),
}


def command_actions(command: str, include_aws_only: bool = True) -> set[str]:
    """Every IAM action the policy of ``command`` grants."""
    return {a for sid in _sids(command) for a in STATEMENTS[sid].actions
            if include_aws_only or not STATEMENTS[sid].aws_only}


def _sids(command: str) -> tuple[str, ...]:
    if command not in COMMANDS:
        raise InvalidInput(f"--for {command} is not one of {', '.join(COMMANDS)}")
    return COMMANDS[command]


def policy(command: str, repo: str | None = None, table: str | None = None,
           control_table: str = "backupctl-control") -> dict[str, Any]:
    """The IAM policy document for ``command``.

    ``repo`` (s3://BUCKET[/PREFIX]) scopes the S3 statements (default: every
    default repository bucket, ``backupctl-*``); ``table`` scopes the DynamoDB
    ones (default: every table). KMS, Secrets Manager and RDS statements use
    ``*``: narrow them to your key, secret and instance ARNs.
    """
    if repo:
        uri = parse_repo_uri(repo)
        bucket, prefix = uri.bucket, uri.prefix
    else:
        bucket, prefix = "backupctl-*", ""
    tname = table or "*"
    if table is not None and (not table or any(c in table for c in "*?/ :")):
        raise InvalidInput(f"invalid --table '{table}': a DynamoDB table name")
    resources: dict[str, list[str]] = {
        "bucket": [f"arn:aws:s3:::{bucket}"],
        "objects": [f"arn:aws:s3:::{bucket}/{prefix}*"],
        "redshift_manifests": [f"arn:aws:s3:::{bucket}/{prefix}runs/redshift/*"],
        "reader_leases": [f"arn:aws:s3:::{bucket}/{prefix}runs/readers/*"],
        "table": [f"arn:aws:dynamodb:*:*:table/{tname}", f"arn:aws:dynamodb:*:*:table/{tname}/export/*"],
        "control_table": [f"arn:aws:dynamodb:*:*:table/{control_table}",
                          f"arn:aws:dynamodb:*:*:table/{control_table}/index/*"],
        "any": ["*"],
    }
    statements = []
    for sid in _sids(command):
        st = STATEMENTS[sid]
        res = resources[st.resource]
        statements.append({"Sid": sid, "Effect": "Allow", "Action": sorted(st.actions),
                           "Resource": res if len(res) > 1 else res[0]})
    return {"Version": "2012-10-17", "Statement": statements}


def describe(command: str) -> list[tuple[str, str]]:
    """(Sid, purpose) of each statement of ``command``'s policy."""
    return [(sid, STATEMENTS[sid].purpose) for sid in _sids(command)]


def render(command: str, **kw: Any) -> str:
    return json.dumps(policy(command, **kw), indent=2)


# -- API call -> IAM actions -------------------------------------------------------------

# Operations whose IAM action is not "<service>:<OperationName>".
_S3_ACTIONS: dict[str, tuple[str, ...]] = {
    "HeadBucket": ("s3:ListBucket",),
    "ListObjectsV2": ("s3:ListBucket",),
    "ListObjects": ("s3:ListBucket",),
    "HeadObject": ("s3:GetObject",),
    "DeleteObjects": ("s3:DeleteObject",),
    "CopyObject": ("s3:GetObject", "s3:PutObject"),
    "PutPublicAccessBlock": ("s3:PutBucketPublicAccessBlock",),
    "GetPublicAccessBlock": ("s3:GetBucketPublicAccessBlock",),
    "PutBucketEncryption": ("s3:PutEncryptionConfiguration",),
    "GetBucketEncryption": ("s3:GetEncryptionConfiguration",),
    "GetObjectLockConfiguration": ("s3:GetBucketObjectLockConfiguration",),
    "PutObjectLockConfiguration": ("s3:PutBucketObjectLockConfiguration",),
}
_PREFIX = {"S3": "s3", "DynamoDB": "dynamodb", "KMS": "kms", "Secrets Manager": "secretsmanager", "RDS": "rds",
           "STS": "sts"}
# Calls that need no permission at all.
_FREE = {("STS", "GetCallerIdentity")}


def actions_for_call(service_id: str, operation: str, params: dict[str, Any],
                     response: dict[str, Any] | None = None) -> set[str]:
    """The IAM actions one API call needs (``service_id`` is botocore's, e.g. ``S3``, ``DynamoDB``)."""
    if (service_id, operation) in _FREE:
        return set()
    prefix = _PREFIX.get(service_id, service_id.lower().replace(" ", ""))
    out = set(_S3_ACTIONS.get(operation, ())) if service_id == "S3" else set()
    if not out:
        out = {f"{prefix}:{operation}"}
    response = response or {}
    if service_id == "S3":
        if operation == "CreateBucket" and params.get("ObjectLockEnabledForBucket"):
            out |= {"s3:PutBucketObjectLockConfiguration", "s3:PutBucketVersioning"}
        if operation in ("PutObject", "CopyObject") and params.get("ObjectLockMode"):
            out.add("s3:PutObjectRetention")
        if operation in ("PutObject", "CopyObject") and params.get("SSEKMSKeyId"):
            out.add("kms:GenerateDataKey")
        if operation == "CopyObject" and params.get("SSEKMSKeyId"):
            out.add("kms:Decrypt")  # the source, written under the same key
        if operation in ("GetObject", "HeadObject") and response.get("SSEKMSKeyId") and (
                operation == "GetObject" or params.get("ChecksumMode") == "ENABLED"):
            out.add("kms:Decrypt")  # reading an SSE-KMS object (HEAD: its checksum)
    if service_id == "DynamoDB":
        if operation == "ExportTableToPointInTime":
            # DynamoDB writes the export into the bucket with the caller's permissions.
            out |= {"s3:AbortMultipartUpload", "s3:PutObject", "s3:PutObjectAcl"}
            if params.get("S3SseKmsKeyId"):
                out |= {"kms:GenerateDataKey", "kms:Decrypt"}
        if operation == "CreateTable" and params.get("Tags"):
            out.add("dynamodb:TagResource")
    return out
