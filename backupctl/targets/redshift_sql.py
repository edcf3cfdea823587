"""SQL generation for restores into Redshift (and PostgreSQL, its local stand-in).

Everything here is pure: a ``TablePlan`` (target columns with Redshift
types, the staging types COPY loads into, the merge key, DISTKEY/SORTKEY)
and the statements of one restore, rendered for the ``redshift`` or the
``postgres`` dialect. The two renderings differ only where the engines do:

* types: ``SUPER`` -> ``JSONB``, ``VARBYTE(n)`` -> ``BYTEA`` on PostgreSQL;
  no ``DISTKEY``/``SORTKEY``; no ``PRIMARY KEY`` (Redshift does not enforce
  it, so the stand-in must not either: APPEND may add duplicate keys);
* loading staging tables: ``COPY ... FROM 's3://.../copy.manifest' IAM_ROLE
  ... MANIFEST`` on Redshift, ``COPY ... FROM STDIN`` streamed by backupctl
  on PostgreSQL;
* conversions from staging to target: ``JSON_PARSE(x)`` / ``CAST(x AS JSONB)``
  and ``TO_VARBYTE(x, 'base64')`` / ``DECODE(x, 'base64')``.

The merge statements (DELETE ... USING, INSERT ... SELECT, NOT EXISTS) are
the same text in both dialects. Type mapping and modes: docs/adr/0006.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from backupctl.errors import InvalidInput
from backupctl.pg_conn import quote_ident, quote_literal

INSERT_MODES = ("KEEP_EXISTING", "OVERWRITE_EXISTING", "TRUNCATE", "APPEND")
DEFAULT_INSERT_MODE = "OVERWRITE_EXISTING"
DIALECTS = ("redshift", "postgres")

MAX_VARCHAR = 65535  # bytes
MAX_VARBYTE = 1_024_000  # bytes
MAX_DECIMAL_PRECISION = 38
MAX_IDENT_BYTES = 127
ITEM_COLUMN = "item"
DDB_NUMBER_CHARS = 256  # a DynamoDB number written out in full: 38 digits, exponent -130..+125, sign, point

# Maximum UTF-8 bytes of one character of a MySQL character set.
_ONE_BYTE_CHARSETS = {"ascii", "binary"}
_FOUR_BYTE_CHARSETS = {"utf8mb4", "utf16", "utf16le", "utf32", "ucs2"}
_TEXT_BYTES = {"tinytext": 255, "text": 65535, "mediumtext": 16_777_215, "longtext": 4_294_967_295}
_BLOB_BYTES = {"tinyblob": 255, "blob": 65535, "mediumblob": MAX_VARBYTE, "longblob": MAX_VARBYTE}
_LEN_RE = re.compile(r"\((\d+)\)")
_IAM_ROLE_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")


@dataclass(frozen=True)
class Column:
    """One target column: its Redshift type, the staging type COPY loads, and how staging becomes target."""

    name: str
    type: str  # Redshift type of the target column
    stage_type: str  # Redshift type of the staging column
    nullable: bool = True
    convert: str | None = None  # None | "json" | "bool" | "base64"
    kind: str = ""  # the source kind (MySQL kind, or ddb-S/ddb-N/ddb-B/ddb-item)
    max_bytes: int | None = None  # VARCHAR/VARBYTE length in bytes (checked client-side on the stand-in)


@dataclass
class TablePlan:
    schema: str
    table: str
    columns: list[Column]
    key: list[str]
    dist_key: str | None = None
    sort_key: list[str] = field(default_factory=list)
    source_kind: str = "mysql"  # "mysql" | "dynamodb"

    @property
    def ref(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.table)}"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


# -- names and options ---------------------------------------------------------------


def parse_table(text: str | None, default: str | None = None) -> tuple[str, str]:
    """(schema, table) of ``--table SCHEMA.T`` (``T`` alone means schema ``public``)."""
    value = text or default
    if not value:
        raise InvalidInput("--table SCHEMA.TABLE is required for Redshift targets")
    schema, sep, table = value.partition(".")
    if not sep:
        schema, table = "public", value
    if not schema or not table or "." in table:
        raise InvalidInput(f"--table {value!r}: expected SCHEMA.TABLE")
    for n in (schema, table):
        check_ident(n, "--table")
    return schema, table


def check_ident(name: str, what: str) -> str:
    if not name or "\x00" in name or len(name.encode()) > MAX_IDENT_BYTES:
        raise InvalidInput(f"{what}: {name!r} is not a valid Redshift identifier (1-{MAX_IDENT_BYTES} bytes, no NUL)")
    return name


def check_iam_role(role: str | None, dialect: str) -> str | None:
    """The IAM role ARN(s) (comma-separated for role chaining); required for Redshift."""
    if dialect != "redshift":
        return role
    if not role:
        raise InvalidInput("--iam-role arn:aws:iam::ACCOUNT:role/ROLE is required for redshift:// targets "
                           "(the role the cluster assumes to read the repository)")
    for part in role.split(","):
        if not _IAM_ROLE_RE.match(part.strip()):
            raise InvalidInput(f"--iam-role {role!r}: expected arn:aws:iam::ACCOUNT:role/ROLE")
    return role


def check_insert_mode(mode: str | None) -> str:
    m = (mode or DEFAULT_INSERT_MODE).upper()
    if m not in INSERT_MODES:
        raise InvalidInput(f"--insert-mode {mode}: use one of {', '.join(INSERT_MODES)}")
    return m


# -- type mapping ---------------------------------------------------------------------


def _bytes_per_char(charset: str | None) -> int:
    cs = (charset or "utf8mb4").lower()
    if cs in _ONE_BYTE_CHARSETS:
        return 1
    if cs in _FOUR_BYTE_CHARSETS:
        return 4
    return 3  # utf8mb3 and the 8-bit/2-byte charsets: every character is at most 3 UTF-8 bytes


def _declared_length(column_type: str) -> int | None:
    m = _LEN_RE.search(column_type)
    return int(m.group(1)) if m else None


def _varchar(n: int) -> tuple[str, int]:
    n = max(1, min(MAX_VARCHAR, n))
    return f"VARCHAR({n})", n


def mysql_column(col: dict[str, Any]) -> Column:
    """The Redshift column of a stored MySQL column (docs/adr/0006-redshift-target.md, "Type mapping")."""
    name, kind = str(col["name"]), str(col["kind"])
    dt, ct = str(col["data_type"]).lower(), str(col["column_type"]).lower()
    nullable = bool(col["nullable"])
    unsigned = "unsigned" in ct

    def same(t: str, **kw: Any) -> Column:
        return Column(name, t, kw.pop("stage", t), nullable, kind=kind, **kw)

    if kind in ("int", "uint"):
        if dt == "tinyint" and ct.startswith("tinyint(1)") and not unsigned:
            return same("BOOLEAN", stage="SMALLINT", convert="bool")
        if dt == "tinyint":
            return same("SMALLINT")
        if dt == "smallint":
            return same("INTEGER" if unsigned else "SMALLINT")
        if dt == "mediumint":
            return same("INTEGER")
        if dt in ("int", "integer"):
            return same("BIGINT" if unsigned else "INTEGER")
        return same("DECIMAL(20,0)" if unsigned else "BIGINT")
    if kind == "decimal":
        p, s = int(col["precision"]), int(col["scale"] or 0)
        if p > MAX_DECIMAL_PRECISION:
            raise InvalidInput(
                f"column {name!r} is {ct.upper()}: Redshift DECIMAL holds at most {MAX_DECIMAL_PRECISION} digits; "
                "refusing to round or truncate (restore into MySQL, or narrow the column at the source)")
        return same(f"DECIMAL({p},{s})")
    if kind == "float32":
        return same("REAL")
    if kind == "float64":
        return same("DOUBLE PRECISION")
    if kind == "date":
        return same("DATE")
    if kind == "datetime":
        return same("TIMESTAMP")
    if kind == "timestamp":
        return same("TIMESTAMPTZ")
    if kind == "time":
        return same("BIGINT")  # microseconds: MySQL TIME is signed and reaches 838 h, Redshift TIME does not
    if kind == "year":
        return same("SMALLINT")
    if kind == "bit":
        bits = int(col.get("precision") or _declared_length(ct) or 64)
        return same("BIGINT" if bits <= 63 else "DECIMAL(20,0)")
    if kind == "json":
        t, n = _varchar(MAX_VARCHAR)
        return same("SUPER", stage=t, convert="json", max_bytes=n)
    if kind == "string":
        k = _bytes_per_char(col.get("charset"))
        if dt in ("char", "varchar"):
            chars = _declared_length(ct) or 1
        elif dt in _TEXT_BYTES:  # lengths in bytes of the column's charset: UTF-8 needs at most k per byte
            chars = _TEXT_BYTES[dt]
            k = 1 if str(col.get("charset") or "utf8mb4").lower().startswith("utf8") else k
        elif dt in ("enum", "set"):
            chars = len(ct)  # every member (for SET: all members and commas) is shorter than the declaration
        elif dt == "uuid":
            chars, k = 36, 1
        else:  # inet4 / inet6
            chars, k = 45, 1
        t, n = _varchar(chars * k)
        return same(t, max_bytes=n)
    if kind == "binary":
        declared = _declared_length(ct) if dt in ("binary", "varbinary") else _BLOB_BYTES.get(dt, MAX_VARBYTE)
        n = max(1, min(MAX_VARBYTE, declared or MAX_VARBYTE))
        return same(f"VARBYTE({n})", max_bytes=n)
    raise InvalidInput(f"column {name!r} ({ct}) has no Redshift mapping")


def mysql_plan(schema_doc: dict[str, Any], schema: str, table: str, dist_key: str | None = None,
               sort_key: list[str] | None = None) -> TablePlan:
    stored = [c for c in schema_doc["columns"] if not c["generated"]]
    cols = [mysql_column(c) for c in stored]
    for c in cols:
        check_ident(c.name, "column")
    key = [str(k) for k in schema_doc.get("primary_key") or []]
    return _finish(TablePlan(schema, table, cols, key, source_kind="mysql"), dist_key, sort_key)


def dynamodb_plan(schema_doc: dict[str, Any], schema: str, table: str, dist_key: str | None = None,
                  sort_key: list[str] | None = None) -> TablePlan:
    """Key attributes as typed columns plus the whole item (DynamoDB JSON) as SUPER ``item``."""
    types = {d["AttributeName"]: d["AttributeType"] for d in schema_doc.get("attribute_definitions") or []}
    cols: list[Column] = []
    key: list[str] = []
    for k in schema_doc["key_schema"]:
        name, role = str(k["AttributeName"]), k["KeyType"]
        check_ident(name, "key attribute")
        if name == ITEM_COLUMN:
            raise InvalidInput(f"key attribute {name!r} collides with the column that holds the whole item")
        limit = 2048 if role == "HASH" else 1024  # DynamoDB's key size limits, in bytes
        t = types.get(name)
        if t == "S":
            cols.append(Column(name, f"VARCHAR({limit})", f"VARCHAR({limit})", False, kind="ddb-S", max_bytes=limit))
        elif t == "N":
            cols.append(Column(name, f"VARCHAR({DDB_NUMBER_CHARS})", f"VARCHAR({DDB_NUMBER_CHARS})", False,
                               kind="ddb-N", max_bytes=DDB_NUMBER_CHARS))
        elif t == "B":
            b64 = (limit + 2) // 3 * 4
            cols.append(Column(name, f"VARBYTE({limit})", f"VARCHAR({b64})", False, convert="base64", kind="ddb-B",
                               max_bytes=b64))
        else:
            raise InvalidInput(f"key attribute {name!r} has type {t!r} in schema.json (expected S, N or B)")
        key.append(name)
    cols.append(Column(ITEM_COLUMN, "SUPER", "SUPER", False, kind="ddb-item"))
    return _finish(TablePlan(schema, table, cols, key, source_kind="dynamodb"), dist_key, sort_key)


def _finish(plan: TablePlan, dist_key: str | None, sort_key: list[str] | None) -> TablePlan:
    names = [c.name for c in plan.columns]
    if dist_key is not None and dist_key not in names:
        raise InvalidInput(f"--dist-key {dist_key!r} is not a column of the snapshot ({', '.join(names)})")
    for s in sort_key or []:
        if s not in names:
            raise InvalidInput(f"--sort-key {s!r} is not a column of the snapshot ({', '.join(names)})")
    plan.dist_key = dist_key if dist_key is not None else (plan.key[0] if plan.key else None)
    plan.sort_key = list(sort_key) if sort_key else list(plan.key)
    return plan


def pg_type(redshift_type: str) -> str:
    """The stand-in's type for a Redshift type."""
    t = redshift_type.upper()
    if t == "SUPER":
        return "JSONB"
    if t.startswith("VARBYTE"):
        return "BYTEA"
    return redshift_type


