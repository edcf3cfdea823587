"""DynamoDB snapshot and restore through a fault-injecting proxy (issue 7, part 1).

Under 10% injected faults (5xx, throttling, SlowDown, resets, truncated and
delayed responses) counts and digests are exact; under 100% faults for longer
than the retry deadline the run fails with a clear message, a non-zero exit and
no listed partial snapshot.
"""

from __future__ import annotations

import pytest

from backupctl.aws import AwsContext
from tests.harness.fault_proxy import FaultProxy
from tests.integration.helpers import make_table, one_json, python_items, scan_all

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"


def test_ten_percent_faults_lose_nothing(aws: AwsContext, cli, moto_server: str, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 2000)
    repo = f"s3://{name}-repo"
    with FaultProxy(moto_server, rate=0.10, seed=7) as proxy:
        env = {"BACKUPCTL_ENDPOINT_URL": proxy.url}
        r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--page-size", "100",
                "--json", env=env)
        assert r.code == 0, r.err
        s = one_json(r.out)
        r = cli("restore", s["snapshot_id"], "--to-table", name + "-r", "--region", DST, "--repo", repo, "--json",
                env=env)
        assert r.code == 0, r.err
        injected = sum(v for k, v in proxy.counts.items() if k != "requests")
    assert s["rows"] == 2000
    assert injected >= 10, proxy.counts  # faults really happened
    assert python_items(scan_all(aws, DST, name + "-r")) == python_items(scan_all(aws, SRC, name))
    r = cli("snapshots", "verify", s["snapshot_id"], "--repo", repo, "--against-table", name, "--table-region", SRC)
    assert r.code == 0, r.err


def test_total_outage_fails_cleanly_and_lists_nothing(aws: AwsContext, cli, moto_server: str, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, SRC, name, 300)
    repo = f"s3://{name}-repo"
    aws.client("s3", DST).create_bucket(Bucket=f"{name}-repo", CreateBucketConfiguration={"LocationConstraint": DST})
    aws.client("s3", DST).put_public_access_block(Bucket=f"{name}-repo", PublicAccessBlockConfiguration={
        k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")})
    # The first 25 requests pass (describe, repository, schema, first scan pages and parts);
    # then every call fails, for longer than the retry deadline.
    with FaultProxy(moto_server, rate=1.0, seed=1, faults=("ddb_throughput", "http503"), start_after=25) as proxy:
        r = cli("snapshot", "--table", name, "--from", SRC, "--to", DST, "--repo", repo, "--page-size", "20",
                "--segments", "3",
                env={"BACKUPCTL_ENDPOINT_URL": proxy.url, "BACKUPCTL_RETRY_DEADLINE_S": "3",
                     "BACKUPCTL_RETRY_MAX_ATTEMPTS": "3"}, timeout=240)
    assert proxy.counts["requests"] > 25
    assert r.code == 7, r.err
    lines = [ln for ln in r.err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.err
    assert "still failing after retries" in lines[0] or "not done after" in lines[0], lines[0]
    # Nothing listed: the repository has no manifest (it may not even have its config yet).
    objects = aws.client("s3", DST).list_objects_v2(Bucket=f"{name}-repo").get("Contents", [])
    assert not [o["Key"] for o in objects if o["Key"].endswith("manifest.json")]
    r = cli("snapshots", "list", "--repo", repo, "--json")
    assert (r.code == 0 and one_json(r.out) == []) or (r.code == 3 and "no backupctl repository" in r.err)
