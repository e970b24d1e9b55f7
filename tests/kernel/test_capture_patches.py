"""The capture's patches, in fresh Python processes: enabling imports none of the libraries (each is patched
when it is imported, before the importer gets it), disabling puts back every attribute exactly as it was, and
enabling again works. Each case runs in its own interpreter so that sys.modules starts clean."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

LIBRARIES = ("tqdm", "joblib", "dask", "distributed", "transformers", "keras", "lightning", "torch", "datasets")


def _run(code: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": "torch", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("JUPYTER_SSE_URL", None)
    env.pop("JUPYTER_SSE_CAPTURE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_enable_imports_no_library() -> None:
    out = _run(
        "import sys, time\n"
        "import jupyter_sse\n"
        "t = time.perf_counter()\n"
        "jupyter_sse.load_ipython_extension(None)\n"
        "print('ms', (time.perf_counter() - t) * 1000)\n"
        f"print(sorted(m for m in {LIBRARIES!r} if m in sys.modules))\n"
    )
    assert out.splitlines()[1] == "[]", out


PATCHED = """
import importlib, sys
WHERE = {
    'tqdm.std': [('tqdm', '__new__')],
    'joblib.parallel': [('Parallel', '_get_outputs'), ('Parallel', '_get_sequential_output'),
                        ('Parallel', 'print_progress')],
    'distributed.client': [('Client', 'gather')],
    'transformers.utils.notebook': [('NotebookProgressCallback', 'on_train_begin'),
                                    ('NotebookProgressCallback', 'on_step_end')],
    'transformers.trainer': [('Trainer', 'train')],
    'keras.src.callbacks.progbar_logger': [('ProgbarLogger', 'on_train_batch_end'),
                                           ('ProgbarLogger', 'on_train_end')],
    'keras.src.models.model': [('Model', 'fit')],
    'lightning.pytorch.callbacks.progress.rich_progress': [('RichProgressBar', 'on_train_batch_end'),
                                                           ('RichProgressBar', 'teardown')],
    'lightning.pytorch.callbacks.progress.tqdm_progress': [('TQDMProgressBar', 'on_train_batch_end')],
}
def state():
    out = {}
    for module, attrs in WHERE.items():
        mod = sys.modules[module]
        for cls, name in attrs:
            owner = getattr(mod, cls)
            out[module, cls, name] = vars(owner).get(name, 'MISSING')
    import dask.callbacks
    out['dask'] = frozenset(dask.callbacks.Callback.active)
    return out
"""


@pytest.mark.parametrize("imported", ["before", "after"])
def test_disable_restores_every_attribute_and_enable_again_patches(imported: str) -> None:
    load = "for module in WHERE: importlib.import_module(module)\nimport dask.callbacks\n"
    out = _run(
        PATCHED
        + "import jupyter_sse\n"
        + (load + "original = state()\njupyter_sse.load_ipython_extension(None)\n" if imported == "before" else "")
        + (
            "jupyter_sse.load_ipython_extension(None)\n" + load + "patched = state()\n"
            "jupyter_sse.unload_ipython_extension(None)\noriginal = state()\n"
            if imported == "after"
            else "patched = state()\n"
        )
        + "changed = sorted(str(k) for k in original if original[k] != patched[k])\n"
        "print(len(changed), len(original))\n"
        "jupyter_sse.unload_ipython_extension(None)\n"
        "assert state() == original, [k for k in original if state()[k] != original[k]]\n"
        "jupyter_sse.load_ipython_extension(None)\n"
        "again = state()\nassert all(again[k] != original[k] for k in original), 'enabled again'\n"
        "jupyter_sse.unload_ipython_extension(None)\n"
        "assert state() == original\n"
    )
    changed, total = out.split()[-2:]
    assert changed == total, out  # every watched attribute was patched, and is back
