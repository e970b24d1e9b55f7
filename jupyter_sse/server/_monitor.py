"""Wires the extension's broker to notifications, Prometheus and Jupyter's event bus (see ``SSEExtension``)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import REGISTRY

from .._prometheus import BrokerCollector
from ..core import Broker, Job
from ..core.apprise_sender import apprise_config_paths
from ..core.notify import Notifier, NotifyRules
from ..core.transitions import watch_state_changes
from ._events import JobEventEmitter

__all__ = ["Monitor"]


class _Exporter:
    """One collector on prometheus_client's global registry (the one jupyter_server's ``/metrics`` serves) for
    the process's lifetime; it reports the broker of the extension that attached last and is still running."""

    def __init__(self) -> None:
        self.brokers: list[Broker] = []
        REGISTRY.register(BrokerCollector(lambda: self.brokers[-1] if self.brokers else None))


_exporter: _Exporter | None = None


def _export(broker: Broker) -> None:
    global _exporter
    if _exporter is None:
        _exporter = _Exporter()
    _exporter.brokers.append(broker)


def _unexport(broker: Broker) -> None:
    if _exporter is not None and broker in _exporter.brokers:
        _exporter.brokers.remove(broker)


class Monitor:
    """What watches the broker besides its subscribers. ``close()`` sends pending notifications and detaches."""

    def __init__(self, ext: Any, broker: Broker) -> None:
        self.broker = broker
        self.log = ext.log
        self.notifier: Notifier | None = None
        self.sender: Any = None
        callbacks: list[Any] = [broker.metrics.observe_state_change]
        urls = [*ext.notify_urls, *os.environ.get("APPRISE_URLS", "").split()]
        config_paths = apprise_config_paths(ext.notify_config)
        self._start_notifications(ext, urls, config_paths)
        if self.notifier is not None:
            callbacks.append(self.notifier.job_changed)
        else:
            callbacks.append(self._unheard)
        event_logger = getattr(ext.serverapp, "event_logger", None)
        if ext.emit_job_events and event_logger is not None:
            callbacks.append(JobEventEmitter(event_logger))
        self._listener = watch_state_changes(broker, callbacks)
        _export(broker)

    def _start_notifications(self, ext: Any, urls: list[str], config_paths: list[str]) -> None:
        from ..core.apprise_sender import AppriseSender

        rules = NotifyRules(
            states=frozenset(ext.notify_states),
            min_duration=ext.notify_min_duration,
            window=ext.notify_window,
            allow_job_targets=ext.notify_job_targets,
        )
        try:
            self.sender = AppriseSender(urls, config_paths, timeout=ext.notify_timeout, metrics=self.broker.metrics)
        except ImportError as exc:
            if urls or config_paths:  # configured but not installed: say so; otherwise stay quiet
                self.log.warning("jupyter-sse: no notifications: %s", exc)
            return
        except ValueError as exc:  # a URL Apprise cannot use: the server runs, without notifications
            self.log.error("jupyter-sse: no notifications: notify_urls or APPRISE_URLS: %s", exc)
            return
        link = ext.notify_link_url or _link_base(ext.serverapp)
        self.notifier = Notifier(
            rules, self.sender, has_default_targets=self.sender.has_default_targets, link_base=link
        )
        self.log.info(
            "jupyter-sse: notifications %s",
            f"to {len(self.sender.default)} target(s)"
            if self.sender.has_default_targets
            else "only for jobs that name their own targets (no notify_urls, APPRISE_URLS or Apprise config file)",
        )

    def _unheard(self, job: Job, previous: str | None) -> None:
        # A job asked to be told, and nothing here can tell anyone: say so once, where the operator looks.
        if job.terminal and job.metadata.get("notify") not in (None, False) and not self._said_unheard:
            self._said_unheard = True
            self.log.warning(
                "jupyter-sse: job %s asked for a notification, but notifications are off on this server "
                "(install jupyter-sse[notify] and set notify_urls)",
                job.id,
            )

    _said_unheard = False

    def close(self) -> None:
        self.broker.remove_listener(self._listener)
        _unexport(self.broker)
        if self.notifier is not None:
            self.notifier.flush()
        if self.sender is not None:
            self.sender.close()


def _link_base(serverapp: Any) -> str | None:
    try:
        url = serverapp.connection_url  # never carries the token
    except Exception:
        return None
    return str(url) if url else None
