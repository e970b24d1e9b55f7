"""The baseline of the fan-out benchmark: a plain FastAPI + sse-starlette app written the usual way.

One ``asyncio.Queue`` per subscriber; ``POST .../updates`` merges each job update into the job's state and puts the
encoded job into every subscriber's queue. Same paths, same auth header and same event shape as jupyter-sse, so
the load generators cannot tell them apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from sse_starlette.sse import EventSourceResponse

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--token", required=True)
args = parser.parse_args()

app = FastAPI()
jobs: dict[str, dict] = {}
queues: set[asyncio.Queue] = set()
seq = 0


def check(request: Request) -> None:
    if request.headers.get("authorization", "").split(" ", 1)[-1] != args.token:
        raise HTTPException(403)


@app.get("/jupyter-sse/api/jobs")
async def list_jobs(request: Request) -> dict:
    check(request)
    return {"jobs": list(jobs.values())}


@app.post("/jupyter-sse/api/updates")
async def updates(request: Request) -> dict:
    global seq
    check(request)
    body = await request.json()
    now = time.time()
    for update in body.get("jobs", []):
        job = jobs.setdefault(update["id"], {"id": update["id"], "created": now, "state": "running"})
        job.update(update)
        job["updated"] = now
        seq += 1
        event = {"event": "job", "id": str(seq), "data": json.dumps(job)}
        for q in queues:
            q.put_nowait(event)
    for logs in body.get("logs", []):
        seq += 1
        event = {"event": "log", "id": str(seq), "data": json.dumps(logs)}
        for q in queues:
            q.put_nowait(event)
    return {"cancel": []}


@app.get("/jupyter-sse/api/events")
async def events(request: Request) -> EventSourceResponse:
    check(request)
    q: asyncio.Queue = asyncio.Queue()
    queues.add(q)

    async def stream():
        try:
            for job in list(jobs.values()):
                yield {"event": "job", "data": json.dumps(job)}
            while True:
                yield await q.get()
        finally:
            queues.discard(q)

    return EventSourceResponse(stream(), ping=15)


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, backlog=4096)