def _type(t: str, dialect: str) -> str:
    return t if dialect == "redshift" else pg_type(t)


# -- statements ------------------------------------------------------------------------


def create_table_sql(plan: TablePlan, dialect: str) -> str:
    lines = [f"  {quote_ident(c.name)} {_type(c.type, dialect)}{'' if c.nullable else ' NOT NULL'}"
             for c in plan.columns]
    if dialect == "redshift" and plan.key:
        lines.append(f"  PRIMARY KEY ({', '.join(quote_ident(k) for k in plan.key)})")
    sql = f"CREATE TABLE IF NOT EXISTS {plan.ref} (\n" + ",\n".join(lines) + "\n)"
    if dialect == "redshift":
        if plan.dist_key:
            sql += f"\nDISTSTYLE KEY\nDISTKEY ({quote_ident(plan.dist_key)})"
        if plan.sort_key:
            sql += f"\nCOMPOUND SORTKEY ({', '.join(quote_ident(s) for s in plan.sort_key)})"
    return sql


def create_stage_sql(stage: str, columns: list[Column], dialect: str) -> str:
    cols = ", ".join(f"{quote_ident(c.name)} {_type(c.stage_type, dialect)}" for c in columns)
    return f"CREATE TEMP TABLE {quote_ident(stage)} ({cols})"


