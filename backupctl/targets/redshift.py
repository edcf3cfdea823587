"""Redshift as a target (and PostgreSQL as its local stand-in): staging tables, COPY, one-transaction merge.

A restore is one transaction on one connection::

    BEGIN
    CREATE TABLE IF NOT EXISTS target (...)            -- types: redshift_sql, docs/adr/0006
    [DELETE FROM target]                               -- TRUNCATE (Redshift's TRUNCATE would commit)
    for each snapshot of the chain (full first, then each increment):
      [CREATE TEMP TABLE tomb; COPY tomb; DELETE FROM target USING tomb WHERE key = ...]   -- increments
      CREATE TEMP TABLE stage (...); COPY stage; SELECT COUNT(*) FROM stage
      <insert mode>: INSERT ... WHERE NOT EXISTS | DELETE ... USING + INSERT | INSERT
      DROP TABLE stage
    SELECT COUNT(*) FROM target                        -- + read-back digest on the stand-in
    COMMIT

On Redshift the COPY reads the snapshot's own parts from S3 through a COPY
manifest that backupctl writes to ``runs/redshift/<snapshot-id>/`` in the
repository (never under the snapshot itself). On PostgreSQL the same COPY
target is fed from the client (``COPY ... FROM STDIN``), streaming Parquet
record batches / gzip lines, so memory stays bounded. Any failure rolls the
whole transaction back: the target is exactly as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from backupctl.aws import AwsContext, validate_region
from backupctl.errors import (
    Conflict,
    FormatError,
    Interrupted,
    InvalidInput,
    NotFound,
    VerificationFailed,
)
from backupctl.formats.dynamodb_json import Digest, combine_hex, decode_line, item_hash
from backupctl.formats.parquet import (
    arrow_type,
    batches_equal,
    hash_sum,
    hex_texts,
    iter_part_batches,
    load_texts,
    row_hashes,
    unhex_binary,
)
from backupctl.formats.pg_binary import HEADER, TRAILER, BinaryCopy, BinaryStream, binary_type
from backupctl.leases import ReaderLeases
from backupctl.model import check_snapshot_id
from backupctl.pg_conn import PgSettings, quote_ident, settings_from_uri, translate
from backupctl.prefetch import Prefetch, prefetch
from backupctl.repository import Repository, S3Store, parse_repo_uri
from backupctl.restore import RedshiftRestoreOptions, mysql_chain
from backupctl.targets import redshift_sql as rsql
from backupctl.targets.redshift_sql import Column, TablePlan

RUNS_PREFIX = "runs/redshift/"
COPY_BATCH_ROWS = 5_000  # DynamoDB items per batch (row-wise COPY text format)
CSV_BATCH_ROWS = 16_384  # MySQL rows per Arrow batch / CSV chunk: small enough that client and server overlap
READBACK_BYTES = 8 << 20  # CSV bytes of the read-back parsed at a time
READBACK_PROCESSES = 2  # worker processes hashing the read-back of a big MySQL-sourced table
READBACK_PROCESS_MIN_ROWS = 300_000  # below this, hashed in the driver (a worker's start costs ~0.7 s)
COMPARE_READBACK = True  # a full snapshot's read-back compared with its parts (docs/adr/0018); False: always hashed
COMPARE_BYTES = True  # ... first with the binary COPY stream sent (docs/adr/0020); False: with the parts
_COPY_LINE_RE = re.compile(r"COPY \S+, line (\d+)(?:, column ([^:]+))?")


@dataclass
class Link:
    """One snapshot the restore applies: its parts, tombstones and the table digest after it."""

    snapshot_id: str
    prefix: str
    mode: str
    parts: list[dict[str, Any]]
    tombstones: list[dict[str, Any]]
    rows: int
    content_digest: str
    table_rows: int
    table_digest: str

    @property
    def deleted(self) -> int:
        return sum(int(p["rows"]) for p in self.tombstones)


@dataclass
class Step:
    sql: str
    kind: str = "sql"  # sql | copy | count_stage | delete_tombstones | count_table | begin | commit
    stage: str | None = None
    link: int | None = None
    parts: str | None = None  # "data" | "tombstones" (copy steps)
    direct: bool = False  # a stand-in COPY straight into the (empty) target table, values in target types
    binary: bool = False  # a stand-in COPY in binary format (formats/pg_binary.py), else CSV
    expect: int | None = None
    what: str = ""


@dataclass
class Loaded:
    rows: int = 0
    deleted: int = 0
    part_digests: list[str] = field(default_factory=list)
    table_rows: int | None = None  # the final COUNT(*) of the target (count_table), inside the transaction


def manifest_key(snapshot_id: str, what: str) -> str:
    """Where the COPY manifest of a snapshot's data (``copy``) or tombstones lives in the repository."""
    return f"{RUNS_PREFIX}{snapshot_id}/{'copy' if what == 'data' else 'tombstones'}.manifest"


def jsonpaths_key(snapshot_id: str) -> str:
    return f"{RUNS_PREFIX}{snapshot_id}/copy.jsonpaths"


