"""Bad-input corpus (issue 7, item 8): hostile and malformed inputs through the CLI.

Each case runs ``backupctl.cli.main.main([...])`` in this process (the console
script's code path, SystemExit caught) and must give exactly one ``error: ``
line on stderr (the last; no traceback; a bounded length), a documented
non-zero exit code (2-7, never 1 "internal error"), nothing on stdout, and
write nothing: the S3 buckets and their objects, the DynamoDB tables of both
regions, the corpus's MariaDB databases and tables and the system ones, the
PostgreSQL tables a case could create and the local marker file of the
YAML-tag case are the same before and after.

Inputs: URIs (a password in the URI, bad schemes, no database, ports out of
range), snapshot ids (traversal, too long, unicode), regions, identifiers
(quotes, backticks, semicolons, 300 and 10,000,000 characters), option
values, playbook YAML (invalid, unknown keys, cycles, wrong types, aliases
bombs, Python tags, not UTF-8, 10 MB), repository config and manifests of
tampered snapshots (truncated, null, wrong major version, part keys with
``../``, negative and huge counts, floats, an id that is not the snapshot's,
key-set and tombstone keys with ``../``, a schema whose CREATE TABLE carries
a second statement).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from backupctl.aws import AwsContext
from tests.harness.inproc import run_cli
from tests.integration.helpers import make_table, one_json
from tests.integration.mysql_db import HOST, PORT, connect, scratch_databases, server_up

pytestmark = pytest.mark.integration

SRC, DST = "us-east-1", "us-west-2"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}
MAX_LINE = 600  # an error line names a bad value, it does not echo 10 MB of it
HUGE = "t" * 10_000_000


@dataclass
class World:
    """What the cases run against: a repository with a DynamoDB and a MySQL snapshot, tampered copies."""

    aws: AwsContext
    ep: list[str]
    name: str
    tmp: Path
    src_db: str = ""
    dst_db: str = ""
    ddb_sid: str = ""
    my_sid: str = ""
    tampered: dict[str, str] = field(default_factory=dict)  # kind -> snapshot id in the tampered repository
    files: dict[str, str] = field(default_factory=dict)
    conns: dict[str, Any] = field(default_factory=dict)  # kept open: the state is read twice per case

    @property
    def repo(self) -> str:
        return f"s3://{self.name}-repo"

    @property
    def bad_repo(self) -> str:
        return f"s3://{self.name}-tampered"

    @property
    def marker(self) -> Path:
        return self.tmp / "pwned"

    def state(self) -> dict[str, Any]:
        s3 = self.aws.client("s3", DST)
        buckets = sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
        objects = {}
        for b in buckets:
            if b.startswith(self.name) or b.startswith("backupctl-"):
                objects[b] = sorted((o["Key"], o["ETag"]) for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=b) for o in page.get("Contents", []))
        tables = {r: sorted(self.aws.client("dynamodb", r).list_tables()["TableNames"]) for r in (SRC, DST)}
        if not self.conns:
            self.conns = {"my": connect(), "pg": psycopg.connect(**PG, autocommit=True)}  # type: ignore[arg-type]
        with self.conns["my"].cursor() as cur:
            cur.execute("SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA LIKE "
                        "'bk\\_corp%%' ORDER BY 1, 2")
            my_tables = list(cur.fetchall())
            # Other test sessions may share the servers: only this corpus's databases and the system ones.
            cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'bk\\_corp%%' "
                        "OR SCHEMA_NAME IN ('mysql', 'information_schema', 'performance_schema', 'sys') ORDER BY 1")
            schemas = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'mysql'")
            schemas.append(cur.fetchone()[0])
        pg_tables = self.conns["pg"].execute(  # what the PostgreSQL case would create
            "SELECT schemaname, tablename FROM pg_tables WHERE schemaname IN ('a', 'b') OR tablename IN ('b', 'c') "
            "ORDER BY 1, 2").fetchall()
        return {"buckets": buckets, "objects": objects, "ddb": tables, "mysql": my_tables, "schemas": schemas,
                "pg": pg_tables, "marker": self.marker.exists()}


def copy_snapshot(aws: AwsContext, src_bucket: str, dst_bucket: str, sid: str, new_sid: str,
                  manifest: Callable[[dict[str, Any]], Any] | bytes | None = None,
                  schema: Callable[[dict[str, Any]], Any] | None = None) -> None:
    """Copy snapshot ``sid`` as ``new_sid`` into ``dst_bucket``, its manifest (and schema) rewritten."""
    s3 = aws.client("s3", DST)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=src_bucket, Prefix="snapshots/")["Contents"]
            if f"/{sid}/" in o["Key"]]
    for key in keys:
        body = s3.get_object(Bucket=src_bucket, Key=key)["Body"].read()
        new_key = key.replace(f"/{sid}/", f"/{new_sid}/")
        if key.endswith("/manifest.json"):
            doc = json.loads(body)
            doc["id"] = new_sid
            if isinstance(manifest, bytes):
                body = manifest
            else:
                body = json.dumps(manifest(doc) if manifest else doc).encode()
        elif key.endswith("/schema.json") and schema is not None:
            body = json.dumps(schema(json.loads(body))).encode()
        s3.put_object(Bucket=dst_bucket, Key=new_key, Body=body,
                      **({"ChecksumAlgorithm": "SHA256"} if "/data/" in key or "/keys/" in key else {}))


def _part0(key: str | None = None, **fields: Any) -> Callable[[dict[str, Any]], Any]:
    def f(doc: dict[str, Any]) -> Any:
        if key is not None:
            doc["parts"][0]["key"] = key
        doc["parts"][0].update(fields)
        rows = doc["parts"][0].get("rows")
        if isinstance(rows, int):
            doc["totals"] = {**doc.get("totals", {}), "rows": sum(p["rows"] for p in doc["parts"])}
        return doc

    return f


TAMPER_DDB: dict[str, Callable[[dict[str, Any]], Any] | bytes] = {
    "truncated": b'{"format_version": "1.0", "id": "x", "parts": [{"key": "data/pa',
    "null": b"null",
    "array": b"[1, 2, 3]",
    "major": lambda d: {**d, "format_version": "9.0"},
    "traversal": _part0("../../backupctl.json"),
    "traversal-tail": _part0("data/part-00000-0000.json.gz/../../../backupctl.json"),
    "absolute": _part0("/etc/passwd"),
    "negative-rows": _part0(rows=-5),
    "huge-rows": _part0(rows=10**30),
    "float-rows": _part0(rows=1e400),
    "string-bytes": _part0(bytes="12abc"),
    "totals": lambda d: {**d, "totals": {**d["totals"], "rows": d["totals"]["rows"] + 1}},
    "other-id": lambda d: {**d, "id": "20200101T000000Z-aaaaaa"},
    "no-digest": lambda d: {k: v for k, v in d.items() if k != "content_digest"},
}


def _keyset(key: str) -> Callable[[dict[str, Any]], Any]:
    def f(doc: dict[str, Any]) -> Any:
        doc["key_set"]["parts"][0]["key"] = key
        return doc
    return f


def _tombstones(doc: dict[str, Any]) -> Any:
    doc["tombstones"] = {"rows": 1, "parts": [{"key": "tombstones/../../backupctl.json", "rows": 1, "bytes": 10,
                                               "sha256": "0" * 64, "digest": "0" * 64}]}
    return doc


def _ddl(schema: dict[str, Any]) -> Any:
    schema["create_table"] += "; DROP DATABASE mysql"
    return schema


def _legacy(doc: dict[str, Any]) -> Any:
    """A manifest as backupctl wrote them before it recorded schema.json's sha256."""
    doc.pop("schema_sha256")
    return doc


