"""Training on several processes: torchrun's process group, and each process's share of a batch.

``torchrun --nproc-per-node N -m femsr train ...`` starts N copies of the command and tells each
where it stands through the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, and where to
meet). :func:`femsr.train.train` then trains one network with ``DistributedDataParallel``: NCCL
between GPUs (process ``LOCAL_RANK`` on GPU ``LOCAL_RANK``), gloo between CPU processes.

The processes give the network of one process, to float32 rounding: :class:`BatchShares` draws the
batches of a one-process run (the same shuffling generator, the same global batch of
``batch_size`` pairs) and hands each process every N-th pair of each batch, so each process
takes ``batch_size / N`` pairs a step. A process's mean loss is weighted by its share of the
batch (1 but for a short last batch), so the gradient that ``DistributedDataParallel``
averages over the processes is that of the batch's mean loss. Where a short last batch leaves
a process no pair, it takes the batch's first pair with weight 0, so that every process steps.
This holds for a loss that is a mean over the pairs of the batch: L1, L2 and the mass term. The
stiffness term is such a mean too, but its CG stops when every patch of the process's share has
converged (to 1e-3), not of the whole batch; clDice's ratio of sums is taken over the share.

Only the main process (rank 0) reads and writes files: :func:`on_main` runs a function there
and hands its result, or its error, to every process, which also keeps them in step.
"""

from __future__ import annotations

import contextlib
import importlib
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import torch
from torch import nn
from torch.utils.data import RandomSampler, Sampler

__all__ = [
    "BatchShares",
    "Processes",
    "check_batch_size",
    "from_environment",
    "on_main",
    "process_group",
    "summed",
    "wrap",
]

_T = TypeVar("_T")
# How long a process leaving a gloo group waits for the one before it.
_LEAVE_WAIT = timedelta(seconds=10)
# What torchrun (and any launcher that follows it) sets in each process it starts.
_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class Processes:
    """Where this process stands among those that train together.

    Attributes
    ----------
    rank : int
        This process's number, 0 to ``size - 1``; 0 is the main process.
    size : int
        The number of processes (torchrun's world size).
    local_rank : int
        Its number on its machine: the GPU it trains on.
    launched : bool
        Whether a launcher (torchrun) started it; False for a plain run of one process.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def main(self) -> bool:
        """Whether this is the main process, the one that logs and writes files."""
        return self.rank == 0


def from_environment() -> Processes:
    """This process's place, from torchrun's ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``.

    Returns
    -------
    Processes
        One process, not launched, when the three are not all set.

    Raises
    ------
    ValueError
        If a variable is not an int, or the rank is not below the world size.

    Examples
    --------
    >>> import os
    >>> "WORLD_SIZE" in os.environ or from_environment() == Processes()
    True
    """
    if not all(name in os.environ for name in _VARIABLES):
        return Processes()
    values = {}
    for name in _VARIABLES:
        try:
            values[name] = int(os.environ[name])
        except ValueError:
            raise ValueError(f"{name} must be an int, got {os.environ[name]!r}") from None
    size, rank, local_rank = values["WORLD_SIZE"], values["RANK"], values["LOCAL_RANK"]
    if not (size >= 1 and 0 <= rank < size and 0 <= local_rank):
        raise ValueError(f"need 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0, got {values}")
    return Processes(rank, size, local_rank, launched=True)


def check_batch_size(batch_size: int, processes: Processes) -> None:
    """Raise unless ``batch_size`` pairs split evenly among the processes.

    Raises
    ------
    ValueError
        Naming the batch size and the number of processes.
    """
    if batch_size % processes.size:
        raise ValueError(
            f"batch_size {batch_size} does not split among {processes.size} processes: each "
            f"takes batch_size / {processes.size} pairs a step, so give a multiple of "
            f"{processes.size}"
        )


@contextlib.contextmanager
def process_group(processes: Processes, device: torch.device) -> Iterator[torch.device]:
    """This process's device, in the launcher's process group until the block ends.

    A launched process joins the group (NCCL on CUDA, gloo otherwise; one the caller already
    joined is used and left open) and trains on GPU ``LOCAL_RANK`` when ``device`` is CUDA.
    A process that was not launched gets ``device`` back and joins nothing.

    Raises
    ------
    ValueError
        If ``LOCAL_RANK`` names a GPU the machine does not have.
    """
    if not processes.launched:
        yield device
        return
    import torch.distributed as dist

    if device.type == "cuda":
        count = torch.cuda.device_count()
        if processes.local_rank >= count:
            raise ValueError(
                f"LOCAL_RANK {processes.local_rank} has no GPU: this machine has {count}; start "
                f"at most {count} processes per machine, or train on the CPU (--device cpu)"
            )
        device = torch.device("cuda", processes.local_rank)
        torch.cuda.set_device(device)
    joined = not dist.is_initialized()
    if joined:
        # Imported while a group exists (as the first optimizer or DistributedDataParallel
        # imports it), dynamo holds the group past its destruction, and a process that exits
        # with gloo's threads still running may abort ("terminate called without an active
        # exception") after its work is done.
        importlib.import_module("torch._dynamo")

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    try:
        yield device
        if joined:
            dist.barrier()  # none leaves while another still sends
    finally:
        if joined:
            if device.type == "cuda":
                dist.destroy_process_group()
            else:
                _leave_gloo(processes)


def _leave_gloo(processes: Processes) -> None:
    """Destroy the gloo group one process after another, in rank order.

    Destroying a connection whose peer closes it at that moment can deadlock in gloo (the
    connection's destructor waits for the event loop, which waits for the connection's lock),
    so each process waits until the one before it has left (up to :data:`_LEAVE_WAIT`:
    after an error it may be stuck in a collective, which leaving then ends).
    """
    import torch.distributed as dist

    store = dist.distributed_c10d._get_default_store()
    turn = (store.add("femsr/leaving", 1) - 1) // processes.size  # the group's n-th leaving
    if processes.rank:
        with contextlib.suppress(RuntimeError):  # timed out
            store.wait([f"femsr/left/{turn}/{processes.rank - 1}"], _LEAVE_WAIT)
    dist.destroy_process_group()
    store.set(f"femsr/left/{turn}/{processes.rank}", "")


def wrap(model: nn.Module, processes: Processes, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` for a launched process; else ``model`` itself."""
    if not processes.launched:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def on_main(processes: Processes, function: Callable[[], _T]) -> _T:
    """``function()`` run on the main process; its result, or its error, on every process.

    The other processes wait for it (the result is pickled to them), so it also keeps the
    processes in step: none goes on before the main process has written its files.
    """
    if processes.size == 1:
        return function()
    import torch.distributed as dist

    payload: list[Any] = [None]
    if processes.main:
        try:
            payload[0] = (function(), None)
        except Exception as raised:  # handed to every process, then raised there too
            payload[0] = (None, raised)
    dist.broadcast_object_list(payload, src=0)
    result, failure = payload[0]
    if failure is not None:
        raise failure
    return cast(_T, result)


