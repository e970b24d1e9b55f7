"""The README's picture of a notification: the real mail a hub user's SMTP server received and the real webhook
body another user's endpoint received, rendered in headless Chromium. Each shows that user's jobs only."""

from __future__ import annotations

import html
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jupyter_sse.hub import BackgroundHub, UsersFile
from tests._notify_targets import HTTPSink, SMTPSink, _wait

pytestmark = [pytest.mark.timeout(90), pytest.mark.browser]

CHROMIUM = os.environ.get("JUPYTER_SSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking"]
CHROMIUM_ARGS += ["--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
DOCS_IMAGE = ROOT / "docs" / "images" / "notify.png"
API = "jupyter-sse/api/"

_PAGE = """<!doctype html><meta charset="utf-8"><style>
body {{ font: 14px system-ui, sans-serif; margin: 0; padding: 16px; background: #eef1f4; display: flex; gap: 16px;
        align-items: flex-start; }}
section {{ background: #fff; border: 1px solid #ccd3da; border-radius: 6px; width: 560px; overflow: hidden; }}
h2 {{ font-size: 13px; color: #57606a; margin: 0;
      padding: 8px 12px; background: #f6f8fa; border-bottom: 1px solid #ccd3da; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: 2px 10px; margin: 10px 12px; }}
dt {{ color: #57606a; }} dd {{ margin: 0; }} .subject {{ font-weight: 600; }}
pre {{ margin: 0; padding: 10px 12px; border-top: 1px solid #eaeef2; white-space: pre-wrap; font-size: 12.5px; }}
</style>
<section id="mail"><h2>alice's mail (mailto://, received by an SMTP server)</h2>
<dl><dt>From</dt><dd>{sender}</dd><dt>To</dt><dd>{to}</dd><dt>Subject</dt><dd class="subject">{subject}</dd></dl>
<pre>{text}</pre></section>
<section id="hook"><h2>bob's webhook (json://, the POSTed body)</h2><pre>{hook}</pre></section>
"""


@pytest.fixture(autouse=True)
def jp_server_cleanup() -> Iterator[None]:
    # pytest-jupyter's autouse cleanup runs an event loop that Playwright's sync API would find running
    yield


def _post(hub: BackgroundHub, token: str, jobs: list[dict[str, Any]]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    response = httpx.post(hub.url + API + "updates", json={"jobs": jobs}, headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def test_a_users_mail_and_anothers_webhook_rendered(tmp_path: Path, smtp_sink: SMTPSink, http_sink: HTTPSink) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no chromium at {CHROMIUM}: run scripts/ensure-chromium (make test does)", pytrace=False)
    users = UsersFile(tmp_path / "users.json")
    tokens = {"alice": users.add("alice"), "bob": users.add("bob")}
    where = {"path": "experiments/train.ipynb", "cell_id": "5f1c2a"}
    with BackgroundHub(users=users.path) as hub:
        for name, url in (("alice", smtp_sink.url("alice@example.org")), ("bob", http_sink.url("bob"))):
            settings = {"urls": [url], "window": 0.5}  # the hub's minimum duration: a minute
            headers = {"Authorization": f"Bearer {tokens[name]}"}
            assert httpx.put(hub.url + API + "notify", json=settings, headers=headers, timeout=10).is_success
        _post(
            hub,
            tokens["alice"],
            [{"id": "train", "name": "train resnet", "total": 30, "unit": "epoch", **where}, {"id": "eval"}],
        )
        _post(hub, tokens["bob"], [{"id": "sweep", "name": "lr sweep", "total": 12, "unit": "run"}])
        _post(
            hub,
            tokens["alice"],
            [
                {"id": "train", "state": "succeeded", "n": 30, "elapsed": 1834},
                {"id": "eval", "name": "evaluate", "state": "failed", "n": 412, "total": 1000, "unit": "batch",
                 "elapsed": 95, "error": {"type": "RuntimeError", "message": "CUDA out of memory"},
                 "path": "experiments/eval.ipynb", "cell_id": "9b07e1"},
            ],
        )  # fmt: skip
        _post(hub, tokens["bob"], [{"id": "sweep", "state": "cancelled", "n": 7, "elapsed": 4210}])
        (mail,) = smtp_sink.wait_for(1)
        (hook,) = http_sink.wait_for(1)
        _wait(lambda: hub.broker.metrics.notifications_sent == 2, 10, "both messages counted")
    assert mail.subject == "2 jobs ended: 1 succeeded, 1 failed"
    assert "lr sweep" not in mail.text and "train resnet" not in hook["message"]
    page_html = _PAGE.format(
        sender=html.escape(mail.sender),
        to=html.escape(mail.to),
        subject=html.escape(mail.subject),
        text=html.escape(mail.text.strip()),
        hook=html.escape(json.dumps(hook, indent=2)),
    )
    artifacts = ROOT / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "notify.png"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1170, "height": 400}, device_scale_factor=1)
            page.set_content(page_html)
            shown = page.locator("#mail pre").inner_text()
            assert "evaluate: failed after 1 min 35 s (412/1,000 batch)" in shown
            assert "error: RuntimeError: CUDA out of memory" in shown
            assert "train resnet: succeeded after 30 min 34 s (30/30 epoch)" in shown
            assert "notebook: experiments/train.ipynb, cell 5f1c2a" in shown
            assert '"title": "lr sweep cancelled after 1 h 10 min"' in page.locator("#hook pre").inner_text()
            box = page.locator("body").bounding_box()
            assert box is not None
            tallest = max(page.locator(f"#{one}").bounding_box()["height"] for one in ("mail", "hook"))  # type: ignore[index]
            page.screenshot(path=str(shot), clip={"x": 0, "y": 0, "width": box["width"], "height": tallest + 32})
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    # A test run never changes a committed file unless asked: JUPYTER_SSE_UPDATE_DOCS_IMAGES=1 refreshes it.
    if os.environ.get("JUPYTER_SSE_UPDATE_DOCS_IMAGES") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, DOCS_IMAGE)