def build_steps(plan: TablePlan, links: list[Link], mode: str, dialect: str, store: S3Store | None,
                iam_role: str = "", verify_rows: int | None = None, direct: bool = False,
                target_oids: list[int] | None = None) -> list[Step]:
    """Every statement of the restore, in order (the script ``--dry-run`` prints).

    ``direct`` (the stand-in, a MySQL snapshot, a target that is absent, empty or emptied by TRUNCATE):
    the first snapshot of the chain is COPied straight into the target. On an empty table every
    insert mode means "insert every row", so the staging table and the INSERT ... SELECT would only
    copy the rows a second time (docs/adr/0011).

    On the stand-in a MySQL snapshot's COPY is binary when every column's type has a binary encoding
    (docs/adr/0020); ``target_oids`` (the type OIDs of a target table that already exists) must then
    be those very types for a COPY straight into it, else that COPY is CSV (the server converts).
    """

    def url(key: str) -> str:
        return store.url(key) if store is not None else f"s3://BUCKET/{key}"

    def binary(cols: list[Column], into_target: bool) -> bool:
        if dialect != "postgres" or plan.source_kind != "mysql":
            return False
        types = [binary_type(rsql.pg_type(c.type if into_target else c.stage_type)) for c in cols]
        if any(t is None for t in types):
            return False
        return not into_target or target_oids is None or target_oids == [t[0] for t in types if t is not None]

    jp = url(jsonpaths_key(links[-1].snapshot_id)) if plan.source_kind == "dynamodb" else None
    steps = [Step("BEGIN", kind="begin"),
             Step(rsql.create_table_sql(plan, dialect), what=f"creating {plan.schema}.{plan.table}")]
    if mode == "TRUNCATE":
        steps.append(Step(rsql.empty_table_sql(plan), what=f"emptying {plan.schema}.{plan.table}"))
    key_cols = [plan.column(k) for k in plan.key]
    csv = plan.source_kind == "mysql"
    bin_target, bin_stage, bin_keys = binary(plan.columns, True), binary(plan.columns, False), binary(key_cols, False)
    for i, link in enumerate(links):
        link_mode = mode if i == 0 else "OVERWRITE_EXISTING"
        if i == 0 and direct and not link.tombstones:
            steps += [
                Step(rsql.copy_sql("", plan.columns, dialect, csv=True, binary=bin_target, table_ref=plan.ref),
                     kind="copy", link=i, parts="data", direct=True, binary=bin_target,
                     what=f"{link.snapshot_id}: loading {plan.schema}.{plan.table}"),
            ]
            if len(links) > 1 or verify_rows != link.rows:  # else the final count_table is this very check
                steps.append(Step(rsql.count_sql(plan.ref), kind="count_stage", link=i, expect=link.rows))
            continue
        if link.tombstones:
            st = f"backupctl_tomb_{i}"
            steps += [
                Step(rsql.create_stage_sql(st, key_cols, dialect)),
                Step(rsql.copy_sql(st, key_cols, dialect, manifest_url=url(manifest_key(link.snapshot_id, "tombstones")),
                                   iam_role=iam_role, csv=csv, binary=bin_keys), kind="copy", stage=st, link=i,
                     parts="tombstones", binary=bin_keys),
                Step(rsql.count_sql(quote_ident(st)), kind="count_stage", stage=st, link=i, expect=link.deleted),
                Step(rsql.delete_matching_sql(plan, st, dialect), kind="delete_tombstones", link=i,
                     what=f"{link.snapshot_id}: deleting tombstoned keys"),
                Step(rsql.drop_stage_sql(st)),
            ]
        st = f"backupctl_stage_{i}"
        steps += [
            Step(rsql.create_stage_sql(st, plan.columns, dialect)),
            Step(rsql.copy_sql(st, plan.columns, dialect, manifest_url=url(manifest_key(link.snapshot_id, "data")),
                               iam_role=iam_role, jsonpaths_url=jp, csv=csv, binary=bin_stage),
                 kind="copy", stage=st, link=i, parts="data", binary=bin_stage),
            Step(rsql.count_sql(quote_ident(st)), kind="count_stage", stage=st, link=i, expect=link.rows),
            *[Step(s, link=i, what=f"{link.snapshot_id}: {link_mode} into {plan.schema}.{plan.table}")
              for s in rsql.apply_sql(plan, st, link_mode, dialect)],
            Step(rsql.drop_stage_sql(st)),
        ]
    steps.append(Step(rsql.count_sql(plan.ref), kind="count_table", expect=verify_rows))
    steps.append(Step("COMMIT", kind="commit"))
    return steps


def render(steps: list[Step], dialect: str) -> str:
    out = []
    for s in steps:
        if s.kind == "copy" and dialect == "postgres":
            out.append(f"{s.sql};  -- once per part, streamed by backupctl")
        else:
            out.append(s.sql + ";")
    return "\n".join(out) + "\n"


# -- the restore ---------------------------------------------------------------------


def _links(repo: Repository, prefix: str, manifest: Any, schema_doc: dict[str, Any]) -> list[Link]:
    if manifest.source.get("kind") == "dynamodb":
        parts = [p.to_dict() for p in manifest.parts]
        return [Link(manifest.id, prefix, manifest.mode, parts, [], manifest.rows, manifest.content_digest,
                     manifest.rows, manifest.content_digest)]
    chain = mysql_chain(repo, prefix, manifest)
    for link in chain:
        other = repo.read_schema(link.prefix, link.manifest) if link.prefix != prefix else schema_doc
        if (other.get("stored_columns") != schema_doc.get("stored_columns")
                or other.get("primary_key") != schema_doc.get("primary_key")):
            raise FormatError(f"snapshot {link.manifest.id} has other columns than {manifest.id}: the chain is invalid")
    out = []
    for link in chain:
        rows, digest = link.table_digest
        out.append(Link(link.manifest.id, link.prefix, link.manifest.mode, [p.to_dict() for p in link.manifest.parts],
                        link.tombstones, link.manifest.rows, link.manifest.content_digest, rows, digest))
    return out


