"""Redshift SQL generation: golden scripts for both dialects, the type mapping, sqlglot parsing, URIs."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
import sqlglot
from sqlglot import exp

from backupctl.errors import InvalidInput
from backupctl.formats.pg_binary import binary_type
from backupctl.pg_conn import parse_pg_uri, settings_from_uri
from backupctl.targets import redshift_sql as rsql
from backupctl.targets.redshift import Link, build_steps, render

ROLE = "arn:aws:iam::123456789012:role/R"


def col(name: str, data_type: str, column_type: str, kind: str, nullable: bool = True, **kw: Any) -> dict[str, Any]:
    return {"name": name, "data_type": data_type, "column_type": column_type, "kind": kind, "nullable": nullable,
            "generated": kw.pop("generated", False), "precision": kw.pop("precision", None),
            "scale": kw.pop("scale", None), "charset": kw.pop("charset", None), **kw}


ORDERS = {"table_name": "orders", "primary_key": ["id"], "columns": [
    col("id", "bigint", "bigint unsigned", "uint", nullable=False),
    col("doc", "json", "json", "json"),
    col("paid", "tinyint", "tinyint(1)", "int"),
    col("twice", "bigint", "bigint", "int", generated=True),
]}
CHAIN = [
    Link("20261127T013000Z-1a2b3c", "s/1/", "full", [{"key": "data/part-00000-0000.parquet", "rows": 2, "bytes": 10}],
         [], 2, "0" * 64, 2, "0" * 64),
    Link("20261127T020000Z-4d5e6f", "s/2/", "incremental",
         [{"key": "data/part-00000-0000.parquet", "rows": 1, "bytes": 10}],
         [{"key": "tombstones/part-00000-0000.parquet", "rows": 1, "bytes": 5}], 1, "0" * 64, 2, "0" * 64),
]
DDB = {"table_name": "t", "key_schema": [{"AttributeName": "pk", "KeyType": "HASH"},
                                         {"AttributeName": "sk", "KeyType": "RANGE"}],
       "attribute_definitions": [{"AttributeName": "pk", "AttributeType": "B"},
                                 {"AttributeName": "sk", "AttributeType": "N"}]}

GOLDEN_REDSHIFT_CHAIN = 'BEGIN;\nCREATE TABLE IF NOT EXISTS "dr"."orders" (\n  "id" DECIMAL(20,0) NOT NULL,\n  "doc" SUPER,\n  "paid" BOOLEAN,\n  PRIMARY KEY ("id")\n)\nDISTSTYLE KEY\nDISTKEY ("id")\nCOMPOUND SORTKEY ("id");\nCREATE TEMP TABLE "backupctl_stage_0" ("id" DECIMAL(20,0), "doc" VARCHAR(65535), "paid" SMALLINT);\nCOPY "backupctl_stage_0" FROM \'s3://BUCKET/runs/redshift/20261127T013000Z-1a2b3c/copy.manifest\' IAM_ROLE \'arn:aws:iam::123456789012:role/R\' FORMAT AS PARQUET MANIFEST;\nSELECT COUNT(*) FROM "backupctl_stage_0";\nDELETE FROM "dr"."orders" USING "backupctl_stage_0" WHERE "dr"."orders"."id" = "backupctl_stage_0"."id";\nINSERT INTO "dr"."orders" ("id", "doc", "paid") SELECT "backupctl_stage_0"."id", JSON_PARSE("backupctl_stage_0"."doc"), ("backupctl_stage_0"."paid" <> 0) FROM "backupctl_stage_0";\nDROP TABLE "backupctl_stage_0";\nCREATE TEMP TABLE "backupctl_tomb_1" ("id" DECIMAL(20,0));\nCOPY "backupctl_tomb_1" FROM \'s3://BUCKET/runs/redshift/20261127T020000Z-4d5e6f/tombstones.manifest\' IAM_ROLE \'arn:aws:iam::123456789012:role/R\' FORMAT AS PARQUET MANIFEST;\nSELECT COUNT(*) FROM "backupctl_tomb_1";\nDELETE FROM "dr"."orders" USING "backupctl_tomb_1" WHERE "dr"."orders"."id" = "backupctl_tomb_1"."id";\nDROP TABLE "backupctl_tomb_1";\nCREATE TEMP TABLE "backupctl_stage_1" ("id" DECIMAL(20,0), "doc" VARCHAR(65535), "paid" SMALLINT);\nCOPY "backupctl_stage_1" FROM \'s3://BUCKET/runs/redshift/20261127T020000Z-4d5e6f/copy.manifest\' IAM_ROLE \'arn:aws:iam::123456789012:role/R\' FORMAT AS PARQUET MANIFEST;\nSELECT COUNT(*) FROM "backupctl_stage_1";\nDELETE FROM "dr"."orders" USING "backupctl_stage_1" WHERE "dr"."orders"."id" = "backupctl_stage_1"."id";\nINSERT INTO "dr"."orders" ("id", "doc", "paid") SELECT "backupctl_stage_1"."id", JSON_PARSE("backupctl_stage_1"."doc"), ("backupctl_stage_1"."paid" <> 0) FROM "backupctl_stage_1";\nDROP TABLE "backupctl_stage_1";\nSELECT COUNT(*) FROM "dr"."orders";\nCOMMIT;\n'

GOLDEN_POSTGRES_CHAIN = 'BEGIN;\nCREATE TABLE IF NOT EXISTS "dr"."orders" (\n  "id" DECIMAL(20,0) NOT NULL,\n  "doc" JSONB,\n  "paid" BOOLEAN\n);\nCREATE TEMP TABLE "backupctl_stage_0" ("id" DECIMAL(20,0), "doc" VARCHAR(65535), "paid" SMALLINT);\nCOPY "backupctl_stage_0" ("id", "doc", "paid") FROM STDIN WITH (FORMAT binary);  -- once per part, streamed by backupctl\nSELECT COUNT(*) FROM "backupctl_stage_0";\nDELETE FROM "dr"."orders" USING "backupctl_stage_0" WHERE "dr"."orders"."id" = "backupctl_stage_0"."id";\nINSERT INTO "dr"."orders" ("id", "doc", "paid") SELECT "backupctl_stage_0"."id", CAST("backupctl_stage_0"."doc" AS JSONB), ("backupctl_stage_0"."paid" <> 0) FROM "backupctl_stage_0";\nDROP TABLE "backupctl_stage_0";\nCREATE TEMP TABLE "backupctl_tomb_1" ("id" DECIMAL(20,0));\nCOPY "backupctl_tomb_1" ("id") FROM STDIN WITH (FORMAT binary);  -- once per part, streamed by backupctl\nSELECT COUNT(*) FROM "backupctl_tomb_1";\nDELETE FROM "dr"."orders" USING "backupctl_tomb_1" WHERE "dr"."orders"."id" = "backupctl_tomb_1"."id";\nDROP TABLE "backupctl_tomb_1";\nCREATE TEMP TABLE "backupctl_stage_1" ("id" DECIMAL(20,0), "doc" VARCHAR(65535), "paid" SMALLINT);\nCOPY "backupctl_stage_1" ("id", "doc", "paid") FROM STDIN WITH (FORMAT binary);  -- once per part, streamed by backupctl\nSELECT COUNT(*) FROM "backupctl_stage_1";\nDELETE FROM "dr"."orders" USING "backupctl_stage_1" WHERE "dr"."orders"."id" = "backupctl_stage_1"."id";\nINSERT INTO "dr"."orders" ("id", "doc", "paid") SELECT "backupctl_stage_1"."id", CAST("backupctl_stage_1"."doc" AS JSONB), ("backupctl_stage_1"."paid" <> 0) FROM "backupctl_stage_1";\nDROP TABLE "backupctl_stage_1";\nSELECT COUNT(*) FROM "dr"."orders";\nCOMMIT;\n'

GOLDEN_REDSHIFT_DYNAMODB_KEEP = 'BEGIN;\nCREATE TABLE IF NOT EXISTS "public"."events" (\n  "pk" VARBYTE(2048) NOT NULL,\n  "sk" VARCHAR(256) NOT NULL,\n  "item" SUPER NOT NULL,\n  PRIMARY KEY ("pk", "sk")\n)\nDISTSTYLE KEY\nDISTKEY ("pk")\nCOMPOUND SORTKEY ("pk", "sk");\nCREATE TEMP TABLE "backupctl_stage_0" ("pk" VARCHAR(2732), "sk" VARCHAR(256), "item" SUPER);\nCOPY "backupctl_stage_0" FROM \'s3://BUCKET/runs/redshift/20261127T013000Z-1a2b3c/copy.manifest\' IAM_ROLE \'arn:aws:iam::123456789012:role/R\' FORMAT AS JSON \'s3://BUCKET/runs/redshift/20261127T013000Z-1a2b3c/copy.jsonpaths\' GZIP MANIFEST;\nSELECT COUNT(*) FROM "backupctl_stage_0";\nINSERT INTO "public"."events" ("pk", "sk", "item") SELECT TO_VARBYTE("backupctl_stage_0"."pk", \'base64\'), "backupctl_stage_0"."sk", "backupctl_stage_0"."item" FROM "backupctl_stage_0" WHERE NOT EXISTS (SELECT 1 FROM "public"."events" WHERE "public"."events"."pk" = TO_VARBYTE("backupctl_stage_0"."pk", \'base64\') AND "public"."events"."sk" = "backupctl_stage_0"."sk");\nDROP TABLE "backupctl_stage_0";\nSELECT COUNT(*) FROM "public"."events";\nCOMMIT;\n'


def chain_script(dialect: str) -> str:
    plan = rsql.mysql_plan(ORDERS, "dr", "orders")
    return render(build_steps(plan, CHAIN, "OVERWRITE_EXISTING", dialect, None, ROLE if dialect == "redshift" else ""),
                  dialect)


def test_golden_chain_scripts() -> None:
    assert chain_script("redshift") == GOLDEN_REDSHIFT_CHAIN
    assert chain_script("postgres") == GOLDEN_POSTGRES_CHAIN


def test_binary_copy_only_into_the_types_it_encodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A MySQL snapshot loads in binary COPY format into staging tables and into a target of the plan's
    own types; into an existing target whose column types differ (by OID) that COPY is CSV, since binary
    values are read by the column's receive function (docs/adr/0020)."""
    plan = rsql.mysql_plan(ORDERS, "dr", "orders")
    full = CHAIN[:1]

    def copies(target_oids: list[int] | None) -> list[str]:
        steps = build_steps(plan, full, "TRUNCATE", "postgres", None, direct=True, target_oids=target_oids)
        return [s.sql.rsplit(" WITH ", 1)[1] for s in steps if s.kind == "copy" and s.binary == ("binary" in s.sql)]

    assert copies(None) == ["(FORMAT binary)"]  # created by the restore: DECIMAL(20,0), JSONB, BOOLEAN
    assert copies([1700, 3802, 16]) == ["(FORMAT binary)"]
    assert copies([20, 3802, 16]) == ["(FORMAT csv)"]  # id BIGINT: 8 bytes of int8 are not a numeric
    assert copies([1700, 25, 16]) == ["(FORMAT csv)"]  # doc TEXT: jsonb's version byte would be kept as text
    assert binary_type("DECIMAL(38,0)") == (1700, pa.decimal128(38, 0))
    assert binary_type("DECIMAL(39,0)") is None and binary_type("SUPER") is None and binary_type("TEXT") is None
    assert binary_type("VARCHAR(65535)") == (1043, pa.string()) and binary_type("TIMESTAMPTZ") == (
        1184, pa.timestamp("us", tz="UTC"))
    # without pgpq (no wheel for the platform) every COPY is CSV
    import backupctl.formats.pg_binary as pgb

    monkeypatch.setattr(pgb, "available", lambda: False)
    assert copies(None) == ["(FORMAT csv)"]
    # DynamoDB items keep COPY's text format
    ddb = build_steps(rsql.dynamodb_plan(DDB, "public", "events"), full, "TRUNCATE", "postgres", None)
    assert [s.binary for s in ddb if s.kind == "copy"] == [False]