def _ddb_key(schema: dict[str, Any]) -> Any:
    schema["key_schema"] = [{"AttributeName": "other", "KeyType": "HASH"}]
    return schema


@pytest.fixture(scope="module")
def world(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not server_up():  # pragma: no cover
        pytest.skip("MariaDB at 127.0.0.1:3306 is not running")
    name = f"c-{uuid.uuid4().hex[:8]}"
    aws = AwsContext(endpoint_url=moto_server)
    w = World(aws, ["--endpoint-url", moto_server], name, tmp_path_factory.mktemp("corpus"))
    make_table(aws, SRC, f"{name}-src", 20)

    def fill(cur: Any, src: str, dst: str) -> None:
        cur.execute(f"CREATE TABLE {src}.orders (id INT PRIMARY KEY, note VARCHAR(20), updated DATETIME(6))")
        cur.executemany(f"INSERT INTO {src}.orders VALUES (%s, %s, NOW(6))", [(i, f"n{i}") for i in range(1, 31)])

    with scratch_databases("bk_corp", fill) as (src, dst):
        w.src_db, w.dst_db = src, dst
        r = run_cli(*w.ep, "snapshot", "--table", f"{name}-src", "--from", SRC, "--to", DST, "--repo", w.repo, "--json")
        assert r.code == 0, r.err
        w.ddb_sid = one_json(r.out)["snapshot_id"]
        r = run_cli(*w.ep, "snapshot", "--source", f"mysql://root@{HOST}:{PORT}/{src}", "--table", "orders",
                    "--from", SRC, "--to", DST, "--repo", w.repo, "--json")
        assert r.code == 0, r.err
        w.my_sid = one_json(r.out)["snapshot_id"]
        s3 = aws.client("s3", DST)
        for bucket in (f"{name}-tampered", f"{name}-newer"):
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": DST})
            s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
                k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")})
        s3.put_object(Bucket=f"{name}-tampered", Key="backupctl.json",
                      Body=json.dumps({"format_version": "1.0", "region": DST}).encode())
        s3.put_object(Bucket=f"{name}-newer", Key="backupctl.json",
                      Body=json.dumps({"format_version": "99.0", "region": DST}).encode())
        for i, (kind, how) in enumerate(TAMPER_DDB.items()):
            sid = f"20200101T0000{i:02d}Z-{i:06x}"
            copy_snapshot(aws, f"{name}-repo", f"{name}-tampered", w.ddb_sid, sid, how)
            w.tampered[kind] = sid
        for i, (kind, how, schema) in enumerate((
                ("keyset-traversal", _keyset("keys/../../backupctl.json"), None),
                ("tombstone-traversal", _tombstones, None),
                ("ddl-two-statements", None, _ddl),
                ("ddl-legacy-two-statements", _legacy, _ddl))):
            sid = f"20200102T0000{i:02d}Z-{i:06x}"
            copy_snapshot(aws, f"{name}-repo", f"{name}-tampered", w.my_sid, sid, how, schema)
            w.tampered[kind] = sid
        copy_snapshot(aws, f"{name}-repo", f"{name}-tampered", w.ddb_sid, "20200103T000000Z-000000", None, _ddb_key)
        w.tampered["ddb-schema"] = "20200103T000000Z-000000"
        w.files.update(write_playbooks(w))
        try:
            yield w
        finally:
            for conn in w.conns.values():
                conn.close()


def write_playbooks(w: World) -> dict[str, str]:
    good_nodes = (f"nodes:\n  t: {{type: DynamoDBTable, region: {SRC}, table: {w.name}-src}}\n"
                  f"  repo: {{type: S3Repository, region: {DST}, uri: \"{w.repo}\"}}\n")
    snap = "activities:\n  snap: {type: Snapshot, input: t, output: repo}\n"
    head = "version: 1\nkind: pipeline\nname: corpus\n"
    texts: dict[str, str | bytes] = {
        "invalid-yaml": head + "nodes: [unclosed\n",
        "unknown-key": head + good_nodes + snap + "surprise: 1\n",
        "cycle": head + good_nodes + "activities:\n  a: {type: Snapshot, input: t, output: repo, depends_on: [b]}\n"
                 "  b: {type: Snapshot, input: t, output: repo, depends_on: [a]}\n",
        "wrong-type": head + good_nodes + "activities:\n  snap: {type: Snapshot, input: t, output: repo, retries: many}\n",
        "version": "version: 99\nkind: pipeline\nname: corpus\n" + good_nodes + snap,
        # "billion laughs": 9^9 values once the aliases are expanded
        "alias-bomb": head + "variables:\n  a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"  {b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True))
            + good_nodes + snap,
        "python-tag": head + f"nodes: !!python/object/apply:os.system [\"touch {w.marker}\"]\n",
        "empty": "",
        "not-utf8": b"version: 1\nkind: pipeline\nname: \xff\xfe\x00corpus\n",
        "unknown-activity": head + good_nodes + "activities:\n  x: {type: RmRf, node: t}\n",
        "missing-node": head + good_nodes + "activities:\n  snap: {type: Snapshot, input: nope, output: repo}\n",
        "huge-value": head.replace("name: corpus", "name: " + "n" * 10_000_000) + good_nodes + snap,
        "drill-key": "version: 1\nkind: drill\nname: corpus\n" + good_nodes
                     + "  copy: {type: DynamoDBTable, region: us-west-2, table: x, scratch: true}\n"
                     + "drill: {source: t, repository: repo, target: copy, snapshot: take, explode: true}\n",
    }
    out = {}
    for key, text in texts.items():
        p = w.tmp / f"{key}.yaml"
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)
        out[key] = str(p)
    return out