def restore(
    aws: AwsContext,
    opts: RedshiftRestoreOptions,
    progress_factory: Callable[[str, int | None], Any] | None = None,
    on_event: Callable[[str], None] | None = None,
    readers: ReaderLeases | None = None,
) -> dict[str, Any]:
    """Restore ``opts.snapshot_id`` into a Redshift (or stand-in PostgreSQL) table; see the module doc.

    ``readers`` (restore.restore_redshift's) holds a reader lease on every snapshot of the chain while it loads.
    """
    settings = settings_from_uri(opts.target_uri, opts.password_file, "--to")
    dialect = settings.dialect
    check_snapshot_id(opts.snapshot_id)
    validate_region(opts.region, "--region")
    if opts.repo_uri is not None:
        parse_repo_uri(opts.repo_uri)
    mode = rsql.check_insert_mode(opts.insert_mode)
    iam_role = rsql.check_iam_role(opts.iam_role, dialect) or ""
    cluster_region = settings.cluster_region
    if dialect == "redshift" and cluster_region and cluster_region != opts.region:
        raise InvalidInput(f"the cluster is in {cluster_region}, the repository in {opts.region}: Redshift COPY "
                           "from Parquet reads only buckets in the cluster's region")
    say = on_event or (lambda _m: None)
    started = time.monotonic()
    aws.check_credentials()
    repo = Repository.open(aws, opts.region, opts.repo_uri, create=False)
    prefix, manifest = repo.find_snapshot(opts.snapshot_id)
    kind = manifest.source.get("kind")
    if kind not in ("mysql", "dynamodb"):
        raise InvalidInput(f"snapshot {manifest.id} is a {kind} snapshot: Redshift restores take MySQL or DynamoDB")
    schema_doc = repo.read_schema(prefix, manifest)
    schema, table = rsql.parse_table(opts.table, f"public.{schema_doc['table_name']}")
    build = rsql.mysql_plan if kind == "mysql" else rsql.dynamodb_plan
    plan = build(schema_doc, schema, table, opts.dist_key, opts.sort_key)
    links = _links(repo, prefix, manifest, schema_doc)
    if not plan.key and mode in ("KEEP_EXISTING", "OVERWRITE_EXISTING"):
        raise InvalidInput(f"snapshot {manifest.id} has no primary key: --insert-mode {mode} needs one to match "
                           "rows; use TRUNCATE or APPEND")
    if len(links) > 1 and mode in ("KEEP_EXISTING", "APPEND"):
        raise InvalidInput(f"--insert-mode {mode} cannot apply increments (they replace and delete rows); "
                           "use OVERWRITE_EXISTING or TRUNCATE")

    manifests: dict[str, dict[str, Any]] = {}
    if dialect == "redshift":
        for link in links:
            manifests[manifest_key(link.snapshot_id, "data")] = rsql.copy_manifest(
                [(repo.store.url(link.prefix + p["key"]), int(p["bytes"])) for p in link.parts])
            if link.tombstones:
                manifests[manifest_key(link.snapshot_id, "tombstones")] = rsql.copy_manifest(
                    [(repo.store.url(link.prefix + p["key"]), int(p["bytes"])) for p in link.tombstones])
        if plan.source_kind == "dynamodb":
            manifests[jsonpaths_key(links[-1].snapshot_id)] = rsql.jsonpaths(plan)
    target = {"kind": dialect, "host": settings.host, "port": settings.port, "database": settings.database,
              "schema": schema, "table": table}
    loaded_rows = sum(link.rows for link in links)
    want_rows, want_digest = links[-1].table_rows, links[-1].table_digest
    plan_doc = {
        "snapshot_id": manifest.id,
        "source": manifest.source,
        "target": target,
        "insert_mode": mode,
        "dialect": dialect,
        "chain": [{"snapshot_id": link.snapshot_id, "mode": link.mode, "rows": link.rows, "deleted": link.deleted}
                  for link in links],
        "columns": [{"name": c.name, "type": c.type if dialect == "redshift" else rsql.pg_type(c.type),
                     "staging_type": c.stage_type if dialect == "redshift" else rsql.pg_type(c.stage_type)}
                    for c in plan.columns],
        "primary_key": plan.key,
        "dist_key": plan.dist_key if dialect == "redshift" else None,
        "sort_key": plan.sort_key if dialect == "redshift" else [],
        "copy_manifests": {repo.store.url(k): v for k, v in manifests.items()},
        "rows": loaded_rows,
        "deleted": sum(link.deleted for link in links),
        "parts": sum(len(link.parts) + len(link.tombstones) for link in links),
        "bytes": sum(int(p["bytes"]) for link in links for p in link.parts),
    }
    if opts.dry_run:
        steps = build_steps(plan, links, mode, dialect, repo.store, iam_role)
        return {**plan_doc, "sql": [s.sql for s in steps], "script": render(steps, dialect), "dry_run": True}

    if readers is not None:
        readers.hold(repo, [(link.snapshot_id, link.prefix) for link in links])  # prune keeps the chain
    repo.check_parts((link.prefix, link.parts + link.tombstones) for link in links)  # before any write
    conn = settings.connect()
    pool: HashPool | None = None
    try:
        exists, empty, target_oids = _target_state(conn, settings, plan)
        say(f"loading into {settings.describe()} (backend pid {conn.info.backend_pid})")
        table_level = not exists or empty or mode == "TRUNCATE"
        # With a read-back the table's digest is compared with the snapshot's: re-deriving every part's
        # digest while loading would prove the same thing twice (parts' sha256 are still checked).
        readback = opts.verify and table_level and dialect == "postgres"
        # MySQL parts' rows are hashed while loading only when their digests are the verification
        # (docs/adr/0015); --no-verify checks each part's sha256 and row count, nothing more.
        hash_parts = opts.verify and not readback
        direct = table_level and dialect == "postgres" and plan.source_kind == "mysql"
        steps = build_steps(plan, links, mode, dialect, repo.store, iam_role,
                            verify_rows=want_rows if table_level else None, direct=direct, target_oids=target_oids)
        # One full snapshot COPYed straight into the empty table: the read-back is compared with what was
        # sent (binary, docs/adr/0020) or with the parts (docs/adr/0018).
        compare = (Compare(repo.store, links[0], _sent_hash(steps, plan)) if COMPARE_READBACK and readback and direct
                   and len(links) == 1 and links[0].mode == "full" else None)
        for key, doc in manifests.items():
            say(f"writing {repo.store.url(key)}")
            repo.store.put_json(key, doc)
        total = loaded_rows + sum(link.deleted for link in links)
        # The read-back's hashing processes start now and wait through the load (~0.7 s start hidden).
        # (Not when the read-back is compared with the parts: only its fallback hashes, in the driver.)
        pool = (HashPool(READBACK_PROCESSES) if readback and plan.source_kind == "mysql" and compare is None
                and want_rows >= READBACK_PROCESS_MIN_ROWS else None)
        if progress_factory is None:
            loaded = _run(conn, settings, steps, plan, links, repo.store, schema_doc, None, say, hash_parts,
                          compare.sent if compare is not None else None)
            result_rb = _verify(conn, settings, plan, schema_doc, readback, want_rows, want_digest, say, pool,
                                compare, loaded.table_rows)
            _commit(conn, settings)
        else:
            with progress_factory(f"restore {schema}.{table}", total) as progress:
                loaded = _run(conn, settings, steps, plan, links, repo.store, schema_doc, progress, say, hash_parts,
                              compare.sent if compare is not None else None)
                result_rb = _verify(conn, settings, plan, schema_doc, readback, want_rows, want_digest, say, pool,
                                    compare, loaded.table_rows)
                _commit(conn, settings)
    except BaseException:
        _rollback(conn)
        raise
    finally:
        conn.close()
        if pool is not None:
            pool.close()

    table_rows, digest, verified_by = result_rb
    if digest is not None:
        verification = "table"
    elif table_level and opts.verify:
        verification = "counts"
    elif opts.verify:
        verification = "parts"
    else:
        verification = "skipped"
    result: dict[str, Any] = {
        "snapshot_id": manifest.id,
        "target": target,
        "insert_mode": mode,
        "dialect": dialect,
        "chain": [link.snapshot_id for link in links],
        "rows": loaded.rows,
        "deleted": loaded.deleted,
        "table_rows": table_rows,
        "parts": plan_doc["parts"],
        "bytes": plan_doc["bytes"],
        "verification": verification,
        "verified_by": verified_by,
        "duration_s": round(time.monotonic() - started, 3),
    }
    if dialect == "postgres":  # how the client streamed the rows: binary / csv (MySQL parts), text (DynamoDB items)
        result["copy_format"] = "+".join(sorted({"binary" if s.binary else "csv" if plan.source_kind == "mysql"
                                                 else "text" for s in steps if s.kind == "copy"}))
    if digest is not None:
        result["digest"] = digest
    elif dialect == "postgres" and len(links) == 1 and loaded.part_digests:
        result["digest"] = combine_hex(loaded.part_digests)  # the loaded parts' digest, checked against the manifest
    if dialect == "redshift":
        result["copy_manifests"] = [repo.store.url(k) for k in manifests]
    return result


