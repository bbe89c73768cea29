"""One process at a time in a directory that is built once and then reused: a feature cache,
a pre-training run, a scanned corpus. The lock is ``fcntl.flock`` on ``.<name>.lock`` beside
the directory, so it is released when its holder exits, killed or not."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from speechssl import distributed as dist


@contextmanager
def locked(directory: str | Path, waiting: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` for the body; another process (a second seed
    of a cell, a sweep's parallel job) blocks here until the holder leaves, then finds what
    the holder left. ``waiting`` is printed once when this process has to wait.

    Under torchrun rank 0 alone takes it (the other ranks pass through): the caller makes
    them follow rank 0, through ``distributed.main_first`` or a broadcast of what rank 0
    decided under the lock, so another job waits for the whole of this one."""
    if not dist.is_main():
        yield
        return
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting:
                print(waiting, flush=True)
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