def test_golden_dynamodb_script_and_jsonpaths() -> None:
    plan = rsql.dynamodb_plan(DDB, "public", "events")
    link = [Link("20261127T013000Z-1a2b3c", "p/", "full", [{"key": "data/part-00000-0000.json.gz", "rows": 2,
                                                           "bytes": 10}], [], 2, "0" * 64, 2, "0" * 64)]
    assert render(build_steps(plan, link, "KEEP_EXISTING", "redshift", None, ROLE), "redshift") == \
        GOLDEN_REDSHIFT_DYNAMODB_KEEP
    assert rsql.jsonpaths(plan) == {"jsonpaths": ["$['Item']['pk']['B']", "$['Item']['sk']['N']", "$['Item']"]}
    pg = render(build_steps(plan, link, "KEEP_EXISTING", "postgres", None), "postgres")
    assert '"pk" BYTEA NOT NULL' in pg and '"item" JSONB NOT NULL' in pg and "DECODE(" in pg


@pytest.mark.parametrize("mode", rsql.INSERT_MODES)
def test_every_statement_parses_as_redshift(mode: str) -> None:
    plans = [rsql.mysql_plan(ORDERS, "dr", 'we"ird%s'), rsql.dynamodb_plan(DDB, "public", "events")]
    for plan in plans:
        links = CHAIN if plan.source_kind == "mysql" and mode in ("OVERWRITE_EXISTING", "TRUNCATE") else CHAIN[:1]
        for dialect, read in (("redshift", "redshift"), ("postgres", "postgres")):
            for step in build_steps(plan, links, mode, dialect, None, ROLE):
                trees = sqlglot.parse(step.sql, read=read)
                assert trees and all(t is not None and not isinstance(t, exp.Command) for t in trees), step.sql


