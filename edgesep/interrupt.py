"""Ctrl-C, SIGTERM and SIGHUP: one path, raised as KeyboardInterrupt in the main thread.

Ground floor (imports nothing of edgesep). A signal's exception can land inside a garbage-collection
callback, where Python reports it as "ignored" and carries on; so the handler also records the signal and
:func:`checkpoint`, called at every progress step, raises it again until it has propagated.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_pending: list[int] = []


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP as a KeyboardInterrupt, so every ``finally`` and cleanup runs as for Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def _handler(signum: int, frame: Any) -> None:
    _pending.append(signum)
    raise Signalled(signum)


def _unraisable(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """An unraisable hook that keeps quiet about our own swallowed signal (checkpoint raises it again)."""

    def quiet(info: Any) -> None:
        if not isinstance(info.exc_value, Signalled):
            hook(info)

    return quiet


def install() -> dict[Any, Any]:
    """Route SIGTERM and SIGHUP to :class:`Signalled` (main thread only); returns what it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    _pending.clear()
    previous: dict[Any, Any] = {signum: signal.signal(signum, _handler) for signum in HANDLED}
    previous["unraisablehook"] = sys.unraisablehook
    sys.unraisablehook = _unraisable(sys.unraisablehook)
    return previous


def restore(previous: dict[Any, Any]) -> None:
    """Put back the handlers and hook :func:`install` replaced; forget pending signals."""
    for key, handler in previous.items():
        if key == "unraisablehook":
            sys.unraisablehook = handler
        else:
            signal.signal(key, handler)
    _pending.clear()


def checkpoint() -> None:
    """Raise :class:`Signalled` again if a signal arrived whose exception was swallowed on the way."""
    if _pending and threading.current_thread() is threading.main_thread():
        raise Signalled(_pending[0])


def checked(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` preceded by :func:`checkpoint` (for progress callbacks)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        checkpoint()
        return callback(*args, **kwargs)

    return wrapped