def _target_state(conn: psycopg.Connection[Any], settings: PgSettings, plan: TablePlan
                  ) -> tuple[bool, bool, list[int] | None]:
    """(exists, empty, column type OIDs or None when absent) of the target; refuses a missing schema (3)
    or a table with other columns (4)."""
    what = f"reading the state of {plan.schema}.{plan.table}"
    try:
        if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (plan.schema,)).fetchone() is None:
            raise NotFound(f"schema '{plan.schema}' does not exist in database '{settings.database}' "
                           "(create it first: backupctl creates tables, not schemas)")
        cols = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position", (plan.schema, plan.table)).fetchall()]
        if not cols:
            return False, True, None
        want = [c.name for c in plan.columns]
        if cols != want:
            raise Conflict(f"table '{plan.schema}.{plan.table}' has columns {cols}, the snapshot {want}: "
                           "refusing to load")
        oids = [int(r[0]) for r in conn.execute(
            "SELECT atttypid FROM pg_attribute WHERE attrelid = CAST(%s AS regclass) AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum", (plan.ref,)).fetchall()]
        empty = conn.execute(f"SELECT 1 FROM {plan.ref} LIMIT 1").fetchone() is None
        return True, empty, oids
    except psycopg.Error as e:
        raise translate(e, what) from e


def _rollback(conn: psycopg.Connection[Any]) -> None:
    if conn.closed:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        pass


def _commit(conn: psycopg.Connection[Any], settings: PgSettings) -> None:
    try:
        conn.execute("COMMIT")
    except psycopg.Error as e:
        raise translate(e, f"committing on {settings.describe()}") from e


def _run(conn: psycopg.Connection[Any], settings: PgSettings, steps: list[Step], plan: TablePlan, links: list[Link],
         store: S3Store, schema_doc: dict[str, Any], progress: Any, say: Callable[[str], None],
         hash_parts: bool = True, sent: Any = None) -> Loaded:
    loaded = Loaded()
    for step in steps:
        if step.kind == "commit":
            break  # committed by the caller after the read-back check
        what = step.what or f"running {step.sql.split('(')[0].strip()[:60]}"
        try:
            if step.kind == "copy" and settings.dialect == "postgres":
                assert step.link is not None and step.parts is not None
                link = links[step.link]
                parts = link.parts if step.parts == "data" else link.tombstones
                if plan.source_kind == "mysql":
                    loaded.part_digests += _copy_mysql_parts(conn, step, plan, link, store, schema_doc, progress, say,
                                                              hash_rows=hash_parts, sent=sent)
                    continue
                for part in parts:
                    msg = f"{link.snapshot_id}: loading {step.parts} part {part['key']}"
                    if progress is not None and hasattr(progress, "note"):
                        progress.note(msg)  # per-part news goes to the progress bar, not the log
                    else:
                        say(msg)
                    loaded.part_digests.append(_stream_part(conn, step, plan, link, part, store, progress))
                continue
            if step.kind == "copy":
                assert step.link is not None
                link = links[step.link]
                if not (link.parts if step.parts == "data" else link.tombstones):
                    continue  # COPY refuses an empty manifest; the staging table stays empty
                say(f"{link.snapshot_id}: COPY {step.parts} from S3")
            cur = conn.execute(step.sql)
            if step.kind in ("count_stage", "count_table"):
                row = cur.fetchone()
                got = int(row[0]) if row else 0
                if step.kind == "count_table":
                    loaded.table_rows = got
                if step.expect is not None and got != step.expect:
                    where = (f"staging table of {links[step.link].snapshot_id}"
                             if step.link is not None and step.stage is not None
                             else f"table {plan.schema}.{plan.table}")
                    raise VerificationFailed(f"{where} holds {got} rows, the snapshot says {step.expect}; "
                                             "nothing was committed")
            elif step.kind == "delete_tombstones":
                loaded.deleted += max(0, cur.rowcount)
                if progress is not None and step.link is not None:
                    progress.advance(links[step.link].deleted, 0)
            elif step.kind == "copy" and progress is not None and step.link is not None and step.parts == "data":
                progress.advance(links[step.link].rows, 0)
        except psycopg.Error as e:
            raise translate(e, what) from e
    loaded.rows = sum(lk.rows for lk in links)
    return loaded


