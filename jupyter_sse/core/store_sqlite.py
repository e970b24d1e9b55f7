"""A persistent store: the in-memory store, backed by an SQLite file that one server owns.

Reads never touch the file: every entry stays in memory, as in ``MemoryStore``. Writes come in two speeds.
What an answer promises is written before the answer (``sync``, one transaction per request, however many jobs
it touched): a new job, a change of state, a cancel, a removal, log lines. Progress alone (``n``, rate, message
of a running job) is written behind, once per ``flush()`` (the server calls it every second), so a job that
changes ten times a second costs one write a second. The file is in WAL mode with ``synchronous=NORMAL``: a
commit survives the crash of the process (SIGKILL, OOM), but not the loss of power or of the OS, which may undo
the last commits before a checkpoint.

Ids never go back: they come from a high-water mark written ahead (``_RESERVE`` ids at a time) before any of
them is handed out, never from the clock; after a crash the next server starts above every id the old one could
have sent.

One server per file: ``open_store`` locks it (``flock`` on a ``.lock`` file next to it, released by the OS when
the process ends, however it ends). A second server of the same user takes the next free file
(``jobs-1.sqlite3``, ...), so two servers never load, expire or overwrite each other's jobs, and each has its
own publish token.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from .model import Job
from .store import JobEntry, MemoryStore, StoreUnavailable

try:
    import fcntl
except ImportError:  # Windows: no advisory locks here; one server per data dir is then the user's to keep
    fcntl = None  # type: ignore[assignment]

__all__ = ["SQLiteStore", "StoreLocked", "open_store"]

_RESERVE = 10_000  # ids reserved per write of the high-water mark
_MAX_FILES = 64  # servers of one user sharing one data dir

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

_CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


class _FailedCheck(sqlite3.DatabaseError):
    """The file opens, but its integrity check finds damage."""


class StoreLocked(OSError):
    """Every candidate file is locked by another running server."""


def _is_corrupt(exc: BaseException) -> bool:
    return isinstance(exc, _FailedCheck) or getattr(exc, "sqlite_errorname", "") in _CORRUPT


class SQLiteStore(MemoryStore):
    """``MemoryStore`` plus an SQLite file that outlives the server.

    Raises ``sqlite3.Error`` or ``OSError`` when the file cannot be opened, read or written (``open_store``
    tells a corrupt file from the rest).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        log_lines_kept: int = 1000,
        tombstones_kept: int = 2000,
        lock_fd: int | None = None,
    ) -> None:
        super().__init__(tombstones_kept=tombstones_kept)
        self.path = Path(path)
        self.moved_aside: Path | None = None  # set by open_store when it found this file corrupt
        self.fault: str | None = None  # why the last write failed; None once a write succeeds again
        self._lock_fd = lock_fd
        self._dirty: set[str] = set()  # changed since written
        self._urgent: set[str] = set()  # changed in a way an answer promises: written by sync()
        self._removed: set[str] = set()  # removed from memory, still in the file
        self._saved: dict[str, tuple[str, bool]] = {}  # (state, cancel_requested) as last written
        self._persisted_log_seq: dict[str, int] = {}
        self._log_lines_kept = log_lines_kept
        self._reserved = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # the file holds the publish token
        os.close(fd)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            # One cursor for every write, made at start: the connection keeps a weak reference to each cursor it
            # makes and drops the dead ones only every 200th, so a cursor per statement left up to 200 dead ones,
            # made whenever, each keeping a 1 MiB arena of Python's allocator from being given back.
            self._writer = self._db.cursor()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            (check,) = self._db.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise _FailedCheck(f"integrity check failed: {check}")
            self._db.executescript(_SCHEMA)
            self._load()
        except BaseException:
            self._db.close()
            raise

    def _load(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        rows = self._db.execute(
            "SELECT id, seq, change_seq, last_dropped_seq, data FROM jobs ORDER BY change_seq"
        ).fetchall()
        if "ids_reserved" in meta:
            start = int(meta["ids_reserved"])
        else:
            # A new file, or one written before ids were reserved ahead (its ids came from the clock in µs and
            # were written behind): start above all of them, once; from then on the clock plays no part.
            newest = max((row[2] for row in rows), default=0)
            start = max(int(meta.get("seq", 0)), newest, self._seq)
        self._seq = start
        self._reserve(start + _RESERVE)
        # Removals are not kept across a restart: a cursor from before it may have missed some.
        self._horizon = self._seq
        epoch = meta.get("epoch")
        if epoch is None:
            epoch = self._epoch
            self._db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
        self._epoch = str(epoch)
        for job_id, seq, change_seq, last_dropped_seq, data in rows:
            job = Job(**json.loads(data))
            entry = JobEntry(job, seq, self._log_lines_kept)
            entry.change_seq = change_seq
            entry.last_dropped_seq = last_dropped_seq
            lines = self._db.execute(
                "SELECT seq, line FROM logs WHERE job = ? ORDER BY seq DESC LIMIT ?", (job_id, self._log_lines_kept)
            ).fetchall()
            entry.logs.extend(reversed(lines))
            self._persisted_log_seq[job_id] = lines[0][0] if lines else 0
            self._saved[job_id] = (job.state, job.cancel_requested)
            if job.cancel_requested:
                entry.cancel_asked_at = job.updated  # so that a job lost meanwhile still hears it if it comes back
            self._entries[job_id] = entry

    def _reserve(self, high: int) -> None:
        try:
            self._writer.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('ids_reserved', ?)", (str(high),))
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        self._reserved = high

    def next_seq(self) -> int:
        seq = self._seq + 1
        if seq > self._reserved:
            self._reserve(seq + _RESERVE)  # written before the id is handed out, so ids never go back
        self._seq = seq
        return seq

    def publish_token(self) -> str:
        """The publish token kernels use: made once, then kept across restarts of the server."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'publish_token'").fetchone()
        if row is not None:
            return str(row[0])
        token = secrets.token_urlsafe(32)
        self._db.execute("INSERT INTO meta (key, value) VALUES ('publish_token', ?)", (token,))
        return token

    def put(self, entry: JobEntry) -> None:
        job = entry.job
        job_id = job.id
        entries = self._entries  # MemoryStore.put, inlined: this runs for every update
        entries[job_id] = entry
        entries.move_to_end(job_id)
        self._dirty.add(job_id)
        # Exact, not sticky: a change undone (it could not be stored) leaves nothing urgent behind it.
        saved = self._saved.get(job_id)
        if (
            saved is None
            or saved[0] != job.state
            or saved[1] != job.cancel_requested
            or (entry.logs and entry.logs[-1][0] > self._persisted_log_seq.get(job_id, 0))
        ):
            self._urgent.add(job_id)
        else:
            self._urgent.discard(job_id)

    def discard(self, job_id: str) -> None:
        super().discard(job_id)
        self._dirty.discard(job_id)
        self._urgent.discard(job_id)

    def remove(self, job_id: str, seq: int, final: object = None) -> None:
        super().remove(job_id, seq, final)
        self._dirty.discard(job_id)
        self._urgent.discard(job_id)
        if self._saved.pop(job_id, None) is not None:
            self._removed.add(job_id)  # with the next sync: retention's removals, many in one transaction
        self._persisted_log_seq.pop(job_id, None)

    @property
    def pending_writes(self) -> int:
        return len(self._dirty) + len(self._removed)

    def sync(self, *, removing: Iterable[str] = ()) -> None:
        removing = [job_id for job_id in removing if job_id in self._saved]
        if self._urgent or self._removed or removing:
            self._write(list(self._urgent), [*self._removed, *removing])

    def commit(self) -> None:
        # Removals alone wait for the next sync or flush: retention removes jobs one at a time, and a transaction
        # each would cost more than the request that caused them.
        if self._urgent:
            with contextlib.suppress(StoreUnavailable):
                self.sync()

    def flush(self) -> None:
        """Write everything that changed since it was last written, in one transaction."""
        if self._dirty or self._removed:
            self._write(list(self._dirty), list(self._removed))

    def _write(self, job_ids: Iterable[str], removed: list[str]) -> None:
        db = self._writer
        written: list[tuple[str, tuple[str, bool], int | None]] = []
        try:
            db.execute("BEGIN")
            try:
                if removed:
                    db.executemany("DELETE FROM jobs WHERE id = ?", [(job_id,) for job_id in removed])
                    db.executemany("DELETE FROM logs WHERE job = ?", [(job_id,) for job_id in removed])
                for job_id in job_ids:
                    entry = self._entries.get(job_id)
                    if entry is None:
                        continue
                    job = entry.job
                    db.execute(
                        "INSERT OR REPLACE INTO jobs (id, seq, change_seq, last_dropped_seq, data) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (job_id, entry.seq, entry.change_seq, entry.last_dropped_seq, json.dumps(job.to_dict())),
                    )
                    done = self._persisted_log_seq.get(job_id, 0)
                    new_lines = [(job_id, seq, line) for seq, line in entry.logs if seq > done]
                    if new_lines:
                        db.executemany("INSERT OR REPLACE INTO logs (job, seq, line) VALUES (?, ?, ?)", new_lines)
                    if entry.logs and entry.last_dropped_seq:
                        db.execute("DELETE FROM logs WHERE job = ? AND seq < ?", (job_id, entry.logs[0][0]))
                    written.append((job_id, (job.state, job.cancel_requested), new_lines[-1][1] if new_lines else None))
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc
        # Only now, after the commit: a failed write leaves everything pending, to be written again.
        self.fault = None
        self._removed.difference_update(removed)
        for job_id in removed:
            self._saved.pop(job_id, None)
        for job_id, saved, log_seq in written:
            self._saved[job_id] = saved
            if log_seq is not None:
                self._persisted_log_seq[job_id] = log_seq
            self._dirty.discard(job_id)
            self._urgent.discard(job_id)

    def _failed(self, exc: sqlite3.Error) -> StoreUnavailable:
        self.fault = f"{type(exc).__name__}: {exc}"
        return StoreUnavailable(f"the job store {self.path} cannot be written ({exc}); nothing was changed")

    def close(self) -> None:
        """Write what is pending and let go of the file (also when that write fails)."""
        try:
            self.flush()
        finally:
            self._db.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock
                self._lock_fd = None


def _candidates(path: Path) -> list[Path]:
    return [path] + [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, _MAX_FILES)]


def _lock(path: Path) -> int | None:
    """An exclusive lock on ``path``'s lock file, or None if another process holds it."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    if fcntl is None:
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _move_aside(path: Path) -> Path:
    """Rename a corrupt file (and its WAL) out of the way, keeping it for whoever wants to look at it."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
    for suffix in ("-wal", "-shm"):
        extra = path.with_name(path.name + suffix)
        if extra.exists():
            extra.rename(aside.with_name(aside.name + suffix))
    path.rename(aside)
    return aside


def open_store(path: str | os.PathLike[str], *, log_lines_kept: int = 1000) -> SQLiteStore:
    """The first file among ``path``, ``path-1``, ... that no running server holds, opened and locked.

    A server restarted while another still runs takes the first free file, which is its own. A corrupt file is
    moved aside (``moved_aside`` says where) and a new one started in its place. Raises ``StoreLocked`` when all
    are taken, and ``OSError`` or ``sqlite3.Error`` when the file cannot be opened (read-only, no such dir).
    """
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for candidate in _candidates(base):
        fd = _lock(candidate)
        if fd is None:
            continue
        try:
            try:
                return SQLiteStore(candidate, log_lines_kept=log_lines_kept, lock_fd=fd)
            except sqlite3.DatabaseError as exc:
                if not _is_corrupt(exc):
                    raise
                aside = _move_aside(candidate)
                store = SQLiteStore(candidate, log_lines_kept=log_lines_kept, lock_fd=fd)
                store.moved_aside = aside
                return store
        except BaseException:
            os.close(fd)
            raise
    raise StoreLocked(f"{_MAX_FILES} running servers already hold {base} and its siblings")
