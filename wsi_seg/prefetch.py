"""Ordered, bounded read-ahead on a thread pool.

Slide reading (OpenSlide, tifffile) and most numpy work release the GIL, so a
few threads overlap I/O and decoding with the consumer's work. Results come
back in input order and at most ``ahead`` are in flight, so memory stays bounded.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], *, threads: int = 2, ahead: int = 4) -> Iterator[R]:
    """``map(fn, items)`` computed on ``threads`` threads, in order, ``ahead`` at most in flight.

    Closing the generator early cancels what has not started; an exception in
    ``fn`` is raised when its result is reached.
    """
    ahead = max(1, ahead)
    with ThreadPoolExecutor(max(1, threads), thread_name_prefix="wsi-seg") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
