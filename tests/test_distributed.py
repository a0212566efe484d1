"""Training on several processes: torchrun's environment, each process's share of a batch, and
real two-process gloo groups (torchrun) that train the network of one process and resume."""

import json
import logging
import re
import subprocess
import sys
from subprocess import PIPE

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from scipy import ndimage  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from femsr import cli  # noqa: E402
from femsr.distributed import (  # noqa: E402
    BatchShares,
    Processes,
    from_environment,
    process_group,
)
from femsr.model import ModelConfig  # noqa: E402
from femsr.train import train  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The environment and the shares


def test_the_environment_of_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert from_environment() == Processes(0, 1, 0, launched=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert from_environment() == Processes()  # LOCAL_RANK missing: not launched
    monkeypatch.setenv("LOCAL_RANK", "1")
    processes = from_environment()
    assert processes == Processes(3, 4, 1, launched=True) and not processes.main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="need 0 <= RANK < WORLD_SIZE"):
        from_environment()
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK must be an int, got 'one'"):
        from_environment()


@pytest.mark.parametrize(("length", "batch_size", "size"), [(12, 4, 2), (13, 4, 2), (7, 6, 3)])
def test_the_shares_make_up_the_batches_of_one_process(length, batch_size, size):
    one = DataLoader(range(length), batch_size, shuffle=True, generator=torch.Generator())
    batches = [batch.tolist() for batch in one]
    parts, moved = [], []
    for rank in range(size):
        generator = torch.Generator()
        shares = BatchShares(length, batch_size, generator, Processes(rank, size))
        loader = DataLoader(range(length), batch_sampler=shares, generator=generator)
        drawn = [batch.tolist() for batch in loader]
        parts.append(list(zip(drawn, shares.shares, strict=True)))
        moved.append(generator.get_state())
    # The generator moves as the one-process loader's: the next epoch draws alike too.
    assert all(torch.equal(state, one.generator.get_state()) for state in moved)
    for step, batch in enumerate(batches):
        for rank, part in enumerate(parts):
            share, (own, total) = part[step]
            mine = batch[rank::size]  # every size-th pair of the batch, from the rank-th
            assert (share, own, total) == (mine or batch[:1], len(mine), len(batch))


def test_a_batch_size_the_processes_cannot_share_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="batch_size 5 does not split among 2 processes"):
        train(CFG, DATA, DATA, out_dir=tmp_path, batch_size=5)
    assert not list(tmp_path.iterdir())  # refused before anything was started or written


def test_a_process_without_its_gpu_is_refused():
    processes = Processes(0, 1, local_rank=1000, launched=True)
    with (
        pytest.raises(ValueError, match="LOCAL_RANK 1000 has no GPU: this machine has "),
        process_group(processes, torch.device("cuda")),
    ):
        pass


def test_one_process_joins_no_group():
    with process_group(Processes(), torch.device("cpu")) as device:
        assert device == torch.device("cpu")
        assert not torch.distributed.is_initialized()


# ---------------------------------------------------------------------------------------------
# Two processes


CFG = ModelConfig(in_channels=3, width=8, n_blocks=1, up_width=4, patch_size=4)


def blobs(n, seed):
    """Pairs as in test_train: HR = smoothed thresholded noise, LR = block mean + ramps."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((n, 40, 40)), sigma=(0, 3, 3))
    hr = ndimage.gaussian_filter((noise > 0).astype(np.float32)[:, None], sigma=(0, 0, 1, 1))
    density = hr.reshape(n, 1, 4, 10, 4, 10).mean(axis=(3, 5))
    ramp = np.linspace(-1, 1, 4, dtype=np.float32)
    displacement = np.stack([np.broadcast_to(ramp, (4, 4)), np.broadcast_to(ramp[:, None], (4, 4))])
    lr = np.concatenate([density, np.broadcast_to(displacement, (n, 2, 4, 4))], axis=1)
    return TensorDataset(torch.from_numpy(lr.astype(np.float32)), torch.from_numpy(hr))


# 13 pairs in batches of 4: the last batch has one pair, and the second process none of it.
DATA = blobs(13, 0)
# On the CPU (gloo) where a GPU is present too: two processes on one GPU are refused.
OPTIONS = {"epochs": 3, "batch_size": 4, "lr": 1e-2, "schedule": "step", "device": "cpu"}

# What each process runs: train() on the pairs, stopping (as Ctrl-C would) at the n-th pair read.
WORKER = """
import json, os, sys
from pathlib import Path
import torch
from torch.utils.data import Dataset, TensorDataset
from femsr.model import ModelConfig
from femsr.train import train

class Interrupting(Dataset):
    def __init__(self, data, after):
        self.data, self.after, self.reads = data, after, 0
    def __len__(self):
        return len(self.data)
    def __getitem__(self, index):
        self.reads += 1
        if self.after is not None and self.reads > self.after:
            raise KeyboardInterrupt
        return self.data[index]

# The DDP wrappers alive as the process leaves its group (distributed._leave_gloo).
import gc
from torch.nn.parallel import DistributedDataParallel
from femsr import distributed
leave = distributed._leave_gloo
def leaving(processes):
    alive = sum(isinstance(item, DistributedDataParallel) for item in gc.get_objects())
    Path(f"wrapped_{os.environ['RANK']}.json").write_text(json.dumps(alive))
    leave(processes)
distributed._leave_gloo = leaving

