"""DR drills: snapshot (or take the latest), restore into a scratch target, prove equality, tear down, report.

A playbook of kind ``drill`` names a source node, an S3Repository node and a
scratch target node (``scratch: true``). ``run_drill`` expands it into
activities run by the pipeline runner::

    snapshot | latest_snapshot -> restore -> [after_restore hook] -> check -> teardown (run_on: always)

``check`` proves the restored copy equal to the snapshot: row/item counts and
the content digest of the restored copy re-read from the target, then
``samples`` keys read from the live source and from the copy and compared
type-exactly. A copy that differs fails the drill (exit 5) naming the
differing items; a sampled source item that changed since the snapshot (and
whose copy equals the snapshot) is reported as ``drifted``, not as a failure:
that is the RPO at work. Teardown drops the scratch target whatever happened
(failure, Ctrl-C, SIGTERM). RTO is the restore's wall time; RPO is the drill's
the restore's end minus the snapshot's ``created_at`` (the
age of the restored data when it became usable). The report is written to the
repository as ``drills/<source-key>/<drill-id>.json`` (also on failure).
"""

from __future__ import annotations

import gzip
import random
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from backupctl.aws import AwsContext
from backupctl.errors import NotFound, VerificationFailed
from backupctl.formats.dynamodb_json import decode_line, item_hash
from backupctl.model import isoformat, parse_time, utcnow
from backupctl.pipelines import activities as acts
from backupctl.pipelines.model import Activity, Playbook
from backupctl.pipelines.runner import PipelineResult, run_pipeline
from backupctl.repository import Repository

Hook = Callable[[acts.RunContext], None]
MAX_NAMED = 5


def drill_activities(pb: Playbook, hook: bool) -> dict[str, Activity]:
    """The activities a drill block expands into (in order)."""
    d = pb.drill
    assert d is not None
    out: dict[str, Activity] = {}
    if d.snapshot == "take":
        out["snapshot"] = Activity("snapshot", "Snapshot", {"input": d.source, "output": d.repository,
                                                             "options": d.snapshot_options})
    else:
        out["snapshot"] = Activity("snapshot", "LatestSnapshot", {"input": d.repository, "source": d.source})
    out["restore"] = Activity("restore", "Restore", {"input": d.repository, "output": d.target, "snapshot": "snapshot",
                                                     "options": d.restore_options}, depends_on=["snapshot"])
    prev = "restore"
    if d.after_restore:
        out["after_restore"] = Activity("after_restore", "ShellCommand", {"command": d.after_restore},
                                        depends_on=[prev])
        prev = "after_restore"
    if hook:
        out["hook"] = Activity("hook", "PythonHook", {}, depends_on=[prev])
        prev = "hook"
    out["check"] = Activity("check", "DrillCheck", {}, depends_on=[prev])
    out["teardown"] = Activity("teardown", "DropTarget", {"node": d.target}, depends_on=["check"], run_on="always")
    return out


def _latest(ctx: acts.RunContext, act: Activity) -> dict[str, Any]:
    d = ctx.playbook.drill
    assert d is not None
    found = acts.latest_snapshot(ctx.aws, ctx.node(d.repository), ctx.node(d.source))
    age = (utcnow() - parse_time(found["created_at"])).total_seconds()
    if d.max_age_s is not None and age > d.max_age_s:
        raise NotFound(f"the newest snapshot {found['snapshot_id']} of {ctx.node(d.source).describe()} is "
                       f"{age:,.0f}s old, older than max_age {d.max_age_s:g}s")
    return found


def _parts_items(repo: Repository, prefix: str, parts: list[Any]) -> Iterator[dict[str, Any]]:
    for p in parts:
        with tempfile.TemporaryFile(prefix="backupctl-drill-") as tmp:
            repo.store.download_to(prefix + p.key, tmp)
            with gzip.GzipFile(fileobj=tmp, mode="rb") as gz:
                for line in gz:
                    if line.strip():
                        yield decode_line(line)


