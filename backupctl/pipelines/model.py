"""The playbook model (PADS: data nodes, activities, preconditions, schedules) and its validation.

A playbook is YAML (``playbooks/*.yaml``). ``load_playbook`` composes it with
PyYAML's safe loader (no arbitrary tags: only the YAML core types), keeps the
line of every key, substitutes ``${variables}``, and checks everything that
can be checked without touching a server: required and unknown keys, node and
activity types, references between them (``input``, ``output``,
``depends_on``, ``preconditions``), cycles, durations, the schedule and the
drill and runbook blocks. Every problem is one line ``FILE:LINE key.path: problem``; all
of them are collected and raised together as ``PlaybookInvalid`` (exit 2).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backupctl.errors import InvalidInput
from backupctl.model import utcnow
from backupctl.pipelines.schedule import Schedule, check_schedule

KINDS = ("pipeline", "drill", "runbook")
TOP_KEYS = ("version", "kind", "name", "description", "variables", "schedule", "nodes", "preconditions",
            "activities", "drill", "runbook")

# Node types: required keys, optional keys. Every node may also carry `preconditions`, `scratch`, `description`.
NODE_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "DynamoDBTable": (("region", "table"), ()),
    "MySQLTable": (("uri", "table", "region"), ("password_file",)),
    "RedshiftTable": (("uri", "table", "region"), ("password_file", "iam_role")),
    "S3Repository": (("region",), ("uri",)),
}
NODE_COMMON = ("type", "preconditions", "scratch", "description")
TABLE_NODES = ("DynamoDBTable", "MySQLTable", "RedshiftTable")

# Precondition types: required and optional keys (plus the common ones below).
PRECONDITION_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "DynamoDBTableExists": (("node",), ()),
    "DynamoDBDataExists": (("node",), ()),
    "S3KeyExists": (("node", "key"), ()),
    "S3PrefixNotEmpty": (("node", "prefix"), ()),
    "ShellCommandPrecondition": (("command",), ("env",)),
    # The repository holds a committed snapshot of `source` (in a runbook: the one `runbook run` selected).
    "SnapshotExists": (("node", "source"), ()),
}
PRECONDITION_COMMON = ("type", "timeout", "retries", "description")
# What node type a precondition's `node` must name.
PRECONDITION_NODE = {"DynamoDBTableExists": ("DynamoDBTable",), "DynamoDBDataExists": ("DynamoDBTable",),
                     "S3KeyExists": ("S3Repository",), "S3PrefixNotEmpty": ("S3Repository",),
                     "SnapshotExists": ("S3Repository",)}
SNAPSHOT_SOURCES = ("DynamoDBTable", "MySQLTable")  # nodes that have snapshots

# Activity types: required keys, optional keys, and which node types each reference key accepts.
ACTIVITY_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Snapshot": (("input", "output"), ("options",)),
    "Restore": (("input", "output", "snapshot"), ("source", "options")),
    "Verify": (("input", "snapshot"), ("source", "against")),
    "ShellCommand": (("command",), ("env",)),
    "DropTarget": (("node",), ()),
    "AwsCli": (("command",), ("region", "env")),
    "EmrStep": (("step",), ("cluster", "region")),
    "Sql": (("node", "sql"), ()),
}
NOT_AVAILABLE: tuple[str, ...] = ()
ACTIVITY_COMMON = ("type", "depends_on", "retries", "retry_delay", "timeout", "on_fail", "run_on",
                   "preconditions", "description", "confirm")
ACTIVITY_REFS: dict[str, dict[str, tuple[str, ...]]] = {
    "Snapshot": {"input": ("DynamoDBTable", "MySQLTable"), "output": ("S3Repository",)},
    "Restore": {"input": ("S3Repository",), "output": TABLE_NODES, "source": ("DynamoDBTable", "MySQLTable")},
    "Verify": {"input": ("S3Repository",), "against": ("DynamoDBTable", "MySQLTable"),
               "source": ("DynamoDBTable", "MySQLTable")},
    "DropTarget": {"node": TABLE_NODES},
    "Sql": {"node": ("MySQLTable", "RedshiftTable")},
}
ON_FAIL = ("fail", "continue")
RUN_ON = ("success", "always")

DRILL_KEYS = ("source", "repository", "target", "snapshot", "max_age", "samples", "snapshot_options",
              "restore_options", "after_restore")
DRILL_TARGETS = {"DynamoDBTable": ("DynamoDBTable",), "MySQLTable": ("MySQLTable", "RedshiftTable")}
RUNBOOK_KEYS = ("source", "repository")
SELECTED = "selected"  # `snapshot: selected`: the snapshot `runbook run` chose (--at TIME|ID, default the latest)

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
BUILTIN_VARIABLES = ("run_id", "scratch_suffix", "playbook")


class PlaybookInvalid(InvalidInput):
    """One or more validation problems; the message has one ``FILE:LINE key.path: problem`` per line."""

    def __init__(self, issues: list[str]) -> None:
        super().__init__("\n".join(issues))
        self.issues = issues


def parse_duration(value: Any) -> float:
    """``30s`` / ``5m`` / ``2h`` / ``1d`` / ``250ms`` or a number of seconds -> seconds (ValueError if bad)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        m = _DURATION_RE.match(str(value))
        if not m:
            raise ValueError(f"invalid duration {value!r}: expected e.g. 30s, 5m, 2h, 1d")
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be positive")
    return seconds