# -- client-side COPY (the stand-in) ---------------------------------------------------


def _check_len(value: Any, col: Column, part: str, row: int) -> None:
    if col.max_bytes is None or value is None:
        return
    n = len(value.encode()) if isinstance(value, str) else len(value) if isinstance(value, bytes) else 0
    if n > col.max_bytes:
        raise Conflict(f"{part}, row {row}, column {col.name!r}: {n} bytes do not fit "
                       f"{col.stage_type} (Redshift lengths are bytes); nothing was committed")


def _stream_part(conn: psycopg.Connection[Any], step: Step, plan: TablePlan, link: Link, part: dict[str, Any],
                 store: S3Store, progress: Any) -> str:
    """COPY one DynamoDB part into the staging table from the client; check its sha256, rows and digest."""
    key = part["key"]
    with tempfile.TemporaryFile(prefix="backupctl-rs-") as tmp:
        sha = store.download_to(link.prefix + key, tmp)
        if sha != part["sha256"]:
            raise FormatError(f"part {key} of {link.snapshot_id} is corrupt: sha256 {sha} != manifest {part['sha256']}")
        digest = Digest()
        row_no = 0
        try:
            with conn.cursor() as cur, cur.copy(step.sql) as cp:
                for batch in _dynamodb_rows(tmp, plan, key, digest):
                    for r in batch:
                        row_no += 1
                        for v, c in zip(r, plan.columns, strict=True):
                            _check_len(v, c, f"part {key} of {link.snapshot_id}", row_no)
                        cp.write_row(r)
                    if progress is not None:
                        progress.advance(len(batch), 0)
        except psycopg.Error as e:
            raise translate(e, f"loading {_copy_where(e, key, link)}") from e
        except KeyboardInterrupt as e:
            raise Interrupted("interrupted: nothing was committed") from e
    _check_part_digest(link, part, digest)
    return digest.hexdigest()


def _copy_where(e: psycopg.Error, key: str, link: Link) -> str:
    """Where a COPY error happened: the part, and the row and column when the server's CONTEXT names them."""
    where = f"part {key} of {link.snapshot_id}"
    m = _COPY_LINE_RE.search(getattr(e.diag, "context", None) or "")
    if m:
        where += f", row {m.group(1)}" + (f", column {m.group(2)}" if m.group(2) else "")
    return where


def _check_part_digest(link: Link, part: dict[str, Any], digest: Digest) -> None:
    if digest.count != int(part["rows"]) or digest.hexdigest() != part["digest"]:
        raise FormatError(f"part {part['key']} of {link.snapshot_id}: read {digest.count} rows (manifest says "
                          f"{part['rows']}) or its content digest differs; nothing was committed")


# MySQL parts: one COPY (FORMAT csv) per step, fed by a thread that downloads each part, checks its
# sha256, and turns its record batches into CSV with Arrow kernels while the server parses the last
# chunk (docs/adr/0011). Only the SHA-256 of each row and binary-to-hex are per-value Python.


def _pg_texts(arr: pa.Array, col: dict[str, Any], c: Column, direct: bool) -> pa.Array:
    """One column as the CSV text PostgreSQL reads back into the same value (nulls stay null)."""
    kind = col["kind"]
    if c.convert == "bool" and direct:
        return pc.if_else(pc.not_equal(arr, 0), "t", "f")
    if kind == "binary":
        return hex_texts(arr, "\\x")
    if kind == "timestamp":
        return pc.binary_join_element_wise(pc.cast(arr.view(pa.timestamp("us")), pa.string()), "+00", "")
    if kind == "time":
        return pc.cast(arr.view(pa.int64()), pa.string())  # microseconds (BIGINT, docs/adr/0006)
    return load_texts(arr, col)  # decimals as plain text, floats as their shortest round-trip text


def _check_lengths(batch: pa.RecordBatch, cols: list[Column], where: str, pos: int) -> None:
    for i, c in enumerate(cols):
        arr = batch.column(i)
        if c.max_bytes is None or not (pa.types.is_string(arr.type) or pa.types.is_binary(arr.type)):
            continue
        lens = pc.binary_length(arr)
        longest = pc.max(lens).as_py()
        if longest is not None and longest > c.max_bytes:
            idx = pc.index(pc.greater(lens, c.max_bytes), True).as_py()
            raise Conflict(f"{where}, row {pos + idx + 1}, column {c.name!r}: {lens[idx].as_py()} bytes do not fit "
                           f"{c.stage_type} (Redshift lengths are bytes); nothing was committed")


@contextmanager
def _downloaded(store: S3Store, link: Link, part: dict[str, Any]) -> Iterator[IO[bytes]]:
    """A MySQL part in a temporary file, its sha256 checked against the manifest's."""
    key = part["key"]
    with tempfile.TemporaryFile(prefix="backupctl-rs-") as tmp:
        sha = store.download_to(link.prefix + key, tmp)
        if sha != part["sha256"]:
            raise FormatError(f"part {key} of {link.snapshot_id} is corrupt: sha256 {sha} != manifest "
                              f"{part['sha256']}")
        yield tmp