def _key_text(key: dict[str, Any]) -> str:
    return ", ".join(f"{k}={next(iter(v.values()))!r}" for k, v in key.items())


def _check_dynamodb(ctx: acts.RunContext, sid: str) -> dict[str, Any]:
    from backupctl.sources.dynamodb import choose_segments, describe_table, table_digest
    from backupctl.targets.dynamodb import key_names

    d = ctx.playbook.drill
    assert d is not None
    src, tgt, rnode = ctx.node(d.source), ctx.node(d.target), ctx.node(d.repository)
    repo = Repository.open(ctx.aws, str(rnode.get("region")), rnode.get("uri"))
    prefix, m = repo.find_snapshot(sid)
    keys = key_names(repo.read_schema(prefix, m))
    treg, ttable = str(tgt.get("region")), str(tgt.get("table"))
    live = table_digest(ctx.aws, treg, ttable, choose_segments(describe_table(ctx.aws, treg, ttable), None, 8), 8)
    problems: list[str] = []
    if live.count != m.rows or live.hexdigest() != m.content_digest:
        problems.append(f"restored copy {ttable} has {live.count:,} items with digest {live.hexdigest()[:16]}..., "
                        f"snapshot {sid} has {m.rows:,}, {m.content_digest[:16]}...")
        problems += _diff_dynamodb(ctx.aws, repo, prefix, m.parts, keys, treg, ttable)
    # Samples: keys drawn from the snapshot (seeded by the drill id), read live from the source and the copy.
    rng = random.Random(ctx.playbook.run_id)
    sample: list[dict[str, Any]] = []
    for i, item in enumerate(_parts_items(repo, prefix, m.parts)):
        if len(sample) < d.samples:
            sample.append(item)
        elif (j := rng.randrange(i + 1)) < d.samples:
            sample[j] = item
    sdb, tdb = ctx.aws.client("dynamodb", str(src.get("region"))), ctx.aws.client("dynamodb", treg)
    drifted: list[str] = []
    for item in sample:
        key = {k: item[k] for k in keys}
        s_item = sdb.get_item(TableName=src.get("table"), Key=key, ConsistentRead=True).get("Item")
        t_item = tdb.get_item(TableName=ttable, Key=key, ConsistentRead=True).get("Item")
        if t_item != item:
            problems.append(f"sampled item {_key_text(key)}: the restored copy "
                            + ("lacks it" if t_item is None else "differs from the snapshot"))
        elif s_item != t_item:
            drifted.append(_key_text(key))
    return {"snapshot_id": sid, "rows": {"snapshot": m.rows, "restored": live.count},
            "digest": {"snapshot": m.content_digest, "restored": live.hexdigest()},
            "samples": {"checked": len(sample), "drifted": drifted}, "problems": problems}


def _diff_dynamodb(aws: AwsContext, repo: Repository, prefix: str, parts: list[Any], keys: list[str],
                   region: str, table: str) -> list[str]:
    """Name up to MAX_NAMED items that differ between a snapshot and a table (missing, extra, changed)."""
    want: dict[str, int] = {}
    for item in _parts_items(repo, prefix, parts):
        want[_key_text({k: item[k] for k in keys})] = item_hash(item)
    ddb = aws.client("dynamodb", region)
    kw: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    named: list[str] = []
    while True:
        r = ddb.scan(**kw)
        for item in r["Items"]:
            k = _key_text({n: item[n] for n in keys})
            h = want.pop(k, None)
            if h is None:
                named.append(f"item {k} is in the restored copy but not in the snapshot")
            elif h != item_hash(item):
                named.append(f"item {k} differs from the snapshot")
        if "LastEvaluatedKey" not in r:
            break
        kw["ExclusiveStartKey"] = r["LastEvaluatedKey"]
    named += [f"item {k} is missing from the restored copy" for k in want]
    return named[:MAX_NAMED] + ([f"... and {len(named) - MAX_NAMED} more"] if len(named) > MAX_NAMED else [])


