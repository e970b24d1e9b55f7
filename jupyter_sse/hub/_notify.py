"""The hub's notifications: the extension's rules and Apprise sender, with each user's own targets and rules.

One sender (a few worker threads) for the whole hub; one ``Notifier`` per user, made again when that user's
settings change (see ``_notify_prefs``). A user's jobs go to that user's targets, else to the hub's
(``--notify-url``, ``APPRISE_URLS``, Apprise's config files); a job's own ``notify=`` works as in the extension.

Replicas sharing Redis: a broker tells its listeners only of the changes made through its own process, so the
replica that accepted a job's terminal update is the one that notifies. A job can still be ended by two replicas
(each one's lease check may find its publisher silent), so before a message goes out the replica claims the
job's end in Redis (``SET NX``, kept a day): one message per job end, whichever replicas saw it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..core import Broker
from ..core.apprise_sender import AppriseSender, RateLimitedLog, apprise_config_paths
from ..core.metrics import BrokerMetrics
from ..core.model import Job
from ..core.notify import Notifier, NotifyRules
from ..core.transitions import watch_state_changes
from ._notify_prefs import NotifyPrefs, UserNotify
from ._users import UsersFile

__all__ = ["HubNotifications"]

_log = logging.getLogger("jupyter_sse.hub")
_CLAIM_PREFIX = "jupyter-sse:notified:"
_CLAIM_SECONDS = 86400  # long past any retry of the same end; bounded memory in Redis


class HubNotifications:
    """Made with the app (bad rules, or a settings file it cannot read, raise ValueError there); ``start`` in
    the app's lifespan, ``attach`` for each user's broker, ``stop`` at shutdown (sending what waits for its
    window)."""

    def __init__(
        self,
        urls: Sequence[str] | None,
        rules: NotifyRules,
        *,
        users_file: UsersFile | None = None,
        store_url: str | None = None,
        settings_file: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.rules = rules
        self._urls = urls
        self._timeout = timeout
        self.prefs = NotifyPrefs(users_file, store_url, settings_file)
        self._claims: Any = None
        if store_url is not None:
            import redis

            self._claims = redis.Redis.from_url(store_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.sender: AppriseSender | None = None
        self.unavailable: str | None = "notifications have not started"
        self._notifiers: dict[str, tuple[UserNotify | None, Notifier]] = {}
        self._watching: list[tuple[Broker, Callable[[list[Job]], None]]] = []
        self._errors = RateLimitedLog(_log)

    # ---- life ----------------------------------------------------------------------------------------------
    def start(self, metrics: BrokerMetrics) -> None:
        """Start the sender (notify_urls None: ``APPRISE_URLS`` and Apprise's config files). Without Apprise
        nobody is told, and the hub says so once if targets were configured."""
        configured = list(self._urls) if self._urls is not None else os.environ.get("APPRISE_URLS", "").split()
        config_paths = apprise_config_paths(None) if self._urls is None else []
        try:
            self.sender = AppriseSender(configured, config_paths, timeout=self._timeout, metrics=metrics)
        except ImportError as exc:
            self.unavailable = str(exc)
            if configured or config_paths:
                _log.warning("jupyter-sse hub: no notifications: %s", exc)
            return
        self.unavailable = None

    def attach(self, broker: Broker) -> None:
        owner = broker.owner

        def changed(job: Job, previous: str | None) -> None:
            if job.terminal and previous != job.state:
                notifier = self._notifier(owner)
                if notifier is not None:
                    notifier.job_changed(job, previous)

        self._watching.append((broker, watch_state_changes(broker, [changed])))

    def stop(self) -> None:
        for broker, listener in self._watching:
            broker.remove_listener(listener)
        self._watching.clear()
        for _, notifier in self._notifiers.values():
            notifier.flush()
        self._notifiers.clear()
        if self.sender is not None:
            self.sender.close()
        self.prefs.close()
        if self._claims is not None:
            self._claims.close()

    # ---- per user ------------------------------------------------------------------------------------------
    def _notifier(self, owner: str) -> Notifier | None:
        if self.sender is None:
            return None
        try:
            prefs = self.prefs.get(owner)
        except Exception as exc:  # the users file or Redis unreadable right now: the hub's settings, not none
            self._errors.warning("jupyter-sse hub: cannot read %s's notify settings: %s", owner, exc)
            prefs = None
        known = self._notifiers.get(owner)
        if known is not None and known[0] == prefs:
            return known[1]
        if known is not None:
            known[1].flush()  # what waited under the old settings goes out now, to the old targets
        urls = prefs.urls if prefs is not None else None
        notifier = Notifier(
            prefs.rules(self.rules) if prefs is not None else self.rules,
            self.sender,
            has_default_targets=bool(urls) if urls is not None else self.sender.has_default_targets,
            targets=urls or (),
            claim=(lambda job: self._claim(owner, job)) if self._claims is not None else None,
        )
        self._notifiers[owner] = (prefs, notifier)
        return notifier

    def _claim(self, owner: str, job: Job) -> bool:
        key = f"{_CLAIM_PREFIX}{owner}:{job.id}:{job.created!r}:{job.state}"
        try:
            return bool(self._claims.set(key, "1", nx=True, ex=_CLAIM_SECONDS))
        except Exception as exc:  # Redis away: better a message twice than none
            self._errors.warning("jupyter-sse hub: cannot claim a job's notification in Redis: %s", exc)
            return True

    def describe(self, owner: str, prefs: UserNotify | None) -> dict[str, Any]:
        """What the settings route answers: the user's own settings and what they come to (never the hub's URLs,
        which may hold its credentials)."""
        rules = prefs.rules(self.rules) if prefs is not None else self.rules
        urls = prefs.urls if prefs is not None else None
        hub_targets = self.sender is not None and self.sender.has_default_targets
        targets = "own" if urls else "none" if urls is not None or not hub_targets else "hub"
        return {
            "owner": owner,
            "settings": prefs.to_json() if prefs is not None else {},
            "targets": targets,
            "states": sorted(rules.states),
            "min_duration": rules.min_duration,
            "window": rules.window,
            "available": self.sender is not None,
        }
