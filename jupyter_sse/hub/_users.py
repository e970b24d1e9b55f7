"""The hub's users file: who may use it, and which of them are admins.

The file keeps, per user, a random key id in clear and a salted scrypt hash of the token's secret part; a token
is ``<key id>.<secret>``, so a request's token finds its entry without trying every hash, and the file alone
never gives a token away. Writes are atomic (a temporary file in the same directory, then ``os.replace``) and
the file is created readable by its owner only.

    {"version": 1, "users": {"alice": {"admin": false, "key": "3f9a...", "salt": "...", "hash": "..."}}}

A user's entry may also hold ``"notify"``: their own notification settings (see ``_notify_prefs``), which
``jupyter sse users notify`` and the hub's ``notify`` route write.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no lock, one writer at a time is up to the admin
    fcntl = None  # type: ignore[assignment]

__all__ = ["User", "UsersFile", "UsersFileError", "is_valid_user_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_KEY = re.compile(r"[0-9a-f]{16}")
# scrypt at n=2**14, r=8: about 16 MiB and tens of milliseconds per check; the verified-token cache below keeps
# that off every request but the first of each token.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_CACHE_SIZE = 256


class UsersFileError(ValueError):
    """The users file cannot be read or written, or a request to change it is not valid."""


@dataclass(frozen=True)
class User:
    name: str
    admin: bool


def is_valid_user_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


class UsersFile:
    """The users file at ``path``: read on first use and again whenever it changed on disk, so ``users add`` and
    ``users remove`` take effect on a running hub at its next request."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, dict[str, Any]] = {}
        # sha256 of a verified token -> its user: bounded, and dropped whenever the file changes
        self._verified: OrderedDict[bytes, User] = OrderedDict()

    # ---- reading -------------------------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise UsersFileError(f"cannot read the users file {self.path}: {exc}") from None
        else:
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if stamp == self._stamp and (stamp is not None or not self._users):
                return self._users
            users = self._parse() if stamp is not None else {}
            self._users, self._stamp = users, stamp
            self._verified.clear()
            return users

    def _parse(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsersFileError(f"cannot read the users file {self.path}: {exc}") from None
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict) or data.get("version") != 1:
            raise UsersFileError(f"{self.path} is not a jupyter-sse users file (version 1)")
        for name, entry in users.items():
            if (
                not is_valid_user_name(name)
                or not isinstance(entry, dict)
                or not isinstance(entry.get("admin"), bool)
                or not all(isinstance(entry.get(k), str) for k in ("key", "salt", "hash"))
                or not isinstance(entry.get("notify", {}), dict)
            ):
                raise UsersFileError(f"{self.path}: the entry of user {name!r} is not valid")
        return users

    def users(self) -> list[User]:
        return [User(name, bool(entry["admin"])) for name, entry in sorted(self._load().items())]

    def has(self, name: str) -> bool:
        return name in self._load()

    def notify_settings(self, name: str) -> dict[str, Any] | None:
        """``name``'s notification settings as stored (None: none of their own, or no such user)."""
        entry = self._load().get(name)
        settings = entry.get("notify") if entry is not None else None
        return dict(settings) if isinstance(settings, dict) else None

    def check(self) -> None:
        """Raise ``UsersFileError`` unless the file exists and is valid (a hub checks before it starts)."""
        if not self.path.exists():
            raise UsersFileError(f"no users file at {self.path}: make one with `jupyter sse users add NAME --file`")
        self._load()

    def verified(self, token: str) -> User | None:
        """The user of a token verified before (and since the file last changed), else None: quick."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        self._load()
        with self._lock:
            known = self._verified.get(digest)
            if known is not None:
                self._verified.move_to_end(digest)
            return known

    def verify(self, token: str) -> User | None:
        """The user whose token this is, else None. Costs a scrypt hash unless ``verified`` knows the token."""
        known = self.verified(token)
        if known is not None:
            return known
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        users = self._load()
        key, dot, secret = token.partition(".")
        if not dot or _KEY.fullmatch(key) is None or not secret:
            return None
        for name, entry in users.items():
            if hmac.compare_digest(entry["key"], key):
                try:
                    good = hmac.compare_digest(_hash(secret, bytes.fromhex(entry["salt"])).hex(), entry["hash"])
                except (ValueError, UnicodeEncodeError):
                    return None
                if not good:
                    return None
                user = User(name, bool(entry["admin"]))
                with self._lock:
                    self._verified[digest] = user
                    while len(self._verified) > _CACHE_SIZE:
                        self._verified.popitem(last=False)
                return user
        return None

    # ---- writing -------------------------------------------------------------------------------------------
    def add(self, name: str, *, admin: bool = False) -> str:
        """Add a user (or give an existing one a new token) and return the token: the only time it is seen."""
        if not is_valid_user_name(name):
            raise UsersFileError(f"not a valid user name: {name!r} (1 to 64 of [A-Za-z0-9._@-], starting alphanumeric)")
        key = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        entry = {"admin": admin, "key": key, "salt": salt.hex(), "hash": _hash(secret, salt).hex()}
        with self._changing() as users:
            if "notify" in users.get(name, {}):  # a new token keeps the user's notification settings
                entry["notify"] = users[name]["notify"]
            users[name] = entry
        return f"{key}.{secret}"

    def remove(self, name: str) -> None:
        with self._changing() as users:
            if name not in users:
                raise UsersFileError(f"no user {name!r} in {self.path}")
            del users[name]

    def set_notify_settings(self, name: str, settings: dict[str, Any] | None) -> None:
        """Store ``name``'s notification settings (None or empty: the hub's again); the caller validated them."""
        with self._changing() as users:
            if name not in users:
                raise UsersFileError(f"no user {name!r} in {self.path}")
            entry = dict(users[name])
            if settings:
                entry["notify"] = settings
            else:
                entry.pop("notify", None)
            users[name] = entry

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, dict[str, Any]]]:
        """Read, change, write, holding a lock beside the file: two `users add` at once both count."""
        try:
            lock = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise UsersFileError(f"cannot write the users file {self.path}: {exc}") from None
        try:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            with self._lock:
                self._stamp = None  # read what is on disk now, under the lock
            users = dict(self._load())
            yield users
            self._write(users)
        finally:
            os.close(lock)  # closing releases the lock

    def _write(self, users: dict[str, dict[str, Any]]) -> None:
        text = json.dumps({"version": 1, "users": users}, indent=2, sort_keys=True) + "\n"
        directory = self.path.parent
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)  # created 0600
        except OSError as exc:
            raise UsersFileError(f"cannot write the users file {self.path}: {exc}") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)  # readers see the old file or the new one, never half of one
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise UsersFileError(f"cannot write the users file {self.path}: {exc}") from None
        with self._lock:
            self._stamp = None  # read it back at next use