def copy_sql(stage: str, columns: list[Column], dialect: str, *, manifest_url: str = "", iam_role: str = "",
             jsonpaths_url: str | None = None, csv: bool = False, binary: bool = False,
             table_ref: str | None = None) -> str:
    """Load a staging table: from S3 through a manifest (Redshift), or from the client (stand-in).

    On the stand-in, MySQL parts travel in COPY's binary format when every column's type has one
    (``binary``, formats/pg_binary.py), else as CSV (built column-wise with Arrow); DynamoDB items in
    COPY's text format; ``table_ref`` (an already quoted name) loads that table instead of ``stage``.
    """
    if dialect == "postgres":
        ref = table_ref if table_ref is not None else quote_ident(stage)
        fmt = " WITH (FORMAT binary)" if binary else " WITH (FORMAT csv)" if csv else ""
        return f"COPY {ref} ({', '.join(quote_ident(c.name) for c in columns)}) FROM STDIN{fmt}"
    fmt = (f"FORMAT AS JSON {quote_literal(jsonpaths_url)} GZIP" if jsonpaths_url else "FORMAT AS PARQUET")
    return f"COPY {quote_ident(stage)} FROM {quote_literal(manifest_url)} IAM_ROLE {quote_literal(iam_role)} {fmt} MANIFEST"


