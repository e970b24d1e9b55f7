"""What the server knows about kernels and the broker does not: which died, restarted or was shut down.

Jobs of such a kernel can never report again, so they turn ``lost`` at once (a restart or shutdown through the
server is heard as it happens; a kernel that died is found by the periodic check within a second or two). The
same check escalates a cancel that the job's loop did not act on within the grace period: it interrupts the
kernel, which reaches a loop stuck in C code as KeyboardInterrupt when it returns to Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ..core import Broker

__all__ = ["KernelWatcher"]

KERNEL_ACTIONS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
_REASONS = {"restart": "its kernel was restarted", "shutdown": "its kernel was shut down"}


class KernelWatcher:
    def __init__(
        self,
        broker: Broker,
        kernel_manager: Any,
        *,
        cancel_grace: float,
        log: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.broker = broker
        self.kernel_manager = kernel_manager
        self.cancel_grace = cancel_grace
        self.log = log

    async def on_kernel_action(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        """An ``EventLogger`` listener for jupyter_server's kernel action events."""
        reason = _REASONS.get(str(data.get("action")))
        kernel_id = data.get("kernel_id")
        if reason and kernel_id and data.get("status") == "success":
            self._lose(str(kernel_id), reason)

    def _lose(self, kernel_id: str, reason: str) -> None:
        lost = self.broker.lose_kernel_jobs(kernel_id, reason)
        if lost:
            self.log.info("jupyter-sse: %s lost: %s", ", ".join(lost), reason)

    async def check(self) -> None:
        """One pass: jobs of dead or vanished kernels turn lost; ignored cancels interrupt their kernel."""
        known = self.kernel_manager
        for kernel_id in self.broker.kernels_with_running_jobs():
            if kernel_id not in known:
                # Not a kernel of this server (a script, another server's kernel): nothing to say about it.
                continue
            kernel = known.get_kernel(kernel_id)
            alive = True
            with contextlib.suppress(Exception):
                alive = bool(await kernel.is_alive())
            if not alive:
                self._lose(kernel_id, "its kernel died")
        for job_id, job_kernel in self.broker.overdue_cancels(self.cancel_grace):
            if job_kernel is not None and job_kernel in known:
                kernel_id = job_kernel
                self.log.info("jupyter-sse: job %s ignored its cancel; interrupting kernel %s", job_id, kernel_id)
                try:
                    await known.interrupt_kernel(kernel_id)
                except Exception:
                    self.log.warning("jupyter-sse: interrupting kernel %s failed", kernel_id, exc_info=True)

    async def run(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            try:
                await self.check()
            except Exception:  # one bad pass must not end the watching
                self.log.warning("jupyter-sse: kernel check failed", exc_info=True)