def new_run_id() -> str:
    """A run id usable in table and database names: ``r20261127t013000-1a2b3c`` (lower case, sorts by time)."""
    return "r" + utcnow().strftime("%Y%m%dt%H%M%S") + "-" + secrets.token_hex(3)


# -- YAML with line numbers -------------------------------------------------------

Path_ = tuple[str | int, ...]


def key_path(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out or "(top)"


MAX_VALUES = 100_000  # values in a playbook once its aliases are expanded


class _Composer:
    """Turn a composed YAML node tree into plain data, recording each path's line (1-based)."""

    _SCALAR_TAGS = {"tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp")}

    def __init__(self, loader: yaml.SafeLoader, file: str) -> None:
        self.loader = loader
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.issues: list[str] = []
        self.values = 0

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:  # aliases of aliases expand exponentially ("billion laughs")
            raise PlaybookInvalid([f"{self.file}:{node.start_mark.line + 1} {key_path(path)}: the playbook expands "
                                   f"to more than {MAX_VALUES:,} values (aliases of aliases?)"])
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                self.issues.append(f"{self.file}:{node.start_mark.line + 1} {key_path(path)}: tag {node.tag} is not allowed")
                return {}
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode) or knode.tag == "tag:yaml.org,2002:merge":
                    self.issues.append(f"{self.file}:{knode.start_mark.line + 1} {key_path(path)}: "
                                       "only plain keys are allowed (no merge keys or complex keys)")
                    continue
                k = str(knode.value)
                if k in out:
                    self.issues.append(f"{self.file}:{knode.start_mark.line + 1} {key_path(path + (k,))}: duplicate key")
                    continue
                self.lines[path + (k,)] = knode.start_mark.line + 1
                out[k] = self.build(vnode, path + (k,))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                self.issues.append(f"{self.file}:{node.start_mark.line + 1} {key_path(path)}: tag {node.tag} is not allowed")
                return []
            return [self.build(v, path + (i,)) for i, v in enumerate(node.value)]
        if node.tag not in self._SCALAR_TAGS:
            self.issues.append(f"{self.file}:{node.start_mark.line + 1} {key_path(path)}: tag {node.tag} is not allowed")
            return None
        return self.loader.construct_object(node, deep=True)


