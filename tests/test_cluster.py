"""Dask tasks: a real two-process local cluster, thread limits, order, failures named."""

import sys

import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from femsr import cluster  # noqa: E402

# The workers cannot import this test module by name: ship its functions by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square_and_pools(x):
    from threadpoolctl import threadpool_info

    if x == 3:
        raise ValueError("three is refused")
    return x * x, max((pool["num_threads"] for pool in threadpool_info()), default=1)


@pytest.fixture(scope="module")
def local():
    with cluster.client(2, threads=1) as dask_client:
        yield dask_client


def test_tasks_run_on_two_workers_in_order_with_one_thread_each(local):
    assert len(local.scheduler_info()["workers"]) == 2
    finished = []
    results = cluster.run(
        local, square_and_pools, [4, 1, 2], on_done=lambda item, _: finished.append(item)
    )
    assert [r[0] for r in results] == [16, 1, 4]
    assert all(r[1] == 1 for r in results)  # OpenMP and BLAS pools held to the worker's thread
    assert sorted(finished) == [1, 2, 4]


def test_a_failed_task_is_named_after_the_others_finish(local):
    finished = []
    with pytest.raises(RuntimeError, match="1 of 3 task\\(s\\) failed: 3") as caught:
        cluster.run(local, square_and_pools, [2, 3, 5], on_done=lambda i, _: finished.append(i))
    assert isinstance(caught.value.__cause__, ValueError)
    assert sorted(finished) == [2, 5]


def test_a_cluster_needs_workers_or_a_scheduler():
    with pytest.raises(ValueError, match="workers >= 1"), cluster.client(0):
        pass
