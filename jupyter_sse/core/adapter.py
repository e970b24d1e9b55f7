"""What every server adapter does around the broker, written once: the tornado extension and the hub both call
these, so their answers cannot drift apart.

The caller's token from the ``Authorization`` header (or a query parameter), the job filter of ``GET events``,
how a stream starts (its Last-Event-ID, its first bytes, the subscription), the heartbeat, the lease period and
the broker's settings, the caps on open streams and the 503 beyond them, and the OS user a server's jobs belong
to by default. Plain Python: no web framework here.
"""

from __future__ import annotations

import getpass
import os
import resource
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol import JOB_ID_RULE
from .broker import Broker, Subscription
from .errors import ProtocolError
from .model import is_valid_job_id
from .sse import encode_comment, encode_retry

__all__ = [
    "PING",
    "StreamLimits",
    "StreamSettings",
    "default_owner",
    "default_stream_limit",
    "job_filter",
    "last_event_id",
    "lease_check_period",
    "open_subscription",
    "os_user",
    "token_from_authorization",
]

# The heartbeat comment on an idle stream: keeps proxies with idle timeouts from closing it, and is how a server
# notices a client that went away (the write fails).
PING = encode_comment("ping")


@dataclass(frozen=True)
class StreamSettings:
    """The settings both servers apply the same way, with the same defaults.

    ``heartbeat``: seconds between heartbeats on an idle stream. ``retry_ms``: the reconnection delay sent to
    clients. ``send_timeout``: seconds a subscriber may take to accept bytes before it is dropped.
    ``publisher_lease``: seconds a running job may go without a report before it is ``lost``. ``wake_delay``:
    the most a change waits to go out with others (see ``Broker``): with thousands of subscribers, one pass over
    them per window instead of one per change.
    """

    heartbeat: float = 15.0
    retry_ms: int = 2000
    send_timeout: float = 30.0
    publisher_lease: float = 60.0
    wake_delay: float = 0.02

    def __post_init__(self) -> None:
        if self.heartbeat <= 0 or self.send_timeout <= 0 or self.publisher_lease <= 0:
            raise ValueError("heartbeat, send_timeout and publisher_lease must be > 0")
        if self.retry_ms < 0 or self.wake_delay < 0:
            raise ValueError("retry_ms and wake_delay must be >= 0")

    @property
    def preamble(self) -> bytes:
        """A stream's first bytes, sent at once so that proxies and clients see it live before any event."""
        return encode_retry(self.retry_ms) + encode_comment("jupyter-sse v1")

    @property
    def retry_after(self) -> int:
        """Seconds in the Retry-After of a refused stream: the client's own retry delay, rounded up."""
        return max(1, -(-self.retry_ms // 1000))

    @property
    def lease_period(self) -> float:
        """How often to look for jobs past their lease."""
        return lease_check_period(self.publisher_lease)

    def broker_options(self) -> dict[str, Any]:
        """The keyword arguments of ``Broker`` these settings decide."""
        return {"wake_delay": self.wake_delay}


def lease_check_period(lease: float) -> float:
    """Seconds between looks for jobs past their lease: a quarter of it, within 0.5 to 5 s."""
    return max(0.5, min(5.0, lease / 4))


def token_from_authorization(value: str | None) -> str | None:
    """The token of ``Authorization: Bearer <t>`` or ``token <t>`` (the Jupyter form), else None."""
    scheme, _, token = (value or "").partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():
        return token.strip()
    return None


def job_filter(values: Iterable[str]) -> list[str] | None:
    """The ``?job=`` values of ``GET events``: None for every job; 400 for a value that is no job id."""
    jobs = list(values)
    bad = [one for one in jobs if not is_valid_job_id(one)]
    if bad:
        raise ProtocolError(400, "invalid_query", f"job must be a job id ({JOB_ID_RULE}): {bad[0]!r}")
    return jobs or None


def last_event_id(header: str | None, query: str | None) -> str | None:
    """Where a stream resumes: the ``Last-Event-ID`` header (a reconnecting EventSource sends it), else the
    ``last_event_id`` query parameter (a first connect cannot set headers in a browser); empty means none."""
    return header or query or None


def open_subscription(broker: Broker, job_id: str | None, jobs: Iterable[str], resume: str | None) -> Subscription:
    """The subscription of ``GET jobs/{job_id}/events`` (``job_id`` given: 404 before the stream starts, and it
    ends with the job) or of ``GET events`` (``jobs``: the filter's values)."""
    if job_id is not None:
        broker.get(job_id)
        return broker.subscribe([job_id], resume, end_with_job=job_id)
    return broker.subscribe(job_filter(jobs), resume)


def os_user() -> str:
    """The OS user's name, or ``uid-<n>`` in a container whose user has no passwd entry and no ``$USER``
    (``getpass.getuser()`` raises there)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "user"


def default_owner(environ: Mapping[str, str] | None = None) -> str:
    """Whose jobs a server's are by default: JupyterHub's user for a single-user server, else the OS user."""
    env = os.environ if environ is None else environ
    return env.get("JUPYTERHUB_USER") or os_user()


# Descriptors kept free for everything that is not an event stream: kernels (a dozen each), files, the store,
# API requests, and the streams refused while at the cap (each holds one until its 503 is sent).
_RESERVED_MIN = 256
_RESERVED_SHARE = 4  # a quarter of the limit, when that is more


def default_stream_limit() -> int:
    """Event streams allowed in all by default: the open-file limit less what the rest of the server needs.

    Every open stream holds a file descriptor for as long as its client stays; past the process's limit the
    server can accept nothing, not even a kernel's report."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(1, soft - max(_RESERVED_MIN, soft // _RESERVED_SHARE))


class StreamLimits:
    """Counts the open event streams, in all and per user, against their caps.

    ``refuse(user)`` before a stream opens: None, and the stream is counted until ``closed(user)``; or the
    ``ProtocolError`` to answer (503 ``too_many_streams``, with ``retry_after`` seconds for the Retry-After
    header). ``report(message)`` is told of refusals at most once per ``log_every`` seconds, with a count, since
    clients at the cap come back again and again.
    """

    def __init__(
        self,
        total: int,
        per_user: int,
        *,
        log_every: float = 10.0,
        report: Callable[[str], None] | None = None,
    ) -> None:
        if total < 1 or per_user < 1:
            raise ValueError("stream limits must be >= 1")
        self.total = total
        self.per_user = min(per_user, total)
        self.open = 0
        self.refused = 0  # since the last report
        self.log_every = log_every
        self.report = report
        self._reported_at = -float("inf")
        self._by_user: dict[str, int] = {}

    @classmethod
    def configured(cls, total: int, per_user: int, **options: Any) -> StreamLimits:
        """The limits a server's settings ask for: 0 means the default (``default_stream_limit``; per user: the
        total)."""
        whole = total or default_stream_limit()
        return cls(whole, min(per_user or whole, whole), **options)

    def count_refusal(self) -> bool:
        """Count one refusal; True when it is time to report them (at most once per ``log_every`` seconds)."""
        self.refused += 1
        now = time.monotonic()
        if now - self._reported_at < self.log_every:
            return False
        self._reported_at = now
        return True

    def refusal(self, user: str) -> str | None:
        """Why a new stream of ``user`` is refused, or None if it may open (then ``opened`` must follow)."""
        if self.open >= self.total:
            return f"the server holds its most event streams ({self.total}); try again later"
        if self._by_user.get(user, 0) >= self.per_user:
            return f"{user!r} holds the most event streams a user may ({self.per_user}); close one or try later"
        return None

    def refuse(self, user: str) -> ProtocolError | None:
        """None, with the stream counted as open (``closed`` must follow); or the 503 to answer."""
        why = self.refusal(user)
        if why is None:
            self.opened(user)
            return None
        if self.count_refusal():
            if self.report is not None:
                self.report(f"refused event streams ({self.refused} since the last report): {why}")
            self.refused = 0
        return ProtocolError(503, "too_many_streams", why)

    def opened(self, user: str) -> None:
        self.open += 1
        self._by_user[user] = self._by_user.get(user, 0) + 1

    def closed(self, user: str) -> None:
        self.open -= 1
        left = self._by_user.get(user, 0) - 1
        if left > 0:
            self._by_user[user] = left
        else:
            self._by_user.pop(user, None)
