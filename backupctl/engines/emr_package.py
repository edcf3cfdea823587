"""Packaging backupctl for an EMR cluster: a pure-Python wheel built from the running code, and the entry script.

The wheel is built here, with ``zipfile``, from the package directories this
process imports (``backupctl`` and ``spark_jobs``): no build backend, no network,
and byte-for-byte the code that planned the job. Its ``Requires-Dist`` lines are
the installed distribution's, so the bootstrap action's ``pip install`` pulls the
same dependencies from PyPI on the cluster. File times are fixed, so the same
code gives the same wheel (and the same sha256, which names its upload).
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from importlib import metadata
from pathlib import Path

import backupctl
import spark_jobs

DIST = "backupctl"
_EPOCH = (2020, 1, 1, 0, 0, 0)
_SKIP_DIRS = {"__pycache__"}
_SKIP_SUFFIXES = {".pyc", ".pyo", ".so", ".pyd"}  # a py3-none-any wheel: no compiled module (docs/adr/0024)


def entry_script() -> bytes:
    """The ``spark-submit`` entry point (``spark_jobs/run_tasks.py``) as shipped with this code."""
    return (Path(str(spark_jobs.__file__)).parent / "run_tasks.py").read_bytes()


def _version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _requires() -> list[str]:
    try:
        return list(metadata.requires(DIST) or [])
    except metadata.PackageNotFoundError:
        return []


def _files() -> list[tuple[str, Path]]:
    out: list[tuple[str, Path]] = []
    for pkg in (backupctl, spark_jobs):
        root = Path(str(pkg.__file__)).parent
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root.parent)
            if f.is_dir() or _SKIP_DIRS & set(rel.parts) or f.suffix in _SKIP_SUFFIXES:
                continue
            out.append((rel.as_posix(), f))
    return out


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel() -> tuple[str, bytes]:
    """(file name, bytes) of a ``py3-none-any`` wheel of the running backupctl."""
    version = _version()
    dist_info = f"{DIST}-{version}.dist-info"
    entries: list[tuple[str, bytes]] = [(name, path.read_bytes()) for name, path in _files()]
    meta = ["Metadata-Version: 2.1", f"Name: {DIST}", f"Version: {version}",
            *[f"Requires-Dist: {r}" for r in _requires()]]
    entries.append((f"{dist_info}/METADATA", ("\n".join(meta) + "\n").encode()))
    entries.append((f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: backupctl\nRoot-Is-Purelib: true\n"
                                          b"Tag: py3-none-any\n"))
    entries.append((f"{dist_info}/entry_points.txt", b"[console_scripts]\nbackupctl = backupctl.cli.main:main\n"))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{dist_info}/RECORD,,\n"
    entries.append((f"{dist_info}/RECORD", record.encode()))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return f"{DIST}-{version}-py3-none-any.whl", buf.getvalue()
