"""snapshots prune against a real repository: dry run, removal, chains kept."""

from __future__ import annotations

import pytest

from backupctl.aws import AwsContext
from tests.integration.helpers import make_table, one_json

pytestmark = pytest.mark.integration


def test_prune_keeps_last_and_removes_the_rest(aws: AwsContext, cli, name: str) -> None:  # type: ignore[no-untyped-def]
    make_table(aws, "us-east-1", name, 50)
    repo = f"s3://{name}-repo"
    ids = []
    for _ in range(3):
        r = cli("snapshot", "--table", name, "--from", "us-east-1", "--to", "us-west-2", "--repo", repo, "--json")
        assert r.code == 0, r.err
        ids.append(one_json(r.out)["snapshot_id"])

    r = cli("snapshots", "prune", "--keep-last", "1", "--repo", repo, "--dry-run", "--json")
    assert r.code == 0, r.err
    plan = one_json(r.out)
    assert [k["snapshot_id"] for k in plan["kept"]] == [ids[2]] and plan["kept"][0]["reasons"] == ["last"]
    assert sorted(x["snapshot_id"] for x in plan["removed"]) == sorted(ids[:2])
    assert len(one_json(cli("snapshots", "list", "--repo", repo, "--json").out)) == 3  # dry run removed nothing

    r = cli("snapshots", "prune", "--keep-last", "1", "--repo", repo, "--json")
    assert r.code == 0, r.err
    assert [x["snapshot_id"] for x in one_json(cli("snapshots", "list", "--repo", repo, "--json").out)] == [ids[2]]
    keys = [o["Key"] for o in aws.client("s3", "us-west-2").list_objects_v2(Bucket=f"{name}-repo")["Contents"]]
    assert not any(ids[0] in k or ids[1] in k for k in keys)  # every object of a removed snapshot is gone
    assert cli("snapshots", "verify", ids[2], "--repo", repo).code == 0


def test_prune_without_a_policy_is_refused(cli, name: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("snapshots", "prune", "--region", "us-west-2")
    assert r.code == 2 and "refusing to remove every snapshot" in r.err