def test_apply_statements_per_mode() -> None:
    plan = rsql.mysql_plan({"table_name": "t", "primary_key": ["a", "b"], "columns": [
        col("a", "int", "int", "int", False), col("b", "varchar", "varchar(3)", "string", False, charset="utf8mb4"),
        col("v", "varchar", "varchar(5)", "string")]}, "s", "t")
    ins = 'INSERT INTO "s"."t" ("a", "b", "v") SELECT "st"."a", "st"."b", "st"."v" FROM "st"'
    match = '"s"."t"."a" = "st"."a" AND "s"."t"."b" = "st"."b"'
    assert rsql.apply_sql(plan, "st", "APPEND", "redshift") == [ins]
    assert rsql.apply_sql(plan, "st", "TRUNCATE", "redshift") == [ins]
    assert rsql.apply_sql(plan, "st", "OVERWRITE_EXISTING", "redshift") == [
        f'DELETE FROM "s"."t" USING "st" WHERE {match}', ins]
    assert rsql.apply_sql(plan, "st", "KEEP_EXISTING", "postgres") == [
        f'{ins} WHERE NOT EXISTS (SELECT 1 FROM "s"."t" WHERE {match})']
    assert rsql.empty_table_sql(plan) == 'DELETE FROM "s"."t"'  # not TRUNCATE: Redshift's TRUNCATE commits


