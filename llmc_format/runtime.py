"""Facts of the running process the rest of the package sizes its work by."""

from __future__ import annotations

import os


def default_jobs() -> int:
    """Usable cores of this process (its CPU affinity, not the machine's core count): the
    default worker count of pack, unpack and the exact codec's thread pool."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
