"""``c.SSEExtension.capture_progress = True``: every IPython kernel the server starts captures the libraries'
bars from its first cell, with nothing in the notebook; and without any server (nbclient, as papermill runs
notebooks) a captured bar leaves one readable final text line in the saved notebook."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import SSEServer
from tests.integration._capture import foreign_displays, job_displays, settled
from tests.integration.conftest import KernelSession, errors

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def jp_server_config(jp_server_config: dict[str, Any]) -> dict[str, Any]:
    jp_server_config["SSEExtension"]["capture_progress"] = True
    return jp_server_config


async def test_server_setting_captures_in_every_kernel(sse_server: SSEServer, kernel: KernelSession) -> None:
    messages = await kernel.execute(
        "import sys\n"
        "assert 'jupyter_sse' in get_ipython().extension_manager.loaded\n"
        "assert 'joblib' not in sys.modules and 'dask' not in sys.modules\n"
        "from tqdm.auto import tqdm\n"
        "for i in tqdm(range(7), desc='from config'):\n"
        "    pass\n"
    )
    assert errors(messages) == []
    job = (await settled(sse_server, ["from config"]))["from config"]
    assert (job["state"], job["n"], job["total"]) == ("succeeded", 7, 7)
    assert job_displays(messages) == {job["id"]}
    assert foreign_displays(messages) == []


def test_without_a_server_a_captured_bar_leaves_one_final_text_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUPYTER_SSE_URL", raising=False)
    monkeypatch.delenv("JUPYTER_SSE_TOKEN", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_sse"),
        nbformat.v4.new_code_cell(
            "import time\nfrom tqdm.auto import tqdm\nfor i in tqdm(range(20), desc='headless capture'):\n"
            "    time.sleep(0.02)"
        ),
    ]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    outputs = nb.cells[1].outputs
    texts = [o.get("text", "") if o.output_type == "stream" else o.data.get("text/plain", "") for o in outputs]
    lines = [line for text in texts for line in text.splitlines() if "headless capture" in line]
    assert len(lines) == 1, outputs
    assert "20/20" in lines[0] and "succeeded" in lines[0], lines
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
