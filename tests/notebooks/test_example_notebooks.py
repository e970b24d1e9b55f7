"""Every example notebook in notebooks/, executed with nbclient against a real Jupyter server with the extension
and against the standalone hub, with jupyter_sse.testing's recorder checking the jobs it reported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from jupyter_sse.testing import NotebookRun, SSEHub, run_notebook_async
from tests.conftest import SSEServer

pytestmark = pytest.mark.timeout(120)

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"


def _outputs(run: NotebookRun) -> str:
    texts = []
    for cell in run.notebook.cells:
        for output in cell.get("outputs", ()):
            if output.output_type == "stream":
                texts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                texts.append(output.data.get("text/plain", ""))
    return "\n".join(texts)


def _basic_loop(run: NotebookRun) -> None:
    train = run.job("train")
    assert (train["state"], train["n"], train["total"]) == ("succeeded", 50, 50)
    # Live: the recorder saw it move, not only start and end.
    assert len({s["n"] for s in run.snapshots(train["id"])}) >= 3
    evaluate = run.job("evaluate")
    assert (evaluate["state"], evaluate["n"], evaluate["unit"]) == ("succeeded", 30, "batch")


def _nested_bars(run: NotebookRun) -> None:
    epochs = run.job("epochs")
    assert (epochs["state"], epochs["n"]) == ("succeeded", 3)
    for epoch in range(3):
        inner = run.job(f"epoch {epoch}")
        assert (inner["state"], inner["n"], inner["parent"]) == ("succeeded", 20, epochs["id"])


def _manual_job(run: NotebookRun) -> None:
    download = run.job("download")
    assert (download["state"], download["n"], download["total"]) == ("succeeded", 4, 4)
    assert download["message"] == "all files fetched"
    assert run.log(download["id"]) == [f"fetched 2024-0{i}.csv: 1,024 rows" for i in range(1, 5)]
    messages = {s["message"] for s in run.snapshots(download["id"])}
    assert any(m.startswith("fetching ") for m in messages), messages


def _failure(run: NotebookRun) -> None:
    flaky = run.job("flaky")
    assert (flaky["state"], flaky["n"]) == ("failed", 6)
    assert flaky["error"] == {"type": "ValueError", "message": "bad batch 6"}
    assert "the notebook goes on after the failure" in _outputs(run)


def _cancellation(run: NotebookRun) -> None:
    loop = run.job("long loop")
    assert loop["state"] == "cancelled"
    assert 10 <= loop["n"] < 10_000
    assert any(s["cancel_requested"] for s in run.snapshots(loop["id"]))
    assert "cancelled at step" in _outputs(run)


def _follow(run: NotebookRun) -> None:
    training = run.job("background training")
    assert (training["state"], training["n"]) == ("succeeded", 20)
    assert len(run.log(training["id"])) == 20
    assert "to the end: succeeded 20/20, last log line 'step 19 done'" in _outputs(run)


def _zero_code_change(run: NotebookRun) -> None:
    # the Trainer's own bar, captured by %load_ext: 2 epochs of 4 steps, with the epoch and metrics as message
    train = run.job("Trainer.train")
    assert (train["state"], train["n"], train["total"], train["unit"]) == ("succeeded", 8, 8, "steps")
    assert train["message"].startswith("epoch 2/2"), train["message"]
    evaluations = [job for job in run.jobs if job.get("name") == "Trainer.evaluate"]
    assert [(e["state"], e["parent"]) for e in evaluations] == [("succeeded", train["id"])] * 2, evaluations
    html = [o for c in run.notebook.cells for o in c.get("outputs", ()) if "text/html" in o.get("data", {})]
    assert html == [], "the Trainer's HTML bar is not shown"


CHECKS: dict[str, Callable[[NotebookRun], None]] = {
    "01-basic-loop.ipynb": _basic_loop,
    "02-nested-bars.ipynb": _nested_bars,
    "03-manual-job.ipynb": _manual_job,
    "04-failure.ipynb": _failure,
    "05-cancellation.ipynb": _cancellation,
    "06-follow.ipynb": _follow,
    "07-zero-code-change.ipynb": _zero_code_change,
}


def test_every_example_notebook_is_checked() -> None:
    mine = {path.name for path in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb")}
    assert mine == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_notebook_against_the_hub(name: str, sse_hub: SSEHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTER_TOKEN", raising=False)  # the hub's token is JUPYTER_SSE_TOKEN
    run = await sse_hub.run_notebook_async(NOTEBOOKS / name, kernel_name="python3")
    CHECKS[name](run)


@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_notebook_against_the_jupyter_server(
    name: str, sse_server: SSEServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kernels inherit JUPYTER_SSE_URL and the publish token from the extension; the notebooks that read or
    # cancel jobs need the server's own token, as a user's would.
    monkeypatch.setenv("JUPYTER_TOKEN", sse_server.token)
    run = await run_notebook_async(NOTEBOOKS / name, url=sse_server.url, token=sse_server.token, kernel_name="python3")
    CHECKS[name](run)
