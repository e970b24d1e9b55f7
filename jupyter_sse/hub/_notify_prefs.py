"""Each hub user's own notification settings, and where they are kept.

A user's settings override the hub's, field by field; a field left out (or null) is the hub's. ``urls`` null:
the hub's targets; an empty list: no messages at all for this user (a job's own ``notify=`` still works).

    {"urls": ["mailto://..."], "states": ["failed", "lost"], "min_duration": 300, "window": 60}

Kept in the users file for a user who is in it (``jupyter sse users notify`` writes there too); else, for a
user known another way (a JupyterHub service's users), in Redis when the hub shares one, so every replica reads
them; else in the hub's settings file when it has one (read at start, written at each change: one hub owns it),
or else in this process's memory (lost on restart).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.notify import MAX_JOB_TARGETS, NotifyRules
from ._users import UsersFile

__all__ = ["NotifyPrefs", "UserNotify", "check_urls"]

_FIELDS = ("urls", "states", "min_duration", "window")
_MAX_URL = 2048
_REDIS_KEY = "jupyter-sse:notify"
_REDIS_TTL = 1.0  # seconds a replica trusts what it read: a change made through another replica shows that late
_MEMORY_USERS = 10_000  # users whose settings one process keeps in memory


@dataclass(frozen=True)
class UserNotify:
    """One user's settings; ``None`` fields are the hub's."""

    urls: tuple[str, ...] | None = None
    states: frozenset[str] | None = None
    min_duration: float | None = None
    window: float | None = None

    @classmethod
    def from_json(cls, data: Any) -> UserNotify:
        """Parse and check settings as a client or the users file gives them; ValueError says what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("notify settings must be a JSON object")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(f"unknown notify setting(s) {', '.join(map(repr, unknown))}: use {', '.join(_FIELDS)}")
        urls = data.get("urls")
        if urls is not None:
            if (
                not isinstance(urls, list)
                or len(urls) > MAX_JOB_TARGETS
                or not all(isinstance(url, str) and "://" in url and len(url) <= _MAX_URL for url in urls)
            ):
                raise ValueError(
                    f"urls must be a list of at most {MAX_JOB_TARGETS} Apprise URLs (scheme://..., at most "
                    f"{_MAX_URL} characters each), or null for the hub's"
                )
            urls = tuple(url.strip() for url in urls)
        states = data.get("states")
        if states is not None:
            if not isinstance(states, list) or not states or not all(isinstance(state, str) for state in states):
                raise ValueError("states must be a non-empty list of end states, or null for the hub's")
            states = frozenset(states)
        numbers: dict[str, float | None] = {}
        for name in ("min_duration", "window"):
            value = data.get(name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0, or null for the hub's")
            numbers[name] = None if value is None else float(value)
        prefs = cls(urls, states, numbers["min_duration"], numbers["window"])
        prefs.rules(NotifyRules())  # the end states are checked where the rules are
        return prefs

    def to_json(self) -> dict[str, Any]:
        """The fields set, as stored and as the route answers."""
        out: dict[str, Any] = {}
        if self.urls is not None:
            out["urls"] = list(self.urls)
        if self.states is not None:
            out["states"] = sorted(self.states)
        if self.min_duration is not None:
            out["min_duration"] = self.min_duration
        if self.window is not None:
            out["window"] = self.window
        return out

    def rules(self, hub: NotifyRules) -> NotifyRules:
        return NotifyRules(
            states=hub.states if self.states is None else self.states,
            min_duration=hub.min_duration if self.min_duration is None else self.min_duration,
            window=hub.window if self.window is None else self.window,
            max_jobs_listed=hub.max_jobs_listed,
            max_pending_messages=hub.max_pending_messages,
            allow_job_targets=hub.allow_job_targets,
        )


def check_urls(urls: tuple[str, ...]) -> None:
    """Raise ValueError unless Apprise can use every URL (never the URL itself in the error: it can hold a
    password); RuntimeError when Apprise is not installed."""
    try:
        import apprise
    except ImportError:
        raise RuntimeError("notifications need Apprise: install jupyter-sse[notify] (or apprise)") from None
    for url in urls:
        if not apprise.Apprise().add(url):
            raise ValueError(f"not an Apprise URL Apprise can use (scheme {url.split('://', 1)[0]!r})")


def _parse_stored(data: Any) -> UserNotify | None:
    if not data:
        return None
    try:
        return UserNotify.from_json(data)
    except ValueError:
        return None  # edited by hand into something invalid: the hub's settings, rather than none at all


class NotifyPrefs:
    """Reads and writes users' settings (see the module's docstring for where). ``get`` is quick enough for the
    event loop: the users file is read again only when it changed, Redis at most once a second per user."""

    def __init__(
        self,
        users_file: UsersFile | None,
        redis_url: str | None = None,
        settings_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self._users_file = users_file
        self._file = Path(settings_file) if settings_file is not None and redis_url is None else None
        self._redis: Any = None
        if redis_url is not None:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
            )
        self._lock = threading.Lock()
        self._memory: dict[str, UserNotify] = {}
        self._cached: dict[str, tuple[float, UserNotify | None]] = {}
        if self._file is not None:
            self._memory = self._read_file(self._file)

    def _in_users_file(self, owner: str) -> bool:
        return self._users_file is not None and self._users_file.has(owner)

    def get(self, owner: str) -> UserNotify | None:
        """``owner``'s settings, or None for the hub's. May raise what the store raises (the caller logs it)."""
        if self._users_file is not None and self._in_users_file(owner):
            return _parse_stored(self._users_file.notify_settings(owner))
        if self._redis is None:
            with self._lock:
                return self._memory.get(owner)
        now = time.monotonic()
        with self._lock:
            cached = self._cached.get(owner)
        if cached is not None and cached[0] > now:
            return cached[1]
        raw = self._redis.hget(_REDIS_KEY, owner)
        prefs = _parse_stored(json.loads(raw)) if raw else None
        with self._lock:
            if len(self._cached) >= _MEMORY_USERS:
                self._cached.clear()
            self._cached[owner] = (now + _REDIS_TTL, prefs)
        return prefs

    def set(self, owner: str, prefs: UserNotify | None) -> None:
        """Store ``owner``'s settings (None: the hub's again). Blocking: call it off the event loop."""
        settings = prefs.to_json() if prefs is not None else {}
        if self._users_file is not None and self._in_users_file(owner):
            self._users_file.set_notify_settings(owner, settings or None)
            return
        if self._redis is not None:
            if settings:
                self._redis.hset(_REDIS_KEY, owner, json.dumps(settings))
            else:
                self._redis.hdel(_REDIS_KEY, owner)
            with self._lock:
                self._cached[owner] = (time.monotonic() + _REDIS_TTL, prefs if settings else None)
            return
        with self._lock:
            memory = dict(self._memory)
            if prefs is None or not settings:
                memory.pop(owner, None)
            elif owner in memory or len(memory) < _MEMORY_USERS:
                memory[owner] = prefs
            else:
                raise ValueError(f"this hub keeps the notify settings of at most {_MEMORY_USERS} users")
            if self._file is not None:  # on disk first: a write that fails changes nothing
                self._write_file(self._file, {name: one.to_json() for name, one in memory.items()})
            self._memory = memory

    @staticmethod
    def _read_file(path: Path) -> dict[str, UserNotify]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the notify settings file {path}: {exc}") from None
        users = data.get("users") if isinstance(data, dict) and data.get("version") == 1 else None
        if not isinstance(users, dict) or len(users) > _MEMORY_USERS:
            raise ValueError(f"{path} is not a jupyter-sse notify settings file (version 1)")
        try:
            return {str(name): UserNotify.from_json(one) for name, one in users.items()}
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @staticmethod
    def _write_file(path: Path, users: dict[str, Any]) -> None:
        # As the users file: 0600 (URLs can hold passwords), and readers see the old file or the new one.
        text = json.dumps({"version": 1, "users": users}, indent=2, sort_keys=True) + "\n"
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        except OSError as exc:
            raise ValueError(f"cannot write the notify settings file {path}: {exc}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ValueError(f"cannot write the notify settings file {path}: {exc}") from None

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
