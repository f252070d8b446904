"""Simulator worker processes that never re-run the user's script.

Once TensorFlow is imported a process must not be forked (its threads would be copied in an
unknown state), so workers are started with ``spawn``. A spawned child normally re-imports the
parent's ``__main__``: a notebook-style script without an ``if __name__ == "__main__":`` guard
(``import deeplense_tf as dl; dl.train(...)``) then runs again in every worker, which tries to
start workers of its own and dies with ``BrokenProcessPool``. The workers here run only
functions of this package, which they import by name, so each is started with the parent's
``__main__`` hidden: the child imports nothing of the script.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import os
import sys
import threading
import types
from concurrent.futures import ProcessPoolExecutor

_MAIN_LOCK = threading.Lock()


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@contextlib.contextmanager
def _hidden_main():
    """``__main__`` is an empty module while a child is being started (spawn reads it then)."""
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


class ScriptFreeProcess(multiprocessing.context.SpawnProcess):
    """A spawned process that does not import the parent's ``__main__``."""

    def start(self):
        with _hidden_main():
            super().start()


class ScriptFreeSpawnContext(multiprocessing.context.SpawnContext):
    Process = ScriptFreeProcess


def pool_context() -> multiprocessing.context.BaseContext:
    """fork where it is safe (fast: renderers built in the parent are inherited), else script-free spawn."""
    if "tensorflow" in sys.modules or os.name != "posix":
        return ScriptFreeSpawnContext()
    return multiprocessing.get_context("fork")


def process_pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=pool_context())
