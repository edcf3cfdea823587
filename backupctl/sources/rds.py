"""Finding an RDS instance's MySQL endpoint: ``snapshot --rds-instance ID``.

The endpoint (address, port), engine and master user come from RDS
``DescribeDBInstances`` in the source region (a client from ``AwsContext``,
retries through ``backupctl.retry``). Only MySQL-compatible engines (mysql,
mariadb, aurora-mysql) are accepted.

``BACKUPCTL_RDS_ENDPOINT_MAP`` is for local testing only: RDS emulators
(moto) report made-up addresses like ``ID.aaaaaaaaaa.REGION.rds.amazonaws.com``;
``ADDRESS=HOST[:PORT][,ADDRESS=HOST[:PORT]...]`` connects to HOST[:PORT]
instead whenever RDS reports ADDRESS. The manifest still names the instance
and the endpoint RDS reported.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from backupctl.aws import AwsContext
from backupctl.errors import AuthError, InvalidInput, NotFound
from backupctl.retry import policy_from_env

MYSQL_ENGINES = ("mysql", "mariadb", "aurora-mysql")
ENDPOINT_MAP_ENV = "BACKUPCTL_RDS_ENDPOINT_MAP"
# RDS DB instance identifiers: 1-63 letters, digits and hyphens, starting with a letter.
_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$")


@dataclass(frozen=True)
class RdsEndpoint:
    instance_id: str
    engine: str
    address: str  # as RDS reports it (recorded in the manifest)
    port: int
    master_username: str | None
    connect_host: str  # where to connect: the address, or its BACKUPCTL_RDS_ENDPOINT_MAP override
    connect_port: int


def endpoint_map() -> dict[str, tuple[str, int | None]]:
    """``BACKUPCTL_RDS_ENDPOINT_MAP`` parsed: address -> (host, port or None)."""
    text = os.environ.get(ENDPOINT_MAP_ENV, "").strip()
    out: dict[str, tuple[str, int | None]] = {}
    if not text:
        return out
    for entry in text.split(","):
        entry = entry.strip()
        address, sep, target = entry.partition("=")
        target = target.strip()
        if ":" in target and not target.endswith("]"):
            host, _, port_text = target.rpartition(":")
        else:
            host, port_text = target, ""
        if not sep or not address.strip() or not host or (port_text and not port_text.isdigit()):
            raise InvalidInput(f"invalid {ENDPOINT_MAP_ENV} entry '{entry}': expected ADDRESS=HOST[:PORT]")
        out[address.strip().lower()] = (host, int(port_text) if port_text else None)
    return out


def resolve_instance(aws: AwsContext, region: str, instance_id: str) -> RdsEndpoint:
    """The MySQL endpoint of RDS instance ``instance_id`` in ``region``; one-line errors otherwise.

    Not found -> NotFound (exit 3); access denied -> AuthError (6); an engine
    that is not MySQL-compatible, or an instance without an endpoint yet ->
    InvalidInput (2).
    """
    if not _ID_RE.match(instance_id or ""):
        raise InvalidInput(f"invalid --rds-instance '{instance_id}': expected a DB instance identifier "
                           "(letters, digits and hyphens, starting with a letter)")
    rds = aws.client("rds", region)
    what = f"RDS instance '{instance_id}' ({region})"
    try:
        resp: dict[str, Any] = policy_from_env().call(
            lambda: rds.describe_db_instances(DBInstanceIdentifier=instance_id), f"describing {what}")
    except botocore.exceptions.NoCredentialsError as e:
        raise AuthError(f"cannot describe {what}: no AWS credentials found") from e
    except botocore.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        if code in ("DBInstanceNotFound", "DBInstanceNotFoundFault"):
            raise NotFound(f"{what} not found") from e
        if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidClientTokenId",
                    "UnrecognizedClientException", "ExpiredToken", "ExpiredTokenException"):
            raise AuthError(f"cannot describe {what}: access denied ({code}: {err.get('Message', '')})") from e
        raise
    instances = resp.get("DBInstances") or []
    if not instances:
        raise NotFound(f"{what} not found")
    inst = instances[0]
    engine = str(inst.get("Engine", "")).lower()
    if engine not in MYSQL_ENGINES:
        raise InvalidInput(f"{what} runs {engine or 'an unknown engine'}: --rds-instance takes "
                           f"{', '.join(MYSQL_ENGINES)} instances")
    endpoint = inst.get("Endpoint") or {}
    address, port = endpoint.get("Address"), endpoint.get("Port")
    if not address or not port:
        raise InvalidInput(f"{what} has no endpoint yet (status {inst.get('DBInstanceStatus', 'unknown')})")
    host, mapped_port = endpoint_map().get(str(address).lower(), (str(address), None))
    return RdsEndpoint(
        instance_id=str(inst.get("DBInstanceIdentifier") or instance_id), engine=engine, address=str(address),
        port=int(port), master_username=inst.get("MasterUsername") or None, connect_host=host,
        connect_port=mapped_port or int(port),
    )