def compose(text: str, file: str) -> tuple[Any, dict[Path_, int]]:
    """Parse YAML safely into (data, {path: line}); raises PlaybookInvalid on syntax errors or bad tags."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise PlaybookInvalid([f"{file}:1 (top): the playbook is empty"])
        c = _Composer(loader, file)
        data = c.build(node, ())
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise PlaybookInvalid([f"{file}:{line} (yaml): {e.problem or e.context}"]) from None
    finally:
        loader.dispose()
    if c.issues:
        raise PlaybookInvalid(c.issues)
    return data, c.lines


# -- the model ----------------------------------------------------------------------


@dataclass
class Node:
    name: str
    type: str
    fields: dict[str, Any]
    preconditions: list[str] = field(default_factory=list)
    scratch: bool = False

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def describe(self) -> str:
        if self.type == "S3Repository":
            return f"{self.get('uri') or 'default repository'} ({self.get('region')})"
        return f"{self.type} {self.get('table')} ({self.get('region')})"


@dataclass
class Precondition:
    name: str
    type: str
    fields: dict[str, Any]
    timeout_s: float = 60.0
    retries: int | None = None  # None: poll until the timeout

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass
class Activity:
    name: str
    type: str
    fields: dict[str, Any]
    depends_on: list[str] = field(default_factory=list)
    retries: int = 0
    retry_delay_s: float = 1.0
    timeout_s: float | None = None
    on_fail: str = "fail"
    run_on: str = "success"
    preconditions: list[str] = field(default_factory=list)
    confirm: bool = False  # runbooks: ask the person before this step even when it is not destructive

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)


@dataclass
class DrillSpec:
    source: str
    repository: str
    target: str
    snapshot: str = "take"  # take | latest
    max_age_s: float | None = None
    samples: int = 20
    snapshot_options: dict[str, Any] = field(default_factory=dict)
    restore_options: dict[str, Any] = field(default_factory=dict)
    after_restore: str | None = None  # a shell command run between restore and check (a test hook)


@dataclass
class RunbookSpec:
    source: str  # the node whose snapshots `runbook run --at` chooses among
    repository: str  # the S3Repository node holding them


@dataclass
class Playbook:
    path: str
    name: str
    kind: str
    description: str
    variables: dict[str, str]
    nodes: dict[str, Node]
    preconditions: dict[str, Precondition]
    activities: dict[str, Activity]
    schedule: Schedule | None
    drill: DrillSpec | None
    run_id: str
    lines: dict[Path_, int] = field(default_factory=dict, repr=False)
    runbook: RunbookSpec | None = None

    def order(self) -> list[str]:
        """Activities in dependency order (declaration order among the ready ones)."""
        return topo_order({n: a.depends_on for n, a in self.activities.items()})

    def line(self, *path: str | int) -> int:
        return self.lines.get(tuple(path), 1)

    def unavailable(self) -> list[str]:
        return [n for n, a in self.activities.items() if a.type in NOT_AVAILABLE]


def topo_order(deps: dict[str, list[str]]) -> list[str]:
    """Kahn's algorithm, stable in declaration order. Raises ValueError('a -> b -> a') on a cycle."""
    done: list[str] = []
    placed: set[str] = set()
    remaining = list(deps)
    while remaining:
        ready = [n for n in remaining if all(d in placed for d in deps[n])]
        if not ready:
            raise ValueError(" -> ".join(find_cycle(deps, remaining)))
        n = ready[0]
        done.append(n)
        placed.add(n)
        remaining.remove(n)
    return done


def find_cycle(deps: dict[str, list[str]], among: list[str]) -> list[str]:
    """One cycle among ``among`` (which has no ready node), as a path that starts and ends at the same node."""
    path: list[str] = [among[0]]
    while True:
        nxt = next(d for d in deps[path[-1]] if d in among)
        if nxt in path:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)


# -- loading and validation ----------------------------------------------------------


