"""A persistent store: the in-memory store, written behind to an SQLite file.

Reads never touch the file: every entry stays in memory, as in ``MemoryStore``. Writes are coalesced: a job
that changes ten times a second is written once per ``flush()`` (the server calls it every second), except
that a terminal state is written at the end of the change that made it (one transaction per request, however
many jobs finished in it), so a finished job survives a crash right after it finished. The
file holds the jobs, their retained log lines, the last sequence number and the publish token, so that after a
restart finished jobs and their logs are still there, ids keep increasing, and kernels that were publishing
before the restart are still let in.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from pathlib import Path

from .model import Job
from .store import JobEntry, MemoryStore

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, change_seq INTEGER NOT NULL,
    last_dropped_seq INTEGER NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS logs (
    job TEXT NOT NULL, seq INTEGER NOT NULL, line TEXT NOT NULL, PRIMARY KEY (job, seq)
) WITHOUT ROWID;
"""


class SQLiteStore(MemoryStore):
    """``MemoryStore`` plus an SQLite file that outlives the server."""

    def __init__(self, path: str | os.PathLike[str], *, log_lines_kept: int = 1000, tombstones_kept: int = 2000):
        super().__init__(tombstones_kept=tombstones_kept)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # the file holds the publish token
        os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._dirty: set[str] = set()
        self._removed: set[str] = set()
        self._urgent = False
        self._persisted_log_seq: dict[str, int] = {}
        self._log_lines_kept = log_lines_kept
        self._load()

    def _load(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        # Ids go on from the larger of the old counter and the clock: both only grow.
        self._seq = max(int(meta.get("seq", 0)), self._seq)
        # Removals are not kept across a restart: a cursor from before it may have missed some.
        self._horizon = self._seq
        epoch = meta.get("epoch")
        if epoch is None:
            epoch = self._epoch
            self._db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
        self._epoch = str(epoch)
        rows = self._db.execute("SELECT id, seq, change_seq, last_dropped_seq, data FROM jobs ORDER BY change_seq")
        for job_id, seq, change_seq, last_dropped_seq, data in rows.fetchall():
            entry = JobEntry(Job(**json.loads(data)), seq, self._log_lines_kept)
            entry.change_seq = change_seq
            entry.last_dropped_seq = last_dropped_seq
            lines = self._db.execute(
                "SELECT seq, line FROM logs WHERE job = ? ORDER BY seq DESC LIMIT ?", (job_id, self._log_lines_kept)
            ).fetchall()
            entry.logs.extend(reversed(lines))
            self._persisted_log_seq[job_id] = lines[0][0] if lines else 0
            self._entries[job_id] = entry

    def publish_token(self) -> str:
        """The publish token kernels use: made once, then kept across restarts of the server."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'publish_token'").fetchone()
        if row is not None:
            return str(row[0])
        token = secrets.token_urlsafe(32)
        self._db.execute("INSERT INTO meta (key, value) VALUES ('publish_token', ?)", (token,))
        return token

    def put(self, entry: JobEntry) -> None:
        super().put(entry)
        self._dirty.add(entry.job.id)
        self._removed.discard(entry.job.id)
        if entry.job.terminal:
            self._urgent = True  # written at the end of this change, in one transaction with the rest

    def commit(self) -> None:
        if self._urgent:
            self.flush()

    def remove(self, job_id: str, seq: int, final: object = None) -> None:
        super().remove(job_id, seq, final)
        self._dirty.discard(job_id)
        self._removed.add(job_id)

    @property
    def pending_writes(self) -> int:
        return len(self._dirty) + len(self._removed)

    def flush(self) -> None:
        """Write what changed since the last flush, in one transaction."""
        if not self._dirty and not self._removed:
            return
        db = self._db
        db.execute("BEGIN")
        try:
            for job_id in self._removed:
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
                db.execute("DELETE FROM logs WHERE job = ?", (job_id,))
                self._persisted_log_seq.pop(job_id, None)
            for job_id in self._dirty:
                entry = self._entries.get(job_id)
                if entry is None:
                    continue
                db.execute(
                    "INSERT OR REPLACE INTO jobs (id, seq, change_seq, last_dropped_seq, data) VALUES (?, ?, ?, ?, ?)",
                    (job_id, entry.seq, entry.change_seq, entry.last_dropped_seq, json.dumps(entry.job.to_dict())),
                )
                written = self._persisted_log_seq.get(job_id, 0)
                new_lines = [(job_id, seq, line) for seq, line in entry.logs if seq > written]
                if new_lines:
                    db.executemany("INSERT OR REPLACE INTO logs (job, seq, line) VALUES (?, ?, ?)", new_lines)
                    self._persisted_log_seq[job_id] = new_lines[-1][1]
                if entry.logs and entry.last_dropped_seq:
                    db.execute("DELETE FROM logs WHERE job = ? AND seq < ?", (job_id, entry.logs[0][0]))
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('seq', ?)", (str(self._seq),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._dirty.clear()
        self._removed.clear()
        self._urgent = False

    def close(self) -> None:
        self.flush()
        self._db.close()