@dataclass
class Case:
    id: str
    args: Callable[[World], list[str]]
    code: int
    says: str = ""  # a fragment the error line must contain


def snap_args(*extra: str) -> Callable[[World], list[str]]:
    return lambda w: ["snapshot", "--table", f"{w.name}-src", "--from", SRC, "--to", DST, "--repo", w.repo, *extra]


def my_snap(source: str | None = None, table: str = "orders", *extra: str) -> Callable[[World], list[str]]:
    return lambda w: ["snapshot", "--source", source or f"mysql://root@{HOST}:{PORT}/{w.src_db}", "--table", table,
                      "--from", SRC, "--to", DST, "--repo", w.repo, *extra]


def restore_ddb(sid: Callable[[World], str], *extra: str, repo: str = "repo") -> Callable[[World], list[str]]:
    return lambda w: ["restore", sid(w), "--to-table", f"{w.name}-restored", "--region", DST, "--repo",
                      getattr(w, repo), *extra]


def restore_my(sid: Callable[[World], str], *extra: str, repo: str = "repo", to: str | None = None
               ) -> Callable[[World], list[str]]:
    return lambda w: ["restore", sid(w), "--to", to or f"mysql://root@{HOST}:{PORT}/{w.dst_db}", "--region", DST,
                      "--repo", getattr(w, repo), *extra]


