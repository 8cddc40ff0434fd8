"""Helpers for code running in thread workers."""

from __future__ import annotations

import time

from textual.worker import get_current_worker


def wait_cancellable(seconds: float) -> bool:
    """Sleep in short slices; False as soon as the current worker is cancelled (so quitting never waits)."""
    worker = get_current_worker()
    deadline = time.monotonic() + seconds
    while not worker.is_cancelled:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(0.05, left))
    return False