class _Checker:
    def __init__(self, file: str, lines: dict[Path_, int]) -> None:
        self.file = file
        self.lines = lines
        self.issues: list[tuple[int, str]] = []

    def line(self, path: Path_) -> int:
        p = tuple(path)
        while p and p not in self.lines:
            p = p[:-1]
        return self.lines.get(p, 1)

    def add(self, path: Path_, problem: str) -> None:
        self.issues.append((self.line(path), f"{self.file}:{self.line(path)} {key_path(path)}: {problem}"))

    def mapping(self, value: Any, path: Path_) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(path, f"must be a mapping, not {type(value).__name__}")
            return {}
        return value

    def keys(self, raw: dict[str, Any], path: Path_, required: tuple[str, ...], allowed: tuple[str, ...]) -> None:
        for k in required:
            if k not in raw or raw[k] is None:
                self.add(path, f"missing required key '{k}'")
        for k in raw:
            if k not in required and k not in allowed:
                self.add(path + (k,), f"unknown key '{k}' (expected one of {', '.join(sorted(set(required + allowed)))})")

    def name_list(self, value: Any, path: Path_) -> list[str]:
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(path, "must be a name or a list of names")
            return []
        return list(value)

    def duration(self, raw: dict[str, Any], key: str, path: Path_, default: float | None) -> float | None:
        if raw.get(key) is None:
            return default
        try:
            return parse_duration(raw[key])
        except ValueError as e:
            self.add(path + (key,), str(e))
            return default

    def count(self, raw: dict[str, Any], key: str, path: Path_, default: int | None, hi: int = 100) -> int | None:
        v = raw.get(key, default)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
            self.add(path + (key,), f"must be an integer between 0 and {hi}")
            return default
        return int(v)


def _substitute(data: Any, values: dict[str, str], path: Path_, ck: _Checker) -> Any:
    if isinstance(data, dict):
        return {k: _substitute(v, values, path + (k,), ck) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, values, path + (i,), ck) for i, v in enumerate(data)]
    if not isinstance(data, str):
        return data

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        if name not in values:
            ck.add(path, f"unknown variable '${{{name}}}' (define it under variables:)")
            return m.group(0)
        return values[name]

    return _VAR_RE.sub(one, data)


