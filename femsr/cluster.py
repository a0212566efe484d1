"""Independent tasks on a Dask cluster: a local one of worker processes, or one that is running.

femsr's long work splits into independent pieces (a femur to grow, an image to reconstruct),
each of which writes its own result atomically and resumes from its own checkpoints. So a
task that fails, or whose worker dies, costs only its own unfinished part: rerunning the same
command finishes it. :func:`client` starts a ``dask.distributed`` ``LocalCluster`` (one process
per worker) or connects to a scheduler the user runs (``dask-jobqueue`` on SLURM or PBS,
Kubernetes...); :func:`run` maps a function over the pieces on it. Each task limits the thread
pools of OpenMP and BLAS to the worker's threads (``threadpoolctl``), so N workers of one
thread use N cores, not N times all of them.

Needs the ``femsr[cluster]`` extra (``dask[distributed]``, ``threadpoolctl``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["client", "run"]

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _need_dask() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise ImportError(
            "running on a Dask cluster needs dask.distributed: pip install 'femsr[cluster]'"
        ) from error
    return distributed


@contextlib.contextmanager
def client(
    workers: int | None = None, *, scheduler: str | None = None, threads: int = 1
) -> Iterator[Any]:
    """A ``dask.distributed.Client``, closed (and its local cluster stopped) on exit.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a new ``LocalCluster`` (each with ``threads`` threads, and
        ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS`` set to that
        before it starts). Ignored with ``scheduler``.
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:8786``) to join instead.
    threads : int
        Threads per worker of a local cluster.

    Raises
    ------
    ValueError
        If neither ``workers`` (>= 1) nor ``scheduler`` is given, or ``threads`` < 1.
    """
    distributed = _need_dask()
    if scheduler is not None:
        with distributed.Client(scheduler) as joined:
            yield joined
        return
    if workers is None or workers < 1 or threads < 1:
        raise ValueError(f"need workers >= 1 and threads >= 1, got {workers} and {threads}")
    env = {name: str(threads) for name in _THREAD_VARIABLES}
    with (
        distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=":0",  # a free port: several clusters may run side by side
            env=env,
        ) as cluster,
        distributed.Client(cluster) as local,
    ):
        yield local


def _limited(function: Callable[..., Any], item: Any, threads: int | None) -> Any:
    """``function(item)`` with OpenMP and BLAS pools at ``threads`` (the worker's own by
    default): a joined cluster's workers may not have the environment set."""
    from threadpoolctl import threadpool_limits

    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count() or 1
    with threadpool_limits(limits=threads):
        return function(item)


def run(
    dask_client: Any,
    function: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    threads: int | None = None,
    on_done: Callable[[Any, Any], None] | None = None,
) -> list[Any]:
    """``function(item)`` for every item as one task each; the results in the items' order.

    Every task runs to its end before an error is raised, so the pieces that can finish do
    (and a rerun resumes the rest). ``on_done(item, result)`` is called as each task finishes,
    in the order they finish. Items must be picklable, and ``function`` importable by name
    (a module-level function) on the workers.

    Raises
    ------
    RuntimeError
        If any task failed: which items, and the first error as its cause.
    """
    distributed = _need_dask()
    futures = [dask_client.submit(_limited, function, item, threads, pure=False) for item in items]
    index = {future.key: k for k, future in enumerate(futures)}
    results: list[Any] = [None] * len(items)
    failed: list[tuple[Any, BaseException]] = []
    for future in distributed.as_completed(futures):
        k = index[future.key]
        error = future.exception()
        if error is not None:
            failed.append((items[k], error))
            continue
        results[k] = future.result()
        if on_done is not None:
            on_done(items[k], results[k])
    if failed:
        names = ", ".join(repr(item) for item, _ in failed)
        raise RuntimeError(f"{len(failed)} of {len(items)} task(s) failed: {names}") from failed[0][
            1
        ]
    return results