data = TensorDataset(*torch.load(sys.argv[1]))
options = json.loads(sys.argv[3])
cfg = ModelConfig(**options.pop("config"))
fit = Interrupting(data, options.pop("after", None))
train(cfg, fit, data, out_dir=sys.argv[2], progress=False, **options)
# The threads the process runs once train() is done (Linux names them in /proc).
threads = [(task / "comm").read_text() for task in Path("/proc/self/task").iterdir()]
Path(f"threads_{os.environ['RANK']}.json").write_text(json.dumps(threads))
"""


def torchrun(*argv, folder):
    """``torchrun --standalone --nproc-per-node 2 ARGV`` in ``folder``: the finished process.
    Past 300 s it is stopped, and it stops its workers, so a hung run leaves none behind."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", *argv]
    with subprocess.Popen(command, cwd=folder, stdout=PIPE, stderr=PIPE, text=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            process.terminate()  # killed, torchrun would leave its workers (own sessions) running
            process.communicate(timeout=60)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def wrapped(folder):
    """The DDP wrappers alive in each process as it left its group (the worker's count)."""
    return [json.loads((folder / f"wrapped_{rank}.json").read_text()) for rank in (0, 1)]


def final_weights(folder):
    return torch.load(folder / "checkpoint.pt", weights_only=True)["model"]


def assert_same_network(a, b):
    """The same weights to float32 rounding: each tensor within 1e-5 of its largest weight (the
    processes sum the gradients in another order, and Adam's steps carry the last bits on)."""
    assert a.keys() == b.keys()
    for key in a:
        scale = float(a[key].abs().max())
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5 * scale)


def test_an_interrupted_two_process_run_resumes_to_the_network_of_one(tmp_path):
    one = train(CFG, DATA, DATA, out_dir=tmp_path / "one", progress=False, **OPTIONS)
    torch.save(DATA.tensors, tmp_path / "pairs.pt")
    (tmp_path / "worker.py").write_text(WORKER)
    # Each process reads pair 0 (the check), then 7 pairs an epoch (2 + 2 + 2 + 1): both stop
    # at the second step of epoch 2.
    options = {**OPTIONS, "config": CFG.to_dict()}
    argv = ["worker.py", "pairs.pt", "two"]
    stopped = torchrun(*argv, json.dumps({**options, "after": 1 + 7 + 3}), folder=tmp_path)
    assert stopped.returncode != 0 and "KeyboardInterrupt" in stopped.stderr
    log = (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1]
    assert wrapped(tmp_path) == [0, 0]  # the traceback held none past the group
    resumed = torchrun(*argv, json.dumps(options), folder=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    # Leaving the group ended gloo's threads: none runs on as the process exits, which could
    # abort it ("terminate called without an active exception") after its work was done.
    if sys.platform == "linux":
        threads = [json.loads((tmp_path / f"threads_{rank}.json").read_text()) for rank in (0, 1)]
        names = [name.strip() for names in threads for name in names]
        assert names and not [name for name in names if "gloo" in name]
    # No DDP wrapper outlived the group: its reducer, the group's last holder, would destroy it
    # holding the GIL while a gloo thread waits for the GIL (a hang under load).
    assert wrapped(tmp_path) == [0, 0]
    assert_same_network(final_weights(tmp_path / "two"), final_weights(one.checkpoint_path.parent))
    log = (tmp_path / "two" / "train_log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in log]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["lr"] for r in records] == [r["lr"] for r in one.history]
    for key in ("train_loss", "val_loss"):
        expected = [r[key] for r in one.history]
        assert [r[key] for r in records] == pytest.approx(expected, rel=1e-5)
    assert not list((tmp_path / "two").glob("*.tmp"))


def test_femsr_train_under_torchrun_trains_the_network_of_one_process(patches, tmp_path, caplog):
    # Augmented pairs (the default): each pair's symmetry is drawn by pair and epoch, so the
    # two processes draw what one process draws. 15 pairs in batches of 4: the last batch's
    # 3 pairs split 2 + 1, and count 2/3 and 1/3 of its mean loss.
    argv = ["train", str(patches), "OUT", "--width", "8", "--blocks", "1", "--up-width", "4"]
    argv += ["--pairs", "15", "--val-pairs", "4", "--batch-size", "4", "--epochs", "2"]
    argv += ["--device", "cpu"]
    with caplog.at_level(logging.INFO, logger="femsr"):
        assert cli.main([arg.replace("OUT", str(tmp_path / "one")) for arg in argv]) == 0
    two = torchrun("-m", "femsr", *[arg.replace("OUT", "two") for arg in argv], folder=tmp_path)
    assert two.returncode == 0, two.stderr[-4000:]
    assert_same_network(final_weights(tmp_path / "two"), final_weights(tmp_path / "one"))
    # The main process alone speaks and writes.
    assert two.stdout.count("best epoch") == 1
    assert two.stderr.count("epoch 1/2: train loss") == 1
    assert two.stderr.count("training on femur_00") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "best.pt",
        "checkpoint.pt",
        "train_log.jsonl",
    ]
    # What the main process refuses (a resume with other settings), every process refuses.
    argv = [arg.replace("OUT", "two") for arg in argv]
    other = torchrun("-m", "femsr", *argv, "--lr", "0.5", folder=tmp_path)
    assert other.returncode != 0
    assert other.stderr.count("femsr train: error: ") == 2
    assert len(re.findall(r"other settings \(lr: [\d.e-]+ → 0.5\)", other.stderr)) == 2