def _copy_chunks(store: S3Store, link: Link, parts: list[dict[str, Any]], stored: list[dict[str, Any]],
                 cols: list[Column], direct: bool, hash_rows: bool = True, binary: BinaryCopy | None = None,
                 sent: Any = None) -> Iterator[tuple[dict[str, Any], bytes | None, int]]:
    """(part, COPY data, rows) per batch, then (part, None, 0) once the part's rows and digest checked out.

    The data is CSV, or with ``binary`` the binary format (its header before a part's first batch,
    its trailer after the last: one COPY per part); ``sent`` (a hashlib object) is fed every binary
    row sent, in order. Without ``hash_rows`` (the table is read back and digested afterwards) only
    the part's sha256 and row count are checked here.
    """
    opts = pacsv.WriteOptions(include_header=False, batch_size=CSV_BATCH_ROWS)
    names = [f"c{i}" for i in range(len(stored))]
    for part in parts:
        key = part["key"]
        with _downloaded(store, link, part) as tmp:
            total, pos = 0, 0
            stream: BinaryStream | None = None
            for batch in iter_part_batches(tmp, stored, CSV_BATCH_ROWS, what=f"part {key}"):
                if hash_rows:
                    total += hash_sum(row_hashes(batch, stored))
                _check_lengths(batch, cols, f"part {key} of {link.snapshot_id}", pos)
                if binary is not None:
                    head = b""
                    if stream is None:
                        stream = binary.stream()
                        head = stream.header()
                    data = stream.encode(batch)
                    if sent is not None:
                        sent.update(data)
                    data = head + data
                else:
                    arrays = [_pg_texts(batch.column(i), col, c, direct)
                              for i, (col, c) in enumerate(zip(stored, cols, strict=True))]
                    sink = pa.BufferOutputStream()
                    pacsv.write_csv(pa.Table.from_arrays(arrays, names=names), sink, opts)
                    data = sink.getvalue().to_pybytes()
                pos += batch.num_rows
                yield part, data, batch.num_rows
            if stream is not None:
                data = stream.finish()
                if sent is not None:
                    sent.update(data[:-len(TRAILER)])
                yield part, data, 0
        if hash_rows:
            _check_part_digest(link, part, Digest(total % (1 << 256), pos))
        elif pos != int(part["rows"]):
            raise FormatError(f"part {key} of {link.snapshot_id}: read {pos} rows, the manifest says {part['rows']}; "
                              "nothing was committed")
        yield part, None, 0


def _copy_mysql_parts(conn: psycopg.Connection[Any], step: Step, plan: TablePlan, link: Link, store: S3Store,
                      schema_doc: dict[str, Any], progress: Any, say: Callable[[str], None],
                      hash_rows: bool = True, sent: Any = None) -> list[str]:
    """COPY every data (or tombstone) part of ``link``, one COPY per part; returns the checked part digests.

    One COPY per part keeps errors exact (the server's line number is the part's row; a lost
    connection is noticed when the part's COPY ends); the producer thread works ahead meanwhile.
    """
    stored = [c for c in schema_doc["columns"] if not c["generated"]]
    cols = plan.columns
    parts = link.parts if step.parts == "data" else link.tombstones
    if step.parts == "tombstones":
        stored = [next(c for c in stored if c["name"] == k) for k in plan.key]
        cols = [plan.column(k) for k in plan.key]
    digests: list[str] = []
    binary = None
    if step.binary:
        binary = BinaryCopy.plan(stored, [rsql.pg_type(c.type if step.direct else c.stage_type) for c in cols])
        assert binary is not None, "build_steps chose a binary COPY for types without a binary encoding"
    chunks = prefetch(_copy_chunks(store, link, parts, stored, cols, step.direct, hash_rows, binary,
                                   sent if step.direct else None), depth=3)
    key = parts[0]["key"] if parts else ""
    try:
        with conn.cursor() as cur:
            copy_cm: Any = None
            cp: Any = None
            try:
                for part, data, n in chunks:
                    key = part["key"]
                    if data is None:  # the part's rows and digest checked out: end its COPY
                        if copy_cm is not None:
                            cm, copy_cm = copy_cm, None
                            cm.__exit__(None, None, None)
                        digests.append(str(part["digest"]))
                        continue
                    if copy_cm is None:
                        msg = f"{link.snapshot_id}: loading {step.parts} part {key}"
                        if progress is not None and hasattr(progress, "note"):
                            progress.note(msg)  # per-part news goes to the progress bar, not the log
                        else:
                            say(msg)
                        copy_cm = cur.copy(step.sql)
                        cp = copy_cm.__enter__()
                    cp.write(data)
                    if progress is not None:
                        progress.advance(n, 0)
            except BaseException as exc:
                if copy_cm is not None:  # abort the COPY in progress (psycopg sends CopyFail)
                    copy_cm.__exit__(type(exc), exc, exc.__traceback__)
                raise
    except psycopg.Error as e:
        raise translate(e, f"loading {_copy_where(e, key, link)}") from e
    except KeyboardInterrupt as e:
        raise Interrupted("interrupted: nothing was committed") from e
    finally:
        chunks.close()
    return digests


def _dynamodb_rows(f: IO[bytes], plan: TablePlan, key: str, digest: Digest) -> Iterator[list[tuple[Any, ...]]]:
    keys = [(c.name, c.kind[-1]) for c in plan.columns if c.name != rsql.ITEM_COLUMN]
    batch: list[tuple[Any, ...]] = []
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            for n, line in enumerate(gz, start=1):
                if not line.strip():
                    continue
                item = decode_line(line)
                digest.add_hash(item_hash(item))
                raw = orjson.loads(line)["Item"]
                try:
                    vals = [raw[name][t] for name, t in keys]
                except (KeyError, TypeError) as e:
                    raise FormatError(f"part {key}, line {n}: key attribute {e} missing or of another type") from e
                batch.append((*vals, orjson.dumps(raw).decode()))
                if len(batch) >= COPY_BATCH_ROWS:
                    yield batch
                    batch = []
    except (OSError, EOFError, zlib.error) as e:
        raise FormatError(f"part {key} is not valid gzip: {e}") from e
    if batch:
        yield batch


