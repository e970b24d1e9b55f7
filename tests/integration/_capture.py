"""Helpers for the capture tests: the server's jobs by name, cancels as the UI sends them, the cell's displays."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from jupyter_sse.client import AsyncClient
from jupyter_sse.protocol import JOB_MIME_TYPE as JOB_MIME
from jupyter_sse.protocol import TERMINAL_STATES
from tests.conftest import SSEServer

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


async def jobs_by_name(server: SSEServer) -> dict[str, dict[str, Any]]:
    async with AsyncClient(server.url, server.token) as client:
        return {job["name"]: job for job in await client.list()}


async def settled(server: SSEServer, names: list[str], timeout: float = 20) -> dict[str, dict[str, Any]]:
    """The server's jobs once every one of ``names`` is in a final state."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = await jobs_by_name(server)
        if all(jobs.get(n, {}).get("state") in TERMINAL_STATES for n in names):
            return jobs
        if time.monotonic() > deadline:
            raise AssertionError(f"not all of {names} ended: {jobs}")
        await asyncio.sleep(0.05)


async def cancel_when_running(server: SSEServer, name: str, timeout: float = 60) -> dict[str, Any]:
    """Wait for job ``name`` to run (with some progress), then ask for its cancellation, as the UI does."""
    deadline = time.monotonic() + timeout
    async with AsyncClient(server.url, server.token) as client:
        while time.monotonic() < deadline:
            for job in await client.list():
                if job["name"] == name and job["state"] == "running" and job["n"] >= 1:
                    return await client.cancel(job["id"])
            await asyncio.sleep(0.05)
    raise AssertionError(f"no running job named {name!r}")


def displays(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The data of every display (new or updated) the cell's iopub messages carry."""
    kinds = ("display_data", "update_display_data", "execute_result")
    return [m["content"]["data"] for m in messages if m["msg_type"] in kinds]


def job_displays(messages: list[dict[str, Any]]) -> set[str]:
    """The ids of the jobs the cell displays (ours)."""
    return {d[JOB_MIME]["job_id"] for d in displays(messages) if JOB_MIME in d}


def foreign_displays(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Displays that are not our job's bar: a library's widget or HTML."""
    return [d for d in displays(messages) if JOB_MIME not in d and (WIDGET_MIME in d or "text/html" in d)]


def stderr_text(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"] for m in messages if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"
    )


async def until_idle(kernel: Any, msg_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The iopub messages of a request sent with ``kernel.start``, once the kernel is idle again."""
    messages = []
    deadline = time.monotonic() + timeout
    while True:
        msg = await kernel.client.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        messages.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages


def error_names(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"]["ename"] for m in messages if m["msg_type"] == "error"]
