"""The ``notify=`` argument of ``progress``, ``job``, ``submit`` and ``tqdm``, carried to the server in the job's
metadata (``metadata["notify"]``), where the notification rules read it."""

from __future__ import annotations

from typing import Any

from ..protocol import MAX_NOTIFY_TARGETS

__all__ = ["NotifyArg", "with_notify"]

NotifyArg = bool | str | list[str] | tuple[str, ...] | None


def with_notify(metadata: dict[str, Any] | None, notify: NotifyArg) -> dict[str, Any] | None:
    """``metadata`` with ``notify`` added (``None``: unchanged). A wrong value raises at once, at the call that
    made the job, with what is allowed: a typo must not be found out when the job ends hours later."""
    if notify is None:
        return metadata
    value: bool | str | list[str]
    if isinstance(notify, bool) or (isinstance(notify, str) and "://" in notify):
        value = notify
    elif (
        isinstance(notify, list | tuple)
        and 1 <= len(notify) <= MAX_NOTIFY_TARGETS
        and all(isinstance(url, str) and "://" in url for url in notify)
    ):
        value = list(notify)
    else:
        raise ValueError(
            f"notify= takes True, False, an Apprise URL such as 'mailto://me@example.org' or a list of up to "
            f"{MAX_NOTIFY_TARGETS} of them, not {notify!r}"
        )
    return {**(metadata or {}), "notify": value}