def tampered(kind: str) -> Callable[[World], str]:
    return lambda w: w.tampered[kind]


def playbook(cmd: str, key: str, *extra: str) -> Callable[[World], list[str]]:
    return lambda w: [*cmd.split(), w.files[key], *extra]


DDB_SID: Callable[[World], str] = lambda w: w.ddb_sid  # noqa: E731
MY_SID: Callable[[World], str] = lambda w: w.my_sid  # noqa: E731

CASES = [
    # -- URIs
    Case("uri-password", my_snap("mysql://root:hunter2@127.0.0.1:3306/db"), 2, "contains a password"),
    Case("uri-empty-password", my_snap("mysql://root:@127.0.0.1/db"), 2, "contains a password"),
    Case("uri-scheme", my_snap("postgres://root@127.0.0.1/db"), 2, "expected mysql://"),
    Case("uri-one-slash", my_snap("mysql:/root@127.0.0.1/db"), 2, "expected mysql://"),
    Case("uri-no-db", my_snap("mysql://root@127.0.0.1:3306"), 2),
    Case("uri-empty-db", my_snap("mysql://root@127.0.0.1:3306/"), 2),
    Case("uri-port-high", my_snap("mysql://root@127.0.0.1:99999/db"), 2, "port"),
    Case("uri-port-zero", my_snap("mysql://root@127.0.0.1:0/db"), 2, "port"),
    Case("uri-port-text", my_snap("mysql://root@127.0.0.1:abc/db"), 2),
    Case("uri-no-host", my_snap("mysql://root@/db"), 2),
    Case("uri-huge", my_snap("mysql://root@127.0.0.1/" + HUGE), 2, "too long"),
    Case("uri-db-65", my_snap("mysql://root@127.0.0.1/" + "d" * 65), 2, "a MySQL name"),
    Case("restore-uri-password", restore_my(MY_SID, to="mysql://root:hunter2@127.0.0.1/x"), 2, "contains a password"),
    Case("redshift-uri-password", restore_my(MY_SID, to="redshift://admin:hunter2@c.x.us-west-2.redshift.amazonaws.com:5439/dev"),
         2, "contains a password"),
    Case("restore-uri-scheme", restore_my(MY_SID, to="ftp://127.0.0.1/x"), 2),
    Case("repo-empty", lambda w: ["snapshots", "list", "--repo", "s3://"], 2),
    Case("repo-scheme", lambda w: ["snapshots", "list", "--repo", "https://bucket/x"], 2),
    Case("repo-bucket", lambda w: ["snapshots", "list", "--repo", "s3://Bad_Bucket"], 2),
    Case("repo-traversal", lambda w: snap_args()(w)[:-2] + ["--repo", f"{w.repo}/../x"], 2, "bad prefix"),
    # -- snapshot ids
    Case("id-traversal", restore_ddb(lambda w: "../x"), 2, "invalid snapshot id"),
    Case("id-traversal-tail", restore_ddb(lambda w: "20261127T013000Z-1a2b3c/../../backupctl.json"), 2),
    Case("id-too-long", restore_ddb(lambda w: "2" * 300), 2),
    Case("id-unicode", restore_ddb(lambda w: "20261127T013000Z-1a2b3ç"), 2),
    Case("id-empty", lambda w: ["snapshots", "show", "", "--repo", w.repo], 2),
    Case("id-encoded", lambda w: ["snapshots", "verify", "%2e%2e%2f", "--repo", w.repo], 2),
    Case("id-absent", restore_ddb(lambda w: "20261127T013000Z-000000"), 3, "not found"),
    # -- regions
    Case("region-unknown", lambda w: snap_args()(w)[:3] + ["--from", "us-east-99", "--to", DST], 2, "us-east-99"),
    Case("region-empty", lambda w: snap_args()(w)[:5] + ["--to", ""], 2),
    Case("region-upper", lambda w: snap_args()(w)[:3] + ["--from", "US-EAST-1", "--to", DST], 2),
    Case("region-shell", lambda w: snap_args()(w)[:5] + ["--to", "us-west-2; rm -rf /"], 2),
    Case("region-restore", lambda w: ["restore", w.ddb_sid, "--to-table", "x-y-z", "--region", "../us-west-2"], 2),
    Case("region-status", lambda w: ["status", "--region", "xx-nowhere-1"], 2),
    # -- identifiers and values
    Case("ddb-table-backtick", lambda w: ["snapshot", "--table", "a`b", "--from", SRC, "--to", DST, "--repo", w.repo], 2),
    Case("ddb-table-semicolon", lambda w: ["snapshot", "--table", "x; DROP TABLE y", "--from", SRC, "--to", DST,
                                           "--repo", w.repo], 2),
    Case("ddb-table-300", lambda w: ["snapshot", "--table", "t" * 300, "--from", SRC, "--to", DST, "--repo", w.repo], 2),
    Case("ddb-table-10mb", lambda w: ["snapshot", "--table", HUGE, "--from", SRC, "--to", DST, "--repo", w.repo], 2),
    Case("ddb-table-empty", lambda w: ["snapshot", "--table", "", "--from", SRC, "--to", DST, "--repo", w.repo], 2),
    Case("mysql-table-injection", lambda w: my_snap(None, f"orders`; DROP DATABASE {w.src_db}; --")(w), 3),
    Case("mysql-table-quote", my_snap(None, "' OR '1'='1"), 3),
    Case("mysql-table-300", my_snap(None, "t" * 300), 2, "a MySQL name"),
    Case("mysql-table-10mb", my_snap(None, HUGE), 2, "a MySQL name is 1 to 64 characters"),
    Case("mysql-restore-table-300", restore_my(MY_SID, "--table", "x" * 300), 2, "a MySQL name"),
    Case("mysql-watermark", my_snap(None, "orders", "--mode", "incremental", "--watermark-column", "`; DROP x; --"), 2,
         "is not a column"),
    Case("ddb-restore-table", lambda w: ["restore", w.ddb_sid, "--to-table", "bad name!", "--region", DST,
                                         "--repo", w.repo], 2, "--to-table"),
    Case("pg-table-dots", restore_my(MY_SID, "--table", "a.b.c", to="postgres://postgres@127.0.0.1:5432/test"), 2),
    Case("workers-zero", snap_args("--workers", "0"), 2),
    Case("workers-text", snap_args("--workers", "abc"), 2, "--workers"),
    Case("restore-mysql-workers-zero", restore_my(MY_SID, "--workers", "0"), 2, "--workers must be at least 1"),
    Case("chunk-rows-zero", my_snap(None, "orders", "--chunk-rows", "0"), 2),
    Case("part-size-zero", snap_args("--part-size-mb", "0"), 2),
    Case("segments-zero", snap_args("--segments", "0"), 2),
    Case("read-percent", snap_args("--read-percent", "99"), 2),
    Case("lock-days", snap_args("--object-lock-days", "-1"), 2),
    Case("mode-choice", restore_ddb(DDB_SID, "--mode", "obliterate"), 2, "--mode"),
    Case("unknown-option", snap_args("--yolo"), 2, "--yolo"),
    Case("keep-last", lambda w: ["snapshots", "prune", "--keep-last", "-1", "--repo", w.repo], 2),
    Case("max-age", lambda w: ["status", "--repo", w.repo, "--max-age", "5x"], 2),
    Case("password-file-missing", my_snap(None, "orders", "--password-file", "/nonexistent/pw"), 2),
    Case("password-file-dir", my_snap(None, "orders", "--password-file", "/tmp"), 2),
    Case("secret-empty", my_snap(None, "orders", "--secret-id", " "), 2),
    # -- playbooks
    Case("yaml-invalid", playbook("pipeline run", "invalid-yaml"), 2),
    Case("yaml-unknown-key", playbook("pipeline run", "unknown-key"), 2, "surprise"),
    Case("yaml-cycle", playbook("pipeline run", "cycle"), 2, "cycle"),
    Case("yaml-wrong-type", playbook("pipeline run", "wrong-type"), 2),
    Case("yaml-version", playbook("pipeline run", "version"), 2),
    Case("yaml-alias-bomb", playbook("pipeline run", "alias-bomb"), 2),
    Case("yaml-python-tag", playbook("pipeline run", "python-tag"), 2),
    Case("yaml-empty", playbook("pipeline run", "empty"), 2),
    Case("yaml-not-utf8", playbook("pipeline run", "not-utf8"), 2),
    Case("yaml-unknown-activity", playbook("pipeline run", "unknown-activity"), 2, "RmRf"),
    Case("yaml-missing-node", playbook("pipeline run", "missing-node"), 2, "nope"),
    Case("yaml-10mb", playbook("pipeline run", "huge-value"), 2),
    Case("yaml-drill-key", playbook("drill run", "drill-key"), 2, "explode"),
    Case("yaml-var", playbook("pipeline run", "unknown-key", "--var", "novalue"), 2),
    Case("yaml-var-10mb", playbook("pipeline validate", "cycle", "--var", "x=" + HUGE), 2),
    Case("yaml-dir", lambda w: ["pipeline", "run", str(w.tmp)], 2),
    # -- repositories and tampered snapshots
    Case("repo-config-major", lambda w: ["snapshot", "--table", f"{w.name}-src", "--from", SRC, "--to", DST,
                                         "--repo", f"s3://{w.name}-newer"], 5, "99.0"),
    Case("list-tampered", lambda w: ["snapshots", "list", "--repo", w.bad_repo], 5),
    *[Case(f"manifest-{kind}", restore_ddb(tampered(kind), repo="bad_repo"), 5) for kind in TAMPER_DDB],
    Case("verify-traversal", lambda w: ["snapshots", "verify", w.tampered["traversal"], "--repo", w.bad_repo], 5),
    Case("manifest-keyset-traversal", restore_my(tampered("keyset-traversal"), repo="bad_repo"), 5,
         "invalid part key"),
    Case("manifest-tombstone-traversal", restore_my(tampered("tombstone-traversal"), repo="bad_repo"), 5),
    Case("schema-two-statements", restore_my(tampered("ddl-two-statements"), repo="bad_repo"), 5,
         "differs from the one the manifest recorded"),
    # a manifest without schema_sha256 (older backupctl): the server still refuses two statements
    Case("schema-legacy-two-statements", restore_my(tampered("ddl-legacy-two-statements"), repo="bad_repo"), 5),
    Case("schema-ddb-changed", restore_ddb(tampered("ddb-schema"), repo="bad_repo"), 5,
         "differs from the one the manifest recorded"),
    Case("verify-schema-changed", lambda w: ["snapshots", "verify", w.tampered["ddl-two-statements"], "--repo",
                                             w.bad_repo], 5, "differs from the one the manifest recorded"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(world: World, case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MYSQL_PWD", raising=False)
    before = world.state()
    r = run_cli(*world.ep, *case.args(world))
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert r.code == case.code, (r.code, r.err[:2000])
    # Exactly one error line, the last one (a progress bar may stand before it), bounded, no traceback.
    assert len(errors) == 1 and lines[-1] == errors[0], r.err[:2000]
    assert "Traceback" not in r.err and len(errors[0]) <= MAX_LINE, errors[0][:2000]
    assert case.says in errors[0]
    assert "hunter2" not in r.err
    assert r.out == ""
    assert world.state() == before, "something was written"


def test_list_and_audit_of_a_damaged_repository(world: World) -> None:
    """A damaged manifest fails a plain listing (the corpus above); --skip-unreadable lists the readable
    snapshots and names each damaged one on a warning line; verify --all reports every snapshot."""
    mysql_kinds = ("keyset-traversal", "tombstone-traversal", "ddl-two-statements", "ddl-legacy-two-statements")
    # manifests that read: their MySQL fields and the schema are checked by verify
    readable = sorted([*(world.tampered[k] for k in mysql_kinds), world.tampered["ddb-schema"]])
    damaged = sorted(world.tampered[k] for k in TAMPER_DDB)

    r = run_cli(*world.ep, "snapshots", "list", "--repo", world.bad_repo)
    assert r.code == 5 and r.err.strip().endswith("(--skip-unreadable lists the readable snapshots)"), r.err

    r = run_cli(*world.ep, "snapshots", "list", "--repo", world.bad_repo, "--skip-unreadable", "--json")
    assert r.code == 0, r.err
    assert sorted(s["snapshot_id"] for s in one_json(r.out)) == readable  # (copies keep their created_at)
    warnings = [ln for ln in r.err.splitlines() if ln.strip()]
    assert [ln.split()[2] for ln in warnings] == damaged  # one line each, in id order
    assert all(ln.startswith("warning: snapshot ") and "is unreadable and not listed: " in ln for ln in warnings)
    other = next(ln for ln in warnings if world.tampered["other-id"] in ln)
    assert "names snapshot 20200101T000000Z-aaaaaa, not " + world.tampered["other-id"] in other

    r = run_cli(*world.ep, "snapshots", "verify", "--all", "--repo", world.bad_repo, "--json")
    assert r.code == 5, r.err
    doc = one_json(r.out)
    by_id = {x["snapshot_id"]: x for x in doc["snapshots"]}
    assert sorted(by_id) == sorted(damaged + readable)
    assert all(not by_id[s]["ok"] and by_id[s]["problems"][0].startswith("manifest unreadable: ") for s in damaged)
    for kind in ("keyset-traversal", "tombstone-traversal", "ddl-two-statements", "ddb-schema"):
        assert not by_id[world.tampered[kind]]["ok"], kind
    for kind in ("ddl-two-statements", "ddb-schema"):
        assert "differs from the one the manifest recorded" in by_id[world.tampered[kind]]["problems"][0]
    # a legacy manifest (no schema_sha256) cannot tie its schema.json: restore's server-side refusal stands
    failed = {x["snapshot_id"] for x in doc["snapshots"] if not x["ok"]}
    assert failed == set(damaged + readable) - {world.tampered["ddl-legacy-two-statements"]}
    assert (doc["checked"], doc["failed"], doc["ok"]) == (len(by_id), len(failed), False)
