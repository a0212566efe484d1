"""Dask tasks: a real two-process local cluster, thread limits, order, failures named."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from femsr import cli, cluster, generate, io  # noqa: E402

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


STAGES = [generate.Stage(4.0, 4), generate.Stage(2.0, 3, beta=1.0, beta_max=2.0)]
SPLITS = {"count": 3, "test": 1, "validation": 0}


def test_femurs_grown_on_two_workers_are_those_of_a_serial_run(tmp_path):
    serial = generate.generate(tmp_path / "serial", **SPLITS, stages=STAGES, progress=False)
    parallel = generate.generate(
        tmp_path / "parallel", **SPLITS, stages=STAGES, progress=False, workers=2
    )
    assert parallel == serial
    for entry in serial:
        a, b = (io.load_femur(tmp_path / run / entry["file"]) for run in ("serial", "parallel"))
        np.testing.assert_allclose(b.density, a.density, atol=1e-9)
        assert (tmp_path / "parallel" / f"{entry['name']}.png").exists()


def test_a_killed_run_resumes_on_the_cluster_with_nothing_lost(tmp_path):
    """Kill a two-worker run (the command and its workers) once a femur has finished its first
    stage: the rerun keeps that stage's result and grows every femur."""
    out = tmp_path / "femurs"
    argv = ["generate", str(out), "--count", "2", "--test", "0", "--validation", "0"]
    argv += ["--stages", "4:2,1:60", "--workers", "2", "--quiet"]
    with subprocess.Popen(
        [sys.executable, "-m", "femsr", *argv], start_new_session=True, stderr=subprocess.PIPE
    ) as run:
        deadline = time.monotonic() + 120
        while not list(out.glob("work/*/stage0.done.npz")):
            assert run.poll() is None, run.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
    assert not list(out.glob("*.npz"))  # killed before any femur was done
    # The rerun's workers are other processes, out of reach of a spy on the writer; and a
    # modification time may not tick on a file system of coarse timestamps. A hard link holds
    # each finished stage's file: a rewrite (atomic, a new file moved over the old) leaves the
    # link on the old file, a skipped stage leaves both names on one file.
    held = tmp_path / "held"
    held.mkdir()
    kept = {}
    for k, path in enumerate(out.glob("work/*/stage0.done.npz")):
        kept[path] = held / f"{k}.npz"
        os.link(path, kept[path])
    assert kept
    assert cli.main(argv) == 0
    assert len(list(out.glob("femur_*.npz"))) == 2
    assert all(os.path.samefile(path, link) for path, link in kept.items())
