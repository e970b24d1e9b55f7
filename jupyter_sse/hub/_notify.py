"""The hub's notifications: the extension's rules and Apprise sender over the hub's broker, one set of targets
for the whole hub (per-user targets are not there yet)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

from ..core import Broker
from ..core.apprise_sender import AppriseSender, apprise_config_paths
from ..core.notify import DEFAULT_STATES, Notifier, NotifyRules
from ..core.transitions import watch_state_changes

__all__ = ["start_notifications"]

_log = logging.getLogger("jupyter_sse.hub")


def start_notifications(
    broker: Broker,
    urls: Sequence[str] | None,
    *,
    min_duration: float = 60.0,
    window: float = 30.0,
    states: Sequence[str] = tuple(sorted(DEFAULT_STATES)),
    timeout: float = 10.0,
) -> Callable[[], None]:
    """Notify as the extension does; ``urls`` None: ``APPRISE_URLS`` and Apprise's config files. Returns the
    function that stops it (sending what waits for its window). Without Apprise installed, jobs that name their
    own targets are not told, and the hub says so once if targets were configured."""
    rules = NotifyRules(states=frozenset(states), min_duration=min_duration, window=window)
    configured = list(urls) if urls is not None else os.environ.get("APPRISE_URLS", "").split()
    config_paths = apprise_config_paths(None) if urls is None else []
    try:
        sender = AppriseSender(configured, config_paths, timeout=timeout, metrics=broker.metrics)
    except ImportError as exc:
        if configured or config_paths:
            _log.warning("jupyter-sse hub: no notifications: %s", exc)
        return lambda: None
    notifier = Notifier(rules, sender, has_default_targets=sender.has_default_targets)
    listener = watch_state_changes(broker, [notifier.job_changed])

    def stop() -> None:
        broker.remove_listener(listener)
        notifier.flush()
        sender.close()

    return stop