def summed(processes: Processes, values: list[float], device: torch.device) -> list[float]:
    """The sums of ``values`` over the processes (float64)."""
    if processes.size == 1:
        return values
    import torch.distributed as dist

    summed = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return summed.tolist()


class BatchShares(Sampler[list[int]]):
    """This process's share of each batch that one process would train on.

    Each epoch, the order of the ``length`` pairs is that of
    ``torch.utils.data.RandomSampler(generator=generator)``, as a ``DataLoader`` with
    ``shuffle=True`` draws it, cut into batches of ``batch_size``; process ``r`` of ``N`` takes
    pairs ``r, r + N, ...`` of each batch. After each batch is drawn, ``shares[k]`` holds batch
    k's ``(pairs of this process, pairs of the batch)``; an empty share yields the batch's first
    pair and counts 0 pairs.

    Parameters
    ----------
    length : int
        Pairs in the dataset.
    batch_size : int
        Pairs of a batch, over all processes: a multiple of their number.
    generator : torch.Generator
        The shuffling generator, in the same state on every process.
    processes : Processes
        This process's place.

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import DataLoader
    >>> def batches(processes):
    ...     generator = torch.Generator().manual_seed(0)
    ...     shares = BatchShares(5, 4, generator, processes)
    ...     loader = DataLoader(range(5), batch_sampler=shares, generator=generator)
    ...     return [batch.tolist() for batch in loader], shares.shares
    >>> batches(Processes(0, 2))
    ([[3, 0], [2]], [(2, 4), (1, 1)])
    >>> batches(Processes(1, 2))  # no pair of the last batch: its first, counted 0
    ([[1, 4], [2]], [(2, 4), (0, 1)])
    >>> one = DataLoader(range(5), 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    >>> [batch.tolist() for batch in one]  # one process: the same batches
    [[3, 1, 0, 4], [2]]
    """

    def __init__(
        self, length: int, batch_size: int, generator: torch.Generator, processes: Processes
    ) -> None:
        check_batch_size(batch_size, processes)
        self.length, self.batch_size = length, batch_size
        self.generator, self.processes = generator, processes
        self.shares: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return math.ceil(self.length / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        # Drawn when the first batch is asked for, as RandomSampler draws: the generator then
        # moves as a one-process DataLoader moves it (its workers' base seed first).
        order = list(RandomSampler(range(self.length), generator=self.generator))
        self.shares = []
        rank, size = self.processes.rank, self.processes.size
        for start in range(0, self.length, self.batch_size):
            batch = order[start : start + self.batch_size]
            share = batch[rank::size]
            self.shares.append((len(share), len(batch)))
            yield share or batch[:1]