def _check_mysql(ctx: acts.RunContext, sid: str) -> dict[str, Any]:
    from backupctl.mysql_conn import quote_ident, run_sql, settings_from_uri
    from backupctl.sources.mysql import table_digest

    d = ctx.playbook.drill
    assert d is not None
    src, tgt, rnode = ctx.node(d.source), ctx.node(d.target), ctx.node(d.repository)
    repo = Repository.open(ctx.aws, str(rnode.get("region")), rnode.get("uri"))
    prefix, m = repo.find_snapshot(sid)
    doc = repo.store.get_json(prefix + "manifest.json")
    td = doc.get("table_digest") or {"rows": m.rows, "value": m.content_digest}
    problems: list[str] = []
    restored_rows, restored_digest = None, None
    samples: dict[str, Any] = {"checked": 0, "drifted": []}
    if tgt.type == "RedshiftTable":
        out = ctx.outputs.get("restore") or {}
        restored_rows, restored_digest = out.get("table_rows", out.get("rows")), out.get("digest")
        samples["note"] = "sampling a Redshift copy is not available yet; the restore's read-back digest is used"
    else:
        schema = repo.read_schema(prefix, m)
        stored = [c for c in schema["columns"] if not c["generated"]]
        pk = list(schema.get("primary_key") or [])
        s_set = settings_from_uri(str(src.get("uri")), src.get("password_file"), "uri")
        t_set = settings_from_uri(str(tgt.get("uri")), tgt.get("password_file"), "uri")
        live = table_digest(t_set, t_set.database, str(tgt.get("table")), stored)
        restored_rows, restored_digest = live.count, live.hexdigest()
        if pk and d.samples:
            cols = ", ".join(quote_ident(c["name"]) for c in stored)
            where = " AND ".join(f"{quote_ident(k)} = %s" for k in pk)
            pos = [next(i for i, c in enumerate(stored) if c["name"] == k) for k in pk]
            tref = f"{quote_ident(t_set.database)}.{quote_ident(str(tgt.get('table')))}"
            sref = f"{quote_ident(s_set.database)}.{quote_ident(str(src.get('table')))}"
            tconn, sconn = t_set.connect(), s_set.connect()
            try:
                rows = run_sql(tconn, f"SELECT {cols} FROM {tref} ORDER BY RAND() LIMIT %s", (d.samples,),
                               "sampling the restored copy")
                for row in rows:
                    key = [row[i] for i in pos]
                    got = run_sql(sconn, f"SELECT {cols} FROM {sref} WHERE {where}", key, "reading the source")
                    if not got or tuple(got[0]) != tuple(row) or [type(v) for v in got[0]] != [type(v) for v in row]:
                        samples["drifted"].append(", ".join(f"{k}={v!r}" for k, v in zip(pk, key, strict=True)))
                samples["checked"] = len(rows)
            finally:
                tconn.close()
                sconn.close()
    if restored_rows != int(td["rows"]) or (restored_digest is not None and restored_digest != td["value"]):
        problems.append(f"restored copy has {restored_rows} rows with digest {str(restored_digest)[:16]}..., "
                        f"snapshot {sid} has {td['rows']}, {str(td['value'])[:16]}...")
    return {"snapshot_id": sid, "rows": {"snapshot": int(td["rows"]), "restored": restored_rows},
            "digest": {"snapshot": td["value"], "restored": restored_digest}, "samples": samples,
            "problems": problems}


def _check(ctx: acts.RunContext, act: Activity) -> dict[str, Any]:
    sid = str((ctx.outputs.get("snapshot") or {})["snapshot_id"])
    src = ctx.node(ctx.playbook.drill.source if ctx.playbook.drill else "")
    out = _check_dynamodb(ctx, sid) if src.type == "DynamoDBTable" else _check_mysql(ctx, sid)
    ctx.outputs["check"] = out  # kept for the report even when the check fails
    if out["problems"]:
        raise VerificationFailed("the restored copy differs: " + "; ".join(out["problems"]))
    return out