def stage_value(c: Column, alias: str, dialect: str) -> str:
    """The expression turning staging column ``c`` into the target column's value."""
    ref = f"{quote_ident(alias)}.{quote_ident(c.name)}"
    if c.convert == "json":
        return f"JSON_PARSE({ref})" if dialect == "redshift" else f"CAST({ref} AS JSONB)"
    if c.convert == "bool":
        return f"({ref} <> 0)"
    if c.convert == "base64":
        return f"TO_VARBYTE({ref}, 'base64')" if dialect == "redshift" else f"DECODE({ref}, 'base64')"
    return ref


def _key_match(plan: TablePlan, stage: str, dialect: str) -> str:
    return " AND ".join(f"{plan.ref}.{quote_ident(k)} = {stage_value(plan.column(k), stage, dialect)}"
                        for k in plan.key)


def delete_matching_sql(plan: TablePlan, stage: str, dialect: str) -> str:
    """Delete the target rows whose key is in ``stage`` (Redshift: no alias on the DELETE target)."""
    return f"DELETE FROM {plan.ref} USING {quote_ident(stage)} WHERE {_key_match(plan, stage, dialect)}"


def insert_sql(plan: TablePlan, stage: str, dialect: str, only_new: bool = False) -> str:
    names = ", ".join(quote_ident(c.name) for c in plan.columns)
    values = ", ".join(stage_value(c, stage, dialect) for c in plan.columns)
    sql = f"INSERT INTO {plan.ref} ({names}) SELECT {values} FROM {quote_ident(stage)}"
    if only_new:
        sql += f" WHERE NOT EXISTS (SELECT 1 FROM {plan.ref} WHERE {_key_match(plan, stage, dialect)})"
    return sql


