"""Stopping on Ctrl-C and SIGTERM. Each raises where the process stands (KeyboardInterrupt, `Terminated`) and is
also recorded: Python drops an exception raised inside a finalizer (it prints "Exception ignored in ..." and goes
on), so a signal that lands there would be lost and a run would go on; the training loop (between steps), the
table-scoring job (between chunks) and corpus preparation (between parts) call `raise_if_signalled()` to stop on
such a one."""

from __future__ import annotations

import signal
import threading


class Terminated(BaseException):
    """SIGTERM (kill, timeout, a scheduler's preemption), raised where the process stands so that a run stops as
    it does on Ctrl-C: its folder left as the run rules say, one line naming what is left."""


_received: list[int] = []  # signals whose exception has not yet been seen to stop this process


def _stop(signum: int, frame) -> None:
    _received.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def stop_on_signals() -> None:
    """SIGTERM stops a command as Ctrl-C does; and Ctrl-C works in a background job (`cmd &` in a script), whose
    shell starts it with SIGINT ignored. Only the main thread may set handlers; elsewhere this does nothing."""
    if threading.current_thread() is threading.main_thread():
        _received.clear()
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)


def raise_if_signalled() -> None:
    """Raise what a signal received since the handlers were set raised, once more. Called where that exception
    would already have ended what is running (between training steps, scored chunks, prepared parts), so it finds
    one only if Python dropped it."""
    if _received:
        signum = _received[-1]
        _received.clear()
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
