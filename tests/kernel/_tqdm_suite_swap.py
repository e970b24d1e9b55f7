"""A pytest plugin for running tqdm's own test suite against ``jupyter_sse.tqdm``: loaded with ``-p`` before the
suite's modules import tqdm, it puts our class wherever those tests (and the helpers they call) take tqdm's.

- ``tqdm.tqdm``/``tqdm.trange`` (what ``from tqdm import tqdm`` gives the tests and their conftest), the names of
  ``tqdm.asyncio`` and ``tqdm.auto``, and the ``tqdm_class`` defaults of ``tqdm.contrib``'s helpers (bound when
  those functions were defined, so they are swapped in their defaults).
- ``tqdm.std.tqdm`` stays tqdm's own: our class is built on it, and the suite imports only helpers (``EMA``,
  ``Bar``) from there.
- Coroutine tests (tqdm marks them ``asyncio`` for pytest-asyncio) run in a fresh event loop, so the suite needs
  no pytest-asyncio here.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from typing import Any

import pytest
import tqdm
import tqdm.asyncio
import tqdm.auto
import tqdm.contrib
import tqdm.contrib.concurrent
import tqdm.contrib.itertools
import tqdm.contrib.logging

import jupyter_sse
from jupyter_sse.kernel.publisher import configure

configure(None)  # no server: the jobs are tracked in this process only
ours, our_trange = jupyter_sse.tqdm, jupyter_sse.trange
theirs = {tqdm.std.tqdm, tqdm.asyncio.tqdm_asyncio, tqdm.auto.tqdm}

tqdm.tqdm = ours
tqdm.trange = our_trange
tqdm.asyncio.tqdm = tqdm.asyncio.tqdm_asyncio = ours
tqdm.asyncio.trange = tqdm.asyncio.tarange = our_trange
tqdm.auto.tqdm = ours
tqdm.auto.trange = our_trange
for name in ("tqdm.contrib", "tqdm.contrib.concurrent", "tqdm.contrib.itertools", "tqdm.contrib.logging"):
    module = importlib.import_module(name)
    for value in vars(module).values():
        if inspect.isfunction(value) and value.__module__ == name:
            if value.__defaults__:
                value.__defaults__ = tuple(ours if d in theirs else d for d in value.__defaults__)
            if value.__kwdefaults__:
                value.__kwdefaults__ = {k: ours if d in theirs else d for k, d in value.__kwdefaults__.items()}
tqdm.contrib.concurrent.tqdm_auto = ours  # read at call time: kwargs.pop("tqdm_class", tqdm_auto)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("asyncio_default_fixture_loop_scope", "pytest-asyncio's option in tqdm's config; unused here")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "asyncio: a coroutine test (run by this plugin)")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None
    args: dict[str, Any] = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(func(**args))
    return True
