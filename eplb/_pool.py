"""Worker processes that stop with their parent.

:func:`process_pool` is a ``ProcessPoolExecutor`` (spawn start method: safe next to threads and
alike on every platform) whose workers ignore SIGINT, so that Ctrl-C at a terminal, which reaches
the whole process group, interrupts only the parent. When the ``with`` block ends by an exception
(KeyboardInterrupt included) the queued work is cancelled and the workers are terminated at once
instead of being waited for.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor

__all__ = ["process_pool", "usable_cpus"]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity on Linux, else all of the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def process_pool(workers: int):
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_ignore_sigint)
    try:
        yield pool
    except BaseException:
        procs = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        raise
    pool.shutdown(wait=True)