def apply_sql(plan: TablePlan, stage: str, mode: str, dialect: str) -> list[str]:
    """The statements that merge staging table ``stage`` into the target with ``mode``.

    RedshiftCopyActivity's meanings: KEEP_EXISTING adds rows whose key is new;
    OVERWRITE_EXISTING replaces rows whose key matches and adds the rest (delete
    matching, then insert: Redshift's MERGE needs both WHEN clauses and cannot
    express KEEP_EXISTING, so neither uses it); TRUNCATE (the target was emptied
    first, by DELETE: Redshift's TRUNCATE commits) and APPEND add every row.
    """
    if mode == "KEEP_EXISTING":
        return [insert_sql(plan, stage, dialect, only_new=True)]
    if mode == "OVERWRITE_EXISTING":
        return [delete_matching_sql(plan, stage, dialect), insert_sql(plan, stage, dialect)]
    return [insert_sql(plan, stage, dialect)]


def empty_table_sql(plan: TablePlan) -> str:
    return f"DELETE FROM {plan.ref}"


def count_sql(name_sql: str) -> str:
    return f"SELECT COUNT(*) FROM {name_sql}"


def drop_stage_sql(stage: str) -> str:
    return f"DROP TABLE {quote_ident(stage)}"


# -- COPY manifests ------------------------------------------------------------------


def copy_manifest(entries: list[tuple[str, int]]) -> dict[str, Any]:
    """A Redshift COPY manifest: every file mandatory, with its size (required for Parquet)."""
    return {"entries": [{"url": url, "mandatory": True, "meta": {"content_length": int(n)}} for url, n in entries]}


def jsonpaths(plan: TablePlan) -> dict[str, Any]:
    """JSONPaths of DynamoDB export lines ``{"Item": {...}}``: each key's typed value, then the whole item."""
    paths = []
    for c in plan.columns:
        if c.name == ITEM_COLUMN:
            paths.append("$['Item']")
        else:
            if "'" in c.name or "\\" in c.name:
                raise InvalidInput(f"key attribute {c.name!r}: quotes and backslashes cannot be used in a "
                                   "Redshift JSONPath")
            paths.append(f"$['Item']['{c.name}']['{c.kind[-1]}']")
    return {"jsonpaths": paths}
