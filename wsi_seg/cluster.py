"""dask.distributed clients for ``--scheduler ADDRESS`` and ``--cluster local:N``.

Tiling and prediction send their tasks to the client handed out by
:func:`dask_client`: either a running scheduler reached at an address (its workers
must see the same files as this machine, under the same paths), or a cluster of
worker processes started on this machine for the length of the command (one thread
each, listening on the loopback interface only) and closed at the end.

Tasks carry paths and plain options, never open files or loaded models, so the
same work runs on local processes or on the machines of a cluster.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

from wsi_seg.errors import InputError, WsiSegError

#: How long connecting to a scheduler may take before the command gives up.
CONNECT_TIMEOUT_S = 10
#: The form of ``--cluster``.
CLUSTER_FORM = "local:N"


def parse_cluster(spec: str) -> int:
    """The number of worker processes in ``local:N`` (``local`` alone: one per CPU core)."""
    kind, _, count = str(spec).strip().partition(":")
    if kind != "local":
        raise InputError(f"--cluster {spec}: expected {CLUSTER_FORM} (N worker processes on this machine)")
    if not count:
        return max(1, os.cpu_count() or 1)
    try:
        workers = int(count)
    except ValueError:
        raise InputError(f"--cluster {spec}: N in {CLUSTER_FORM} must be a whole number") from None
    if not 1 <= workers <= 512:
        raise InputError(f"--cluster {spec}: N in {CLUSTER_FORM} must be in [1, 512]")
    return workers


def connect(address: str):
    """A client of the scheduler at ``address``, or an :class:`InputError` within about
    :data:`CONNECT_TIMEOUT_S` seconds when nothing answers there."""
    from distributed import Client

    try:
        return Client(str(address), timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"--scheduler {address}: cannot connect to a dask scheduler ({detail})") from None


def start_local_cluster(workers: int):
    """``(cluster, client)``: ``workers`` processes of one thread each on 127.0.0.1, no dashboard
    (the scheduler's small HTTP endpoint takes a free loopback port, not 8787)."""
    from distributed import Client, LocalCluster

    try:
        cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None,
                               scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    except Exception as exc:  # ports, process start-up: report in one line
        raise WsiSegError(f"--cluster local:{workers}: cannot start the worker processes "
                          f"({type(exc).__name__}: {exc})") from None
    try:
        return cluster, Client(cluster)
    except BaseException:
        cluster.close()
        raise


@contextmanager
def dask_client(scheduler: Any = None, cluster: str | None = None) -> Iterator[Any]:
    """The ``distributed.Client`` to run on, or ``None`` for the local scheduler.

    ``scheduler`` is ``None``, a scheduler address (``tcp://HOST:8786``) or a
    ``Client`` (used as given, not closed); ``cluster`` is ``local:N``. A client this
    function made, and the cluster it started, are closed on exit.
    """
    if scheduler is not None and cluster is not None:
        raise InputError("give --scheduler or --cluster, not both")
    if cluster is not None:
        local, client = start_local_cluster(parse_cluster(cluster))
        try:
            yield client
        finally:
            client.close()
            local.close()
        return
    if scheduler is None:
        yield None
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    client = connect(scheduler)
    try:
        yield client
    finally:
        client.close()