@pytest.mark.parametrize(("data_type", "column_type", "kind", "extra", "redshift", "stage"), [
    ("tinyint", "tinyint(1)", "int", {}, "BOOLEAN", "SMALLINT"),
    ("tinyint", "tinyint(4)", "int", {}, "SMALLINT", "SMALLINT"),
    ("tinyint", "tinyint(1) unsigned", "uint", {}, "SMALLINT", "SMALLINT"),
    ("smallint", "smallint unsigned", "uint", {}, "INTEGER", "INTEGER"),
    ("mediumint", "mediumint", "int", {}, "INTEGER", "INTEGER"),
    ("int", "int unsigned", "uint", {}, "BIGINT", "BIGINT"),
    ("bigint", "bigint", "int", {}, "BIGINT", "BIGINT"),
    ("bigint", "bigint unsigned", "uint", {}, "DECIMAL(20,0)", "DECIMAL(20,0)"),
    ("decimal", "decimal(38,37)", "decimal", {"precision": 38, "scale": 37}, "DECIMAL(38,37)", "DECIMAL(38,37)"),
    ("float", "float", "float32", {}, "REAL", "REAL"),
    ("double", "double", "float64", {}, "DOUBLE PRECISION", "DOUBLE PRECISION"),
    ("date", "date", "date", {}, "DATE", "DATE"),
    ("datetime", "datetime(6)", "datetime", {}, "TIMESTAMP", "TIMESTAMP"),
    ("timestamp", "timestamp(6)", "timestamp", {}, "TIMESTAMPTZ", "TIMESTAMPTZ"),
    ("time", "time(6)", "time", {}, "BIGINT", "BIGINT"),
    ("year", "year", "year", {}, "SMALLINT", "SMALLINT"),
    ("bit", "bit(9)", "bit", {"precision": 9}, "BIGINT", "BIGINT"),
    ("bit", "bit(64)", "bit", {"precision": 64}, "DECIMAL(20,0)", "DECIMAL(20,0)"),
    ("json", "json", "json", {}, "SUPER", "VARCHAR(65535)"),
    ("varchar", "varchar(100)", "string", {"charset": "utf8mb4"}, "VARCHAR(400)", "VARCHAR(400)"),
    ("varchar", "varchar(20000)", "string", {"charset": "utf8mb4"}, "VARCHAR(65535)", "VARCHAR(65535)"),
    ("char", "char(10)", "string", {"charset": "utf8mb3"}, "VARCHAR(30)", "VARCHAR(30)"),
    ("varchar", "varchar(10)", "string", {"charset": "latin1"}, "VARCHAR(30)", "VARCHAR(30)"),
    ("varchar", "varchar(10)", "string", {"charset": "ascii"}, "VARCHAR(10)", "VARCHAR(10)"),
    ("tinytext", "tinytext", "string", {"charset": "utf8mb4"}, "VARCHAR(255)", "VARCHAR(255)"),
    ("longtext", "longtext", "string", {"charset": "utf8mb4"}, "VARCHAR(65535)", "VARCHAR(65535)"),
    ("binary", "binary(16)", "binary", {}, "VARBYTE(16)", "VARBYTE(16)"),
    ("varbinary", "varbinary(300)", "binary", {}, "VARBYTE(300)", "VARBYTE(300)"),
    ("blob", "blob", "binary", {}, "VARBYTE(65535)", "VARBYTE(65535)"),
    ("longblob", "longblob", "binary", {}, "VARBYTE(1024000)", "VARBYTE(1024000)"),
])
def test_type_mapping(data_type: str, column_type: str, kind: str, extra: dict[str, Any], redshift: str,
                      stage: str) -> None:
    c = rsql.mysql_column(col("c", data_type, column_type, kind, **extra))
    assert (c.type, c.stage_type) == (redshift, stage)
    assert rsql.pg_type(c.type) == {"SUPER": "JSONB"}.get(redshift, "BYTEA" if "VARBYTE" in redshift else redshift)