def run_drill(aws: AwsContext, pb: Playbook, say: Callable[[str], None] | None = None,
              progress_factory: Callable[[str, int | None], Any] | None = None,
              after_restore: Hook | None = None) -> dict[str, Any]:
    """Run a drill playbook; returns the drill report (``passed`` False on failure) after recording it.

    ``after_restore`` is called between the restore and the check (a test hook:
    e.g. alter one restored item to prove the drill fails). Never raises for a
    failed step; the report's ``exit_code`` says how it ended.
    """
    assert pb.drill is not None
    say = say or (lambda _m: None)
    d = pb.drill
    pb.activities = drill_activities(pb, after_restore is not None)
    ctx = acts.RunContext(aws=aws, playbook=pb, say=say, progress_factory=progress_factory)
    started = utcnow()

    def hook(c: acts.RunContext, _a: Activity) -> dict[str, Any]:
        assert after_restore is not None
        after_restore(c)
        return {}

    def restore(c: acts.RunContext, a: Activity) -> dict[str, Any]:
        out = acts.restore(c, a)
        out["restored_at"] = isoformat(utcnow())  # the RPO is the age of the data at this moment
        return out

    result = run_pipeline(aws, pb, say, progress_factory, ctx=ctx,
                          runners={"LatestSnapshot": _latest, "DrillCheck": _check, "PythonHook": hook,
                                   "Restore": restore})
    report = drill_report(pb, result, ctx, started)
    try:
        rnode = pb.nodes[d.repository]
        repo = Repository.open(aws, str(rnode.get("region")), rnode.get("uri"), create=True)
        key = f"drills/{report['source_key']}/{report['drill_id']}.json"
        repo.store.put_json(key, report)
        report["report_uri"] = repo.store.url(key)
    except Exception as e:  # noqa: BLE001 - a drill that cannot record its report still reports on the terminal
        say(f"[yellow]warning:[/yellow] could not record the drill report: {e}")
        report["report_uri"] = None
    return report


def drill_report(pb: Playbook, result: PipelineResult, ctx: acts.RunContext, started: datetime) -> dict[str, Any]:
    d = pb.drill
    assert d is not None
    snap = ctx.outputs.get("snapshot") or {}
    restore = result.get("restore")
    teardown = result.get("teardown")
    rpo = None
    restored_at = (ctx.outputs.get("restore") or {}).get("restored_at")
    if snap.get("created_at") and restored_at:
        rpo = round((parse_time(str(restored_at)) - parse_time(str(snap["created_at"]))).total_seconds(), 3)
    check = ctx.outputs.get("check") or {}
    first = result.first_failure()
    return {
        "drill_id": pb.run_id,
        "playbook": pb.path,
        "name": pb.name,
        "passed": result.status == "succeeded",
        "status": result.status,
        "exit_code": result.exit_code,
        "started_at": isoformat(started),
        "finished_at": isoformat(utcnow()),
        "source": ctx.node(d.source).describe(),
        "source_key": acts._source_key(ctx.node(d.source)),
        "target": ctx.node(d.target).describe(),
        "snapshot": {"mode": d.snapshot, "snapshot_id": snap.get("snapshot_id"), "created_at": snap.get("created_at")},
        "rto_s": round(restore.duration_s, 3) if restore and restore.status == "succeeded" else None,
        "rpo_s": rpo,
        "rows": check.get("rows"),
        "digest": check.get("digest"),
        "samples": check.get("samples"),
        "problems": check.get("problems") or ([first.error] if first is not None else []),
        "teardown": teardown.status if teardown else None,
        "activities": [a.to_json() for a in result.activities],
    }