# -- verification -------------------------------------------------------------------


def _from_pg_text(arr: pa.Array, col: dict[str, Any]) -> pa.Array:
    """A column of read-back CSV text (see ``_readback_sql``) as the Arrow array the part held."""
    kind = col["kind"]
    want = arrow_type(col)
    if kind == "binary":
        return unhex_binary(arr).cast(want)
    if kind in ("string", "json"):
        return arr
    if kind == "time":
        return pc.cast(arr, pa.int64()).view(want)
    if kind == "timestamp":
        return pc.cast(arr, pa.timestamp("us")).view(want)
    return pc.cast(arr, want)


def _readback_sql(plan: TablePlan, stored: list[dict[str, Any]]) -> str:
    """The target as CSV whose text ``_from_pg_text`` parses back exactly (UTC, 0/1, hex)."""
    exprs = []
    for c, col in zip(plan.columns, stored, strict=True):
        ref = quote_ident(c.name)
        if col["kind"] == "timestamp":
            exprs.append(f"({ref} AT TIME ZONE 'UTC')")
        elif c.convert == "bool":
            exprs.append(f"CAST({ref} AS INTEGER)")
        elif col["kind"] == "binary":
            exprs.append(f"encode({ref}, 'hex')")
        else:
            exprs.append(ref)
    return f"COPY (SELECT {', '.join(exprs)} FROM {plan.ref}) TO STDOUT WITH (FORMAT csv)"


def _copy_out_chunks(conn: psycopg.Connection[Any], sql: str) -> Iterator[bytes]:
    """The output of ``COPY ... TO STDOUT`` in chunks of about READBACK_BYTES (whole rows)."""
    pending: list[bytes] = []
    size = 0
    with conn.cursor() as cur, cur.copy(sql) as cp:
        while data := cp.read():
            pending.append(bytes(data))
            size += len(data)
            if size >= READBACK_BYTES:
                yield b"".join(pending)
                pending, size = [], 0
    if pending:
        yield b"".join(pending)


def readback_batch(data: bytes, stored: list[dict[str, Any]]) -> pa.RecordBatch:
    """One chunk of read-back CSV (``_readback_sql``) as the record batch of the part values it holds."""
    names = [c["name"] for c in stored]
    read_opts = pacsv.ReadOptions(column_names=[f"c{i}" for i in range(len(stored))])
    parse_opts = pacsv.ParseOptions(newlines_in_values=True)
    convert_opts = pacsv.ConvertOptions(column_types={f"c{i}": pa.string() for i in range(len(stored))},
                                        strings_can_be_null=True, quoted_strings_can_be_null=False,
                                        null_values=[""])
    table = pacsv.read_csv(pa.py_buffer(data), read_options=read_opts, parse_options=parse_opts,
                           convert_options=convert_opts)
    arrays = [_from_pg_text(table.column(i).combine_chunks(), col) for i, col in enumerate(stored)]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def hash_csv_chunk(data: bytes, stored: list[dict[str, Any]]) -> tuple[int, int]:
    """(sum of row hashes, rows) of one chunk of read-back CSV (``_readback_sql``); runs in a worker process too."""
    batch = readback_batch(data, stored)
    return hash_sum(row_hashes(batch, stored)), batch.num_rows


def _noop() -> None:
    return None


class HashPool:
    """Worker processes that hash read-back chunks while the driver reads the next ones off the connection.

    The read-back must run on the restore's own connection (the rows are not committed yet), so
    it is one stream; parsing and hashing it (~2.5 us a row of Python) is what gets spread over cores.
    """

    def __init__(self, processes: int) -> None:
        from concurrent.futures import ProcessPoolExecutor

        from backupctl.engines.processes import light_main, mp_context

        self.processes = max(1, processes)
        self.ex = ProcessPoolExecutor(max_workers=self.processes, mp_context=mp_context())
        with light_main():
            for _ in range(self.processes):
                self.ex.submit(_noop)  # start the workers now

    def close(self) -> None:
        self.ex.shutdown(wait=True, cancel_futures=True)


def _readback_chunks(conn: psycopg.Connection[Any], plan: TablePlan, stored: list[dict[str, Any]]) -> Prefetch[bytes]:
    """The target's read-back CSV (``_readback_sql``) in chunks, read one step ahead in a thread.

    The text depends on session settings, set for this transaction only: ISO dates, shortest-exact floats.
    """
    conn.execute("SET LOCAL datestyle TO 'ISO, YMD'")
    conn.execute("SET LOCAL extra_float_digits TO 1")
    return prefetch(_copy_out_chunks(conn, _readback_sql(plan, stored)), depth=2)


def _readback_matches(conn: psycopg.Connection[Any], plan: TablePlan, stored: list[dict[str, Any]],
                      store: S3Store, link: Link) -> bool:
    """Whether the target, read back in its storage order, holds exactly the parts' rows in the order loaded.

    For a table filled by one direct COPY per part (``Step.direct``, docs/adr/0018): its rows are
    compared value for value with the parts' own (each part downloaded again and its sha256 checked),
    in Arrow (``batches_equal``), instead of hashing every row read back. Equal sequences are equal
    multisets, so True proves what the digest comparison proves; False (another order, another
    value, a row more or less) says nothing by itself: the caller then reads back and hashes.
    """
    def part_batches() -> Iterator[pa.RecordBatch]:
        for part in link.parts:
            with _downloaded(store, link, part) as tmp:
                yield from iter_part_batches(tmp, stored, CSV_BATCH_ROWS, what=f"part {part['key']}")

    chunks = _readback_chunks(conn, plan, stored)  # read while comparing
    parts = prefetch(part_batches(), depth=2)
    try:
        same = batches_equal(parts, (readback_batch(d, stored) for d in chunks))
        if not same:
            for _ in chunks:  # the COPY runs to its end: stopping it early would abort the transaction
                pass
        return same
    finally:
        parts.close()
        chunks.close()