def test_wide_decimal_is_refused() -> None:
    with pytest.raises(InvalidInput, match=r"DECIMAL\(65,30\).*at most 38 digits"):
        rsql.mysql_column(col("d", "decimal", "decimal(65,30)", "decimal", precision=65, scale=30))


def test_keys_options_and_names() -> None:
    plan = rsql.mysql_plan(ORDERS, "s", "t", dist_key="paid", sort_key=["paid", "id"])
    ddl = rsql.create_table_sql(plan, "redshift")
    assert 'DISTKEY ("paid")' in ddl and 'COMPOUND SORTKEY ("paid", "id")' in ddl and "twice" not in ddl
    with pytest.raises(InvalidInput, match="--dist-key"):
        rsql.mysql_plan(ORDERS, "s", "t", dist_key="nope")
    nokey = rsql.mysql_plan({**ORDERS, "primary_key": []}, "s", "t")
    assert "DISTKEY" not in rsql.create_table_sql(nokey, "redshift") and "PRIMARY KEY" not in \
        rsql.create_table_sql(nokey, "redshift")
    assert rsql.parse_table("analytics.orders") == ("analytics", "orders")
    assert rsql.parse_table(None, "public.orders") == ("public", "orders")
    assert rsql.parse_table("orders") == ("public", "orders")
    for bad in ("a.b.c", ".t", "s."):
        with pytest.raises(InvalidInput):
            rsql.parse_table(bad)
    assert rsql.check_insert_mode(None) == "OVERWRITE_EXISTING" and rsql.check_insert_mode("append") == "APPEND"
    with pytest.raises(InvalidInput):
        rsql.check_insert_mode("UPSERT")
    assert rsql.check_iam_role(ROLE, "redshift") == ROLE
    for bad_role in (None, "arn:aws:iam::123:role/x", "role/x"):
        with pytest.raises(InvalidInput):
            rsql.check_iam_role(bad_role, "redshift")
    assert rsql.check_iam_role(None, "postgres") is None