def load_playbook(path: str | Path, overrides: dict[str, str] | None = None, run_id: str | None = None) -> Playbook:
    """Read, validate and return a playbook. Raises PlaybookInvalid (exit 2) listing every problem.

    ``overrides`` replace ``variables:`` values (``--var k=v``); ``run_id``
    fixes the built-in ``${run_id}`` (default: a new one).
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise InvalidInput(f"cannot read playbook {file}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InvalidInput(f"cannot read playbook {file}: not UTF-8 text (byte {e.start})") from None
    return parse_playbook(text, file, overrides, run_id)


def parse_playbook(text: str, file: str = "<playbook>", overrides: dict[str, str] | None = None,
                   run_id: str | None = None) -> Playbook:
    """``load_playbook`` from text (the unit of the table-driven tests)."""
    data, lines = compose(text, file)
    ck = _Checker(file, lines)
    top = ck.mapping(data, ())
    ck.keys(top, (), ("name",), tuple(k for k in TOP_KEYS if k != "name"))
    if "name" in top:  # it names schedules, drill and runbook records: a path segment, a key
        _check_name(ck, ("name",), str(top["name"]))
    if top.get("version", 1) != 1:
        ck.add(("version",), f"unsupported version {top.get('version')!r} (this backupctl reads version 1)")
    kind = top.get("kind", "pipeline")
    if kind not in KINDS:
        ck.add(("kind",), f"invalid kind {kind!r}: expected pipeline, drill or runbook")

    # Variables: built-ins, then the playbook's (which may use built-ins), then --var overrides.
    rid = run_id or new_run_id()
    values = {"run_id": rid, "scratch_suffix": rid.rsplit("-", 1)[-1], "playbook": str(top.get("name", ""))}
    for k, v in ck.mapping(top.get("variables"), ("variables",)).items():
        if k in BUILTIN_VARIABLES:
            ck.add(("variables", k), f"'{k}' is built in and cannot be redefined")
        elif not isinstance(v, str | int | float) or isinstance(v, bool):
            ck.add(("variables", k), "must be a string or a number")
        else:
            values[k] = _substitute(str(v), values, ("variables", k), ck)
    for k, v in (overrides or {}).items():
        if k in BUILTIN_VARIABLES:
            raise InvalidInput(f"--var {k}: '{k}' is built in and cannot be redefined")
        values[k] = v
    top = _substitute({k: v for k, v in top.items() if k != "variables"}, values, (), ck)

    nodes = _check_nodes(top, ck)
    pres = _check_preconditions(top, ck, nodes)
    for n in nodes.values():
        for i, p in enumerate(n.preconditions):
            if p not in pres:
                ck.add(("nodes", n.name, "preconditions", i), f"unknown precondition '{p}'")
    acts = _check_activities(top, ck, nodes, pres, kind)
    schedule = None
    if "schedule" in top:
        schedule, problems = check_schedule(top["schedule"])
        for sub, problem in problems:
            ck.add(("schedule", sub) if sub else ("schedule",), problem)
    drill = _check_drill(top, ck, nodes, kind)
    runbook = _check_runbook(top, ck, nodes, acts, kind)
    if ck.issues:
        raise PlaybookInvalid([msg for _, msg in sorted(ck.issues, key=lambda t: t[0])])
    return Playbook(path=file, name=str(top["name"]), kind=str(kind), description=str(top.get("description") or ""),
                    variables={k: v for k, v in values.items()}, nodes=nodes, preconditions=pres,
                    activities=acts, schedule=schedule, drill=drill, run_id=rid, lines=lines, runbook=runbook)


def _check_name(ck: _Checker, path: Path_, name: str) -> None:
    if not _NAME_RE.match(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        ck.add(path, f"invalid name '{shown}': letters, digits, '_' and '-', starting with a letter")


def _check_nodes(top: dict[str, Any], ck: _Checker) -> dict[str, Node]:
    nodes: dict[str, Node] = {}
    for name, raw in ck.mapping(top.get("nodes"), ("nodes",)).items():
        path: Path_ = ("nodes", name)
        _check_name(ck, path, name)
        raw = ck.mapping(raw, path)
        t = raw.get("type")
        if t not in NODE_TYPES:
            ck.add(path + ("type",) if "type" in raw else path,
                   f"unknown node type {t!r} (expected one of {', '.join(NODE_TYPES)})")
            continue
        req, opt = NODE_TYPES[t]
        ck.keys(raw, path, req, opt + NODE_COMMON)
        if "scratch" in raw and not isinstance(raw["scratch"], bool):
            ck.add(path + ("scratch",), "must be true or false")
        if t == "S3Repository" and raw.get("uri") is not None and not str(raw["uri"]).startswith("s3://"):
            ck.add(path + ("uri",), f"invalid repository uri {raw['uri']!r}: expected s3://BUCKET[/PREFIX]")
        if t == "MySQLTable" and raw.get("uri") is not None and not str(raw["uri"]).startswith("mysql://"):
            ck.add(path + ("uri",), f"invalid uri {raw['uri']!r}: expected mysql://USER@HOST:PORT/DB")
        if t == "RedshiftTable" and raw.get("uri") is not None and not str(raw["uri"]).startswith(
                ("redshift://", "postgres://", "postgresql://")):
            ck.add(path + ("uri",), f"invalid uri {raw['uri']!r}: expected redshift:// or postgres://USER@HOST:PORT/DB")
        fields = {k: v for k, v in raw.items() if k not in NODE_COMMON}
        nodes[name] = Node(name, t, fields, ck.name_list(raw.get("preconditions"), path + ("preconditions",)),
                           bool(raw.get("scratch", False)))
    return nodes


def _ref(ck: _Checker, path: Path_, value: Any, nodes: dict[str, Node], allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str):
        ck.add(path, "must name a node")
    elif value not in nodes:
        ck.add(path, f"unknown node '{value}'")
    elif nodes[value].type not in allowed:
        ck.add(path, f"node '{value}' is a {nodes[value].type}; expected {' or '.join(allowed)}")


def _check_preconditions(top: dict[str, Any], ck: _Checker, nodes: dict[str, Node]) -> dict[str, Precondition]:
    out: dict[str, Precondition] = {}
    for name, raw in ck.mapping(top.get("preconditions"), ("preconditions",)).items():
        path: Path_ = ("preconditions", name)
        _check_name(ck, path, name)
        raw = ck.mapping(raw, path)
        t = raw.get("type")
        if t not in PRECONDITION_TYPES:
            ck.add(path + ("type",) if "type" in raw else path,
                   f"unknown precondition type {t!r} (expected one of {', '.join(PRECONDITION_TYPES)})")
            continue
        req, opt = PRECONDITION_TYPES[t]
        ck.keys(raw, path, req, opt + PRECONDITION_COMMON)
        if t in PRECONDITION_NODE and "node" in raw:
            _ref(ck, path + ("node",), raw["node"], nodes, PRECONDITION_NODE[t])
        if t == "SnapshotExists" and raw.get("source") is not None:
            _ref(ck, path + ("source",), raw["source"], nodes, SNAPSHOT_SOURCES)
        timeout = ck.duration(raw, "timeout", path, 60.0)
        retries = ck.count(raw, "retries", path, None, hi=10_000)
        out[name] = Precondition(name, t, {k: v for k, v in raw.items() if k not in PRECONDITION_COMMON},
                                 float(timeout or 60.0), retries)
    return out


def _check_activities(top: dict[str, Any], ck: _Checker, nodes: dict[str, Node],
                      pres: dict[str, Precondition], kind: Any = "pipeline") -> dict[str, Activity]:
    raw_acts = ck.mapping(top.get("activities"), ("activities",))
    out: dict[str, Activity] = {}
    for name, raw in raw_acts.items():
        path: Path_ = ("activities", name)
        _check_name(ck, path, name)
        raw = ck.mapping(raw, path)
        t = raw.get("type")
        if t not in ACTIVITY_TYPES:
            ck.add(path + ("type",) if "type" in raw else path,
                   f"unknown activity type {t!r} (expected one of {', '.join(ACTIVITY_TYPES)})")
            continue
        req, opt = ACTIVITY_TYPES[t]
        ck.keys(raw, path, req, opt + ACTIVITY_COMMON)
        for key, allowed in ACTIVITY_REFS.get(t, {}).items():
            if raw.get(key) is not None:
                _ref(ck, path + (key,), raw[key], nodes, allowed)
        if t == "DropTarget" and isinstance(raw.get("node"), str) and raw["node"] in nodes \
                and not nodes[raw["node"]].scratch:
            ck.add(path + ("node",), f"node '{raw['node']}' is not marked scratch: true; DropTarget drops scratch "
                                     "targets only")
        if t in ("ShellCommand", "AwsCli") and raw.get("command") is not None and not isinstance(raw["command"], str):
            ck.add(path + ("command",), "must be a string (run with sh -c)")
        if "options" in raw:
            ck.mapping(raw["options"], path + ("options",))
            if kind == "runbook" and isinstance(raw["options"], dict) and "yes" in raw["options"]:
                ck.add(path + ("options", "yes"), "a runbook asks before destructive steps; to skip the "
                                                  "questions pass --yes to `runbook run`")
        if "confirm" in raw:
            if not isinstance(raw["confirm"], bool):
                ck.add(path + ("confirm",), "must be true or false")
            elif kind != "runbook":
                ck.add(path + ("confirm",), "confirm applies to runbooks (kind: runbook), which ask a person; "
                                            "pipelines and drills run unattended")
        deps = ck.name_list(raw.get("depends_on"), path + ("depends_on",))
        for i, d in enumerate(deps):
            if d not in raw_acts:
                ck.add(path + ("depends_on", i) if isinstance(raw.get("depends_on"), list) else path + ("depends_on",),
                       f"unknown activity '{d}'")
        snap = raw.get("snapshot")
        if t in ("Restore", "Verify") and isinstance(snap, str):
            if snap in raw_acts:
                if (raw_acts[snap] or {}).get("type") != "Snapshot":
                    ck.add(path + ("snapshot",), f"activity '{snap}' is not a Snapshot")
                elif snap not in deps:
                    deps.append(snap)  # taking the snapshot's id implies running after it
            elif snap == "latest":
                if raw.get("source") is None:
                    ck.add(path, "snapshot: latest needs 'source' (the node whose newest snapshot to use)")
            elif snap == SELECTED:
                if kind != "runbook":
                    ck.add(path + ("snapshot",), "snapshot: selected is the snapshot `runbook run` chooses "
                                                 "(--at); it needs kind: runbook")
            elif not re.match(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$", snap):
                ck.add(path + ("snapshot",), f"'{snap}' is not an activity, 'latest' or a snapshot id")
        for key, allowed_vals in (("on_fail", ON_FAIL), ("run_on", RUN_ON)):
            if key in raw and raw[key] not in allowed_vals:
                ck.add(path + (key,), f"invalid {key} {raw[key]!r}: expected {' or '.join(allowed_vals)}")
        plist = ck.name_list(raw.get("preconditions"), path + ("preconditions",))
        for i, p in enumerate(plist):
            if p not in pres:
                ck.add(path + ("preconditions", i), f"unknown precondition '{p}'")
        out[name] = Activity(
            name, t, {k: v for k, v in raw.items() if k not in ACTIVITY_COMMON}, deps,
            retries=ck.count(raw, "retries", path, 0) or 0,
            retry_delay_s=float(ck.duration(raw, "retry_delay", path, 1.0) or 1.0),
            timeout_s=ck.duration(raw, "timeout", path, None),
            on_fail=str(raw.get("on_fail", "fail")), run_on=str(raw.get("run_on", "success")), preconditions=plist,
            confirm=raw.get("confirm") is True,
        )
    try:
        topo_order({n: [d for d in a.depends_on if d in out] for n, a in out.items()})
    except ValueError as e:
        first = str(e).split(" -> ")[0]
        ck.add(("activities", first, "depends_on"), f"dependency cycle {e}")
    return out


def _check_drill(top: dict[str, Any], ck: _Checker, nodes: dict[str, Node], kind: Any) -> DrillSpec | None:
    if "drill" not in top:
        if kind == "drill":
            ck.add((), "a playbook of kind drill needs a 'drill:' block")
        return None
    path: Path_ = ("drill",)
    raw = ck.mapping(top["drill"], path)
    ck.keys(raw, path, ("source", "repository", "target"), tuple(k for k in DRILL_KEYS if k not in
                                                                 ("source", "repository", "target")))
    if top.get("activities"):
        ck.add(("activities",), "a drill generates its activities; use a playbook of kind pipeline for your own")
    _ref(ck, path + ("source",), raw.get("source"), nodes, tuple(DRILL_TARGETS))
    _ref(ck, path + ("repository",), raw.get("repository"), nodes, ("S3Repository",))
    src = nodes.get(str(raw.get("source")))
    if src is not None and src.type in DRILL_TARGETS:
        _ref(ck, path + ("target",), raw.get("target"), nodes, DRILL_TARGETS[src.type])
        tgt = nodes.get(str(raw.get("target")))
        if tgt is not None and not tgt.scratch:
            ck.add(path + ("target",), f"node '{tgt.name}' must be marked scratch: true (the drill drops it)")
    snap = raw.get("snapshot", "take")
    if snap not in ("take", "latest"):
        ck.add(path + ("snapshot",), f"invalid snapshot {snap!r}: expected take or latest")
    max_age = ck.duration(raw, "max_age", path, None)
    samples = ck.count(raw, "samples", path, 20, hi=10_000)
    for k in ("snapshot_options", "restore_options"):
        ck.mapping(raw.get(k), path + (k,))
    if raw.get("after_restore") is not None and not isinstance(raw["after_restore"], str):
        ck.add(path + ("after_restore",), "must be a shell command (a string)")
    return DrillSpec(source=str(raw.get("source")), repository=str(raw.get("repository")),
                     target=str(raw.get("target")), snapshot=str(snap), max_age_s=max_age,
                     samples=int(samples if samples is not None else 20),
                     snapshot_options=dict(raw.get("snapshot_options") or {}),
                     restore_options=dict(raw.get("restore_options") or {}),
                     after_restore=raw.get("after_restore"))


def _check_runbook(top: dict[str, Any], ck: _Checker, nodes: dict[str, Node], acts: dict[str, Activity],
                   kind: Any) -> RunbookSpec | None:
    if "runbook" not in top:
        if kind == "runbook":
            ck.add((), "a playbook of kind runbook needs a 'runbook:' block (source and repository)")
        return None
    path: Path_ = ("runbook",)
    if kind != "runbook":
        ck.add(path, "a runbook: block needs kind: runbook")
        return None
    raw = ck.mapping(top["runbook"], path)
    ck.keys(raw, path, RUNBOOK_KEYS, ())
    for key, allowed in (("source", SNAPSHOT_SOURCES), ("repository", ("S3Repository",))):
        if raw.get(key) is not None:
            _ref(ck, path + (key,), raw[key], nodes, allowed)
    if "schedule" in top:
        ck.add(("schedule",), "a runbook runs when a person starts it (`runbook run`); it takes no schedule")
    if "drill" in top:
        ck.add(("drill",), "a runbook takes no drill: block")
    if not acts:
        ck.add(("activities",) if "activities" in top else (), "a runbook needs at least one activity")
    repo = raw.get("repository")
    for name, a in acts.items():
        if a.type in ("Restore", "Verify") and a.get("snapshot") == SELECTED and isinstance(repo, str) \
                and a.get("input") != repo:
            ck.add(("activities", name, "input"), f"snapshot: selected is chosen in the runbook's repository "
                                                  f"'{repo}', not '{a.get('input')}'")
    return RunbookSpec(source=str(raw.get("source")), repository=str(repo))


# -- JSON Schema for editors (playbooks/schema.json) ---------------------------------------


def json_schema() -> dict[str, Any]:
    """The JSON Schema shipped as ``playbooks/schema.json`` (keys only; ``pipeline validate`` is the authority).

    Regenerate the file with ``python -m backupctl.pipelines.model > playbooks/schema.json``.
    """
    def one_of(types: dict[str, tuple[tuple[str, ...], tuple[str, ...]]], common: tuple[str, ...]) -> dict[str, Any]:
        out = []
        for t, (req, opt) in types.items():
            props: dict[str, Any] = {k: {} for k in req + opt}
            props["type"] = {"const": t}
            props.update({k: {} for k in common if k != "type"})
            out.append({"type": "object", "required": ["type", *req], "properties": props,
                        "additionalProperties": False})
        return {"type": "object", "additionalProperties": {"oneOf": out}}

    def block(required: tuple[str, ...], keys: tuple[str, ...]) -> dict[str, Any]:
        return {"type": "object", "required": list(required), "additionalProperties": False,
                "properties": {k: {} for k in keys}}

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "backupctl playbook (version 1)",
        "description": "Editor help only; `backupctl pipeline validate` is the authority (it also checks "
                       "references, cycles, variables and schedules).",
        "type": "object",
        "required": ["name"],
        "additionalProperties": False,
        "properties": {
            "version": {"const": 1},
            "kind": {"enum": list(KINDS)},
            "name": {"type": "string"},
            "description": {"type": "string"},
            "variables": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
            "schedule": {"type": "object", "additionalProperties": False, "properties": {
                "cron": {"type": "string"}, "rate": {"type": "string"}, "start": {"type": "string"},
                "end": {"type": "string"}, "style": {"enum": ["cron", "timeseries"]},
                "max_backfill": {"type": "integer", "minimum": 0}}},
            "nodes": one_of(NODE_TYPES, NODE_COMMON),
            "preconditions": one_of(PRECONDITION_TYPES, PRECONDITION_COMMON),
            "activities": one_of(ACTIVITY_TYPES, ACTIVITY_COMMON),
            "drill": block(("source", "repository", "target"), DRILL_KEYS),
            "runbook": block(RUNBOOK_KEYS, RUNBOOK_KEYS),
        },
    }


if __name__ == "__main__":  # python -m backupctl.pipelines.model > playbooks/schema.json
    import json

    print(json.dumps(json_schema(), indent=2))
