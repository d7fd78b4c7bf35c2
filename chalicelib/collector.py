"""Python's cyclic garbage collector paused around a bounded, allocation-heavy computation.

A replay of 10,000 orders (the plan simulator) allocates a few hundred thousand short-lived
objects. Reference counting frees each of them as soon as it is dropped, but their allocation
alone keeps triggering the cyclic collector, and its full collections walk every live object of
the process (modules, botocore's service models, PynamoDB's): measured on the simulator's
benchmark, a quarter of the replay's time went there. While paused, nothing is lost: objects in
reference cycles made meanwhile wait for the first collection after the pause.

Pauses nest and may overlap across threads (the local server runs requests on threads): the
collector runs again when the last pause ends, and only if it was running when the first began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_pauses = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    """The cyclic collector off for the block (reference counting still frees everything else)."""
    global _pauses, _was_enabled
    with _lock:
        if _pauses == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _lock:
            _pauses -= 1
            if _pauses == 0 and _was_enabled:
                gc.enable()
