"""The JobWidget's kernel side (opt-in since progress() shows the job's MIME bundle): the display bundle, the
final text, the bounded set of live widgets, versions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import jupyter_sse
from jupyter_sse import widget as widget_mod
from jupyter_sse.kernel import progress
from jupyter_sse.kernel import publisher as publisher_mod
from jupyter_sse.kernel.display import KernelDisplay, MimeDisplay, default_display, set_display_factory
from tests._display_fakes import FakeShell, Handle

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Jobs shown as WidgetDisplays, with IPython's display() recorded instead of sent."""
    import IPython.display

    out: list[dict[str, Any]] = []
    monkeypatch.setattr(IPython.display, "display", lambda data, raw, display_id: Handle(out, data))
    pub = publisher_mod.configure(None)
    set_display_factory(lambda job: widget_mod.WidgetDisplay(FakeShell()))
    yield out
    set_display_factory(None)
    pub.close()
    for w in widget_mod.live_widgets():
        w.close()
    widget_mod._live.clear()


def test_display_bundle_has_the_widget_view_and_a_text_line(shown: list[dict[str, Any]]) -> None:
    bar = progress(range(3), desc="train")
    for _ in bar:
        pass
    first = shown[0]["display"]
    view = first[widget_mod.WIDGET_MIME]
    assert view["version_major"] == 2 and view["version_minor"] == 0
    w = widget_mod.live_widgets()[-1]
    assert view["model_id"] == w.model_id
    assert w.job_id == bar.job_id
    assert first["text/plain"].startswith("train:   0%|")


def test_final_update_replaces_the_text_and_keeps_the_view(shown: list[dict[str, Any]]) -> None:
    for _ in progress(range(4), desc="t"):
        pass
    assert len(shown) == 2  # one display at the start, one update at the end: nothing per iteration
    final = shown[1]["update"]
    assert final["text/plain"].startswith("t: 100%|") and final["text/plain"].endswith(" succeeded")
    assert final[widget_mod.WIDGET_MIME] == shown[0]["display"][widget_mod.WIDGET_MIME]


def test_failed_loop_text_names_the_error(shown: list[dict[str, Any]]) -> None:
    bar: Any
    with pytest.raises(ValueError), progress(total=5, desc="f") as bar:
        bar.update(2)
        raise ValueError("disk full")
    assert shown[-1]["update"]["text/plain"].endswith(" failed: ValueError: disk full")


def test_leave_false_drops_the_view_and_closes_the_model(shown: list[dict[str, Any]]) -> None:
    for _ in progress(range(2), leave=False):
        pass
    assert shown[-1]["update"] == {"text/plain": ""}
    assert widget_mod.live_widgets() == []


def test_live_widgets_are_bounded_and_the_oldest_closed(
    shown: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(widget_mod, "MAX_LIVE_WIDGETS", 3)
    bars = [progress(range(1), desc=f"b{i}") for i in range(5)]
    for bar in bars[:3]:
        list(bar)
    first_two = widget_mod.live_widgets()[:2]
    for bar in bars[3:]:
        list(bar)
    live = widget_mod.live_widgets()
    assert [w.job_id for w in live] == [b.job_id for b in bars[2:]]
    assert all(w.comm is None for w in first_two)  # closed: ipywidgets dropped their comms
    assert all(w.comm is not None for w in live)


def test_widget_display_is_opt_in_and_only_when_jobs_are_published(monkeypatch: pytest.MonkeyPatch) -> None:
    """progress() shows the MIME bundle by default; set_display_factory(widget_display_factory) picks JobWidgets,
    but only where the view can show anything (jobs published), else the default display."""
    import jupyter_sse.kernel.context as context_mod
    import jupyter_sse.kernel.display as display_mod

    for mod in (display_mod, widget_mod):
        monkeypatch.setattr(mod, "ipython_shell", lambda: FakeShell())
        monkeypatch.setattr(mod, "is_kernel_shell", lambda shell: True)
    monkeypatch.setattr(context_mod, "ipython_shell", lambda: FakeShell())
    job = progress(range(1))._job
    assert job is not None
    pub = publisher_mod.configure(None)
    try:
        assert isinstance(default_display(job), KernelDisplay)  # no server: the text bar, updated by the kernel
        assert isinstance(widget_mod.widget_display_factory(job), KernelDisplay)
    finally:
        pub.close()
    pub = publisher_mod.configure("http://127.0.0.1:9/", "t")
    try:
        assert isinstance(default_display(job), MimeDisplay)  # the default: the job's MIME bundle, no widget
        chosen = widget_mod.widget_display_factory(job)
        assert isinstance(chosen, widget_mod.WidgetDisplay)
        assert chosen.live_interval is None  # no per-update messages from the kernel
    finally:
        pub.close()
        publisher_mod.configure(None).close()
        for w in widget_mod.live_widgets():
            w.close()
        widget_mod._live.clear()


def test_jobwidget_composes_in_ipywidgets_layouts() -> None:
    import ipywidgets

    w = widget_mod.JobWidget(job_id="abc")
    box = ipywidgets.VBox([ipywidgets.Label("training"), w])
    try:
        state = w.get_state()
        assert state["job_id"] == "abc" and state["_view_name"] == "JobWidgetView"
        assert box.children[1] is w
    finally:
        box.close()
        w.close()


def test_model_and_view_names_match_the_labextension() -> None:
    w = widget_mod.JobWidget(job_id="abc")
    try:
        package = json.loads((ROOT / "labextension" / "package.json").read_text())
        assert w._model_module == w._view_module == package["name"] == "jupyter-sse"
        assert w._model_name == "JobWidgetModel" and w._view_name == "JobWidgetView"
        assert w._model_module_version == f"^{package['version']}"
    finally:
        w.close()


def test_one_version_for_python_npm_and_the_registered_module() -> None:
    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    version_ts = (ROOT / "labextension" / "src" / "version.ts").read_text()
    assert package["version"] == jupyter_sse.__version__
    assert f"MODULE_VERSION = '{jupyter_sse.__version__}'" in version_ts


def test_jobwidget_is_exported_lazily() -> None:
    assert jupyter_sse.JobWidget is widget_mod.JobWidget
