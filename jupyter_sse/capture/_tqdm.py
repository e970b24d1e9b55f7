"""tqdm in every form (``tqdm``, ``tqdm.auto``, ``tqdm.notebook``, ``tqdm.asyncio``, ``tqdm.contrib``, and the
libraries' own subclasses such as ``huggingface_hub.utils.tqdm`` or ``datasets.utils.tqdm``) published as jobs.

Libraries hold their own reference to the class they imported (``from tqdm.auto import tqdm``), so swapping
module attributes would miss every library imported before. Every tqdm class, however it was reached, is built
by ``tqdm.std.tqdm.__new__``: that one function is patched. For a class ``C`` it returns an instance of a
subclass made once per class, ``Captured(C)``, whose MRO is::

    Captured(C) -> _Front -> jupyter_sse.tqdm -> ... -> _Std -> C -> ... -> tqdm.std.tqdm

so the bar is still an instance of ``C`` (``isinstance`` checks, ``C``'s own ``__init__`` such as Hugging
Face's ``name=``/disable logic keep working), the job machinery of ``jupyter_sse.tqdm`` runs first, and
``_Std`` puts tqdm.std's terminal-free behaviour ahead of ``tqdm.notebook``'s widget code, which never runs
(its ``__init__`` is told ``display=False`` and gets no widget). The cell shows the job's bar only.

The GUI flavours (``tqdm.gui``, ``tqdm.tk``, ``tqdm.rich``) and the chat notifiers of ``tqdm.contrib`` are left
alone: they are other displays the user chose, not the notebook's bar.
"""

from __future__ import annotations

import sys
import threading
from types import ModuleType
from typing import Any

from ._patch import Patches

__all__ = ["install", "uninstall"]

_LEFT_ALONE = (
    "tqdm.gui",
    "tqdm.tk",
    "tqdm.rich",
    "tqdm.contrib.telegram",
    "tqdm.contrib.discord",
    "tqdm.contrib.slack",
)

_patches = Patches()
_classes: dict[type, type] = {}
_lock = threading.Lock()
_ours: Any = None  # jupyter_sse.tqdm, imported with the first captured bar
_front: Any = None
_std: Any = None


class _Nothing:
    """What tqdm's ``status_printer`` returns here: the std printer (a callable) and the notebook container
    (an object that takes attributes) in one, drawing nothing."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        return None


def _make_bases() -> None:
    global _ours, _front, _std
    from tqdm.std import tqdm as std_tqdm

    from ..kernel._tqdm import tqdm as ours

    class _Std(std_tqdm):  # type: ignore[misc]
        """tqdm.std's own methods, ahead of a subclass's display code (tqdm.notebook's widget)."""

        __iter__ = std_tqdm.__iter__
        update = std_tqdm.update
        close = std_tqdm.close
        reset = std_tqdm.reset
        clear = std_tqdm.clear

    class _Front(ours):
        """Where a captured class differs from ``jupyter_sse.tqdm``: tqdm.notebook's signatures."""

        colour: Any = None  # tqdm.notebook's property would paint a widget that does not exist

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if type(self)._jupyter_sse_notebook:
                kwargs["display"] = False
            super().__init__(*args, **kwargs)

        @staticmethod
        def status_printer(*args: Any, **kwargs: Any) -> Any:
            return _Nothing()

        def display(self, msg: str | None = None, pos: int | None = None, **kwargs: Any) -> bool:
            return ours.display(self, msg, pos)

    _ours, _front, _std = ours, _Front, _Std


def captured(cls: type) -> type:
    """The captured subclass of tqdm class ``cls`` (made once)."""
    made = _classes.get(cls)
    if made is not None:
        return made
    with _lock:
        made = _classes.get(cls)
        if made is None:
            if _front is None:
                _make_bases()
            notebook = sys.modules.get("tqdm.notebook")
            ns = {
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
                "_jupyter_sse_notebook": notebook is not None and issubclass(cls, notebook.tqdm_notebook),
            }
            made = type(cls.__name__, (_front, _std, cls), ns)
            _classes[cls] = made
    return made


def _capturable(cls: type) -> bool:
    if _ours is not None and issubclass(cls, _ours):
        return False  # ours, or already captured
    return not any(getattr(base, "__module__", "") in _LEFT_ALONE for base in cls.__mro__)


def _patch_std(module: ModuleType) -> None:
    std_tqdm = module.tqdm
    new = std_tqdm.__new__  # the plain function (tqdm's __new__ takes the class first)

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        try:
            if _capturable(cls):
                cls = captured(cls)
        except Exception:  # never break the library's bar: the original class draws as it always did
            pass
        return new(cls, *args, **kwargs)

    _patches.set(std_tqdm, "__new__", staticmethod(__new__))


def install() -> None:
    from ._hooks import on_import

    on_import("tqdm.std", _patch_std)


def uninstall() -> None:
    """Bars made from now on are tqdm's again; captured bars already running stay jobs until they end."""
    _patches.restore()