def test_copy_manifest_shape() -> None:
    assert rsql.copy_manifest([("s3://b/p/data/part-00000-0000.parquet", 123)]) == {
        "entries": [{"url": "s3://b/p/data/part-00000-0000.parquet", "mandatory": True,
                     "meta": {"content_length": 123}}]}


def test_uris_and_passwords(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_pg_uri("redshift://admin@c.x.us-west-2.redshift.amazonaws.com/dev") == (
        "redshift", "admin", "c.x.us-west-2.redshift.amazonaws.com", 5439, "dev")
    assert parse_pg_uri("postgresql://u@127.0.0.1:5432/test")[0] == "postgres"
    for bad, text in [("redshift://admin:secret@h/dev", "contains a password"), ("redshift://h/dev", "expected"),
                      ("postgres://@h/db", "user is missing"), ("redshift://u@h:99999/db", "port")]:
        with pytest.raises(InvalidInput, match=text) as ei:
            parse_pg_uri(bad)
        assert "secret" not in ei.value.message
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    s = settings_from_uri("redshift://admin@c.x.us-west-2.redshift.amazonaws.com/dev", None)
    assert s.password_source == "none" and s.cluster_region == "us-west-2"
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    s = settings_from_uri("postgres://u@h/db", str(pw))
    assert s.password == "s3cret" and s.password_source == "file" and "s3cret" not in repr(s) \
        and "s3cret" not in str(s.to_dict())
    monkeypatch.setenv("PGPASSWORD", "x")
    assert settings_from_uri("postgres://u@h/db", None).password_source == "env"
    assert settings_from_uri("postgres://u@10.0.0.1/db", None).cluster_region is None


def test_unknown_database_and_role_at_connect_are_not_found_and_access_denied() -> None:
    import psycopg

    from backupctl.errors import AuthError, DataPathError, NotFound
    from backupctl.pg_conn import translate

    head = 'connection failed: connection to server at "127.0.0.1", port 5432 failed: FATAL:  '
    db = translate(psycopg.OperationalError(head + 'database "nosuchdb" does not exist'), "connecting", connecting=True)
    assert isinstance(db, NotFound) and db.exit_code == 3
    role = translate(psycopg.OperationalError(head + 'role "nobody" does not exist'), "connecting", connecting=True)
    assert isinstance(role, AuthError) and role.exit_code == 6
    down = translate(psycopg.OperationalError(head + "Connection refused"), "connecting", connecting=True)
    assert isinstance(down, DataPathError) and down.exit_code == 7