def _readback_mysql(conn: psycopg.Connection[Any], plan: TablePlan, stored: list[dict[str, Any]],
                    pool: HashPool | None = None) -> Digest:
    """The ``mysql-row-v1`` digest of the target table, read back with COPY TO and parsed column-wise
    (chunks hashed in ``pool``'s processes when given, a bounded number in flight)."""
    from collections import deque

    total, count = 0, 0
    chunks = _readback_chunks(conn, plan, stored)  # read while hashing
    inflight: deque[Any] = deque()
    try:
        for data in chunks:
            if pool is None:
                s, n = hash_csv_chunk(data, stored)
                total, count = total + s, count + n
                continue
            inflight.append(pool.ex.submit(hash_csv_chunk, data, stored))
            while len(inflight) > 2 * pool.processes:
                s, n = inflight.popleft().result()
                total, count = total + s, count + n
        while inflight:
            s, n = inflight.popleft().result()
            total, count = total + s, count + n
    finally:
        chunks.close()
        for f in inflight:
            f.cancel()
    return Digest(total % (1 << 256), count)


@dataclass
class Compare:
    """A full MySQL snapshot COPYed part by part into an empty table: what its read-back is compared with."""

    store: S3Store
    link: Link
    sent: Any = None  # SHA-256 of the binary COPY stream sent (HEADER + rows), or None: compare with the parts


def _sent_hash(steps: list[Step], plan: TablePlan) -> Any:
    """A hash for the binary rows of the direct COPY, when its read-back can equal them byte for byte.

    Not with a JSONB column: PostgreSQL prints JSON in its own form (key order, spacing).
    """
    if not any(s.kind == "copy" and s.direct and s.binary for s in steps):
        return None
    if any(rsql.pg_type(c.type) == "JSONB" for c in plan.columns):
        return None
    return hashlib.sha256(HEADER)


def _readback_bytes_match(conn: psycopg.Connection[Any], plan: TablePlan, sent: Any) -> bool:
    """Whether the table, read back in binary COPY format in storage order, is byte for byte the stream sent.

    Binary values are each type's own bytes (what the column's receive function read and its send
    function writes), so equal streams mean every row holds the values encoded from the parts, in
    load order (docs/adr/0020). False says nothing by itself: the caller then compares otherwise.
    """
    want = sent.copy()
    want.update(TRAILER)
    got = hashlib.sha256()
    cols = ", ".join(quote_ident(c.name) for c in plan.columns)
    with conn.cursor() as cur, cur.copy(f"COPY {plan.ref} ({cols}) TO STDOUT WITH (FORMAT binary)") as cp:
        while data := cp.read():
            got.update(data)
    return bool(got.digest() == want.digest())


def _compared(conn: psycopg.Connection[Any], plan: TablePlan, stored: list[dict[str, Any]], compare: Compare,
              say: Callable[[str], None]) -> str | None:
    """What proved the table equal to what was loaded (bytes sent, else the parts), or None: hash it."""
    if compare.sent is not None and COMPARE_BYTES:
        if _readback_bytes_match(conn, plan, compare.sent):
            return "bytes compared"
        say("the table did not read back as the bytes sent: comparing it with the parts")
    return "parts compared" if _readback_matches(conn, plan, stored, compare.store, compare.link) else None


def _verify(conn: psycopg.Connection[Any], settings: PgSettings, plan: TablePlan, schema_doc: dict[str, Any],
            table_level: bool, want_rows: int, want_digest: str, say: Callable[[str], None],
            pool: HashPool | None = None, compare: Compare | None = None, counted: int | None = None
            ) -> tuple[int, str | None, str | None]:
    """(rows in the target, read-back digest or None, what verified it), inside the transaction, before COMMIT.

    On the stand-in the target is read back and digested like the source
    (``mysql-row-v1`` / DynamoDB items); Redshift gets the row count only
    (its COPY ran server-side: a digest would mean reading the table back).
    ``compare`` (a full MySQL snapshot COPYed part by part into an empty table): the read-back is
    first compared byte for byte with the binary stream sent (``_readback_bytes_match``), else with
    the parts in load order (``_readback_matches``); only when that fails is it read back again and
    hashed, which decides. ``counted``: the target's COUNT(*) already taken in this transaction.
    """
    what = f"reading back {plan.schema}.{plan.table}"
    try:
        if counted is None:
            row = conn.execute(rsql.count_sql(plan.ref)).fetchone()
            counted = int(row[0]) if row else 0
        rows = counted
        if not table_level or settings.dialect != "postgres":
            return rows, None, None
        say(f"reading back {plan.schema}.{plan.table} to verify")
        verified_by = "table read-back"
        if plan.source_kind == "dynamodb":
            digest = Digest()
            with conn.cursor() as cur:
                for (text,) in cur.stream(f"SELECT CAST({quote_ident(rsql.ITEM_COLUMN)} AS TEXT) FROM {plan.ref}"):
                    digest.add_hash(item_hash(decode_line(b'{"Item":' + text.encode() + b"}")))
        else:
            stored = [c for c in schema_doc["columns"] if not c["generated"]]
            by = _compared(conn, plan, stored, compare, say) if compare is not None and rows == want_rows else None
            if by is not None:
                digest, verified_by = Digest(int(want_digest, 16), want_rows), by
            else:
                if compare is not None:
                    say("the table did not read back as the parts it was loaded from: reading it back to hash it")
                digest = _readback_mysql(conn, plan, stored, pool)
    except psycopg.Error as e:
        raise translate(e, what) from e
    if digest.count != want_rows or digest.hexdigest() != want_digest:
        raise VerificationFailed(
            f"restored table {plan.schema}.{plan.table} has {digest.count} rows with digest "
            f"{digest.hexdigest()[:16]}..., the snapshot says {want_rows} rows, {want_digest[:16]}...; "
            "nothing was committed")
    return rows, digest.hexdigest(), verified_by


__all__ = ["build_steps", "manifest_key", "render", "restore"]
