"""Leases in the repository: who is running a snapshot, who is reading one.

A lease is a small JSON object under ``runs/`` holding an ``owner`` (host, pid,
a random token) and ``lease_until`` (now + ``LEASE_TTL_S``), renewed every
TTL/3 by a daemon thread while its holder works and deleted when it is done.
A lease is *dead* when it has expired, or when its owner is a process on this
same host that no longer exists (a crashed run is resumed at once, without
waiting for the TTL). docs/REPOSITORY_FORMAT.md describes both kinds:

* ``runs/pending/<source-key>/<snapshot-id>.json`` - a snapshot run in progress
  (``backupctl/snapshot.py``): a new run resumes it only if its lease is dead;
* ``runs/readers/<snapshot-id>/<token>.json`` - a restore reading the snapshot
  (``ReaderLeases``): ``snapshots prune`` keeps a snapshot with a live reader lease.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from backupctl.errors import NotFound, SnapshotNotFound
from backupctl.model import isoformat, parse_time, utcnow
from backupctl.retry import Heartbeat

LEASE_TTL_S = float(os.environ.get("BACKUPCTL_LEASE_TTL_S") or 60)


def new_owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}


def lease_fields(owner: dict[str, Any], ttl: float = LEASE_TTL_S, now: datetime | None = None) -> dict[str, Any]:
    return {"owner": owner, "lease_until": isoformat((now or utcnow()) + timedelta(seconds=ttl))}


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return False
    return True


def lease_until(doc: dict[str, Any]) -> datetime | None:
    text = doc.get("lease_until")
    try:
        return parse_time(str(text)) if text else None
    except ValueError:
        return None


def lease_alive(doc: dict[str, Any], now: datetime | None = None, host: str | None = None) -> bool:
    """True if ``doc``'s lease is held: not expired, and not held by a vanished process of this host.

    A document without a lease (the pending pointer of an older backupctl) is dead.
    """
    until = lease_until(doc)
    if until is None or until <= (now or utcnow()):
        return False
    owner = doc.get("owner") or {}
    pid = owner.get("pid")
    if owner.get("host") == (host or socket.gethostname()) and isinstance(pid, int) and not pid_exists(pid):
        return False
    return True


def describe_owner(doc: dict[str, Any]) -> str:
    owner = doc.get("owner") or {}
    return f"pid {owner.get('pid')} on {owner.get('host')}, lease until {doc.get('lease_until')}"


class Lease:
    """Objects (one or more keys) holding one owner's lease, renewed in the background until ``release``."""

    def __init__(self, store: Any, docs: dict[str, dict[str, Any]], owner: dict[str, Any] | None = None,
                 ttl: float = LEASE_TTL_S) -> None:
        self.store, self.docs, self.ttl = store, docs, ttl
        self.owner = owner or new_owner()
        self._beat: Heartbeat | None = None

    def _write(self) -> None:
        fields = lease_fields(self.owner, self.ttl)
        for key, doc in self.docs.items():
            self.store.put_json(key, {**doc, **fields})

    def acquire(self) -> Lease:
        self._write()
        self._beat = Heartbeat(self.ttl / 3, self._write, "lease renewal")
        self._beat.start()
        return self

    def stop(self) -> None:
        """Stop renewing (the objects stay, with their last ``lease_until``)."""
        if self._beat is not None:
            self._beat.stop()
            self._beat = None

    def release(self, delete: bool = True) -> None:
        """Stop renewing and delete the objects, or (``delete=False``) keep them with an expired lease."""
        self.stop()
        if not self.docs:
            return
        if delete:
            self.store.delete(list(self.docs))
        else:
            fields = {"owner": self.owner, "lease_until": isoformat(utcnow())}
            for key, doc in self.docs.items():
                self.store.put_json(key, {**doc, **fields})


def reader_key(snapshot_id: str, token: str) -> str:
    return f"runs/readers/{snapshot_id}/{token}.json"


class ReaderLeases:
    """A restore's reader leases: ``with ReaderLeases() as readers: ... readers.hold(repo, links)``.

    ``hold`` writes a lease for every snapshot of the chain, then checks that
    each manifest is still there: ``snapshots prune`` deletes a manifest first
    and then looks for reader leases (putting the manifest back if one
    appeared), so either the restore sees the snapshot gone or prune sees
    the lease. Leaving the ``with`` block (also on failure) deletes the leases.
    """

    def __init__(self) -> None:
        self.lease: Lease | None = None

    def hold(self, repo: Any, links: list[tuple[str, str]]) -> None:
        """``links``: (snapshot id, snapshot prefix) of every snapshot the restore reads."""
        owner = new_owner()
        docs = {reader_key(sid, owner["token"]): {"snapshot_id": sid, "purpose": "restore"} for sid, _p in links}
        self.lease = Lease(repo.store, docs, owner).acquire()
        for sid, prefix in links:
            if not repo.store.exists(prefix + "manifest.json"):
                raise SnapshotNotFound(f"snapshot {sid} was removed (snapshots prune) as this restore started")

    def __enter__(self) -> ReaderLeases:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None


def live_readers(store: Any, snapshot_id: str | None = None, remove_dead: bool = True,
                 now: datetime | None = None) -> dict[str, datetime]:
    """Snapshot id -> the latest ``lease_until`` of its live reader leases; dead ones are deleted."""
    now = now or utcnow()
    out: dict[str, datetime] = {}
    dead: list[str] = []
    for key in store.list_keys("runs/readers/" + (f"{snapshot_id}/" if snapshot_id else "")):
        try:
            doc = store.get_json(key)
        except NotFound:
            continue
        sid = key.split("/")[2]
        until = lease_until(doc) if isinstance(doc, dict) else None
        if until is None or not lease_alive(doc, now):
            dead.append(key)
            continue
        out[sid] = max(out.get(sid, until), until)
    if dead and remove_dead:
        store.delete(dead)
    return out
