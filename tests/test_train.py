"""Training: metrics against numpy, losses, learning, seeding, resuming, logs, bad input."""

import json
import logging
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from scipy import ndimage  # noqa: E402
from torch.utils.data import Dataset, TensorDataset  # noqa: E402

from femsr.export import load_model  # noqa: E402
from femsr.losses import (  # noqa: E402
    block_mean,
    cldice_loss,
    objective,
    stiffness_loss,
    stiffness_term,
)
from femsr.model import ModelConfig  # noqa: E402
from femsr.train import psnr, train  # noqa: E402

CFG = ModelConfig(in_channels=3, width=8, n_blocks=1, up_width=4, patch_size=4)


def blobs(n, seed):
    """Synthetic pairs: HR = smoothed noise thresholded into blobs, LR = block mean + ramps."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal((n, 40, 40)), sigma=(0, 3, 3))
    hr = (noise > 0).astype(np.float32)[:, None]
    hr = ndimage.gaussian_filter(hr, sigma=(0, 0, 1, 1))
    density = hr.reshape(n, 1, 4, 10, 4, 10).mean(axis=(3, 5))
    ramp = np.linspace(-1, 1, 4, dtype=np.float32)
    displacement = np.stack([np.broadcast_to(ramp, (4, 4)), np.broadcast_to(ramp[:, None], (4, 4))])
    lr = np.concatenate([density, np.broadcast_to(displacement, (n, 2, 4, 4))], axis=1)
    return TensorDataset(torch.from_numpy(lr.astype(np.float32)), torch.from_numpy(hr))


TRAIN, VAL = blobs(12, 0), blobs(4, 1)


def run(tmp_path, name="run", **options):
    # On the CPU where a GPU is present too: the tests feed the model CPU tensors.
    settings = {"epochs": 2, "batch_size": 4, "lr": 2e-3, "progress": False, "device": "cpu"}
    settings.update(options)
    return train(CFG, TRAIN, VAL, out_dir=tmp_path / name, **settings)


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[key], sb[key]) for key in sa)


# ---------------------------------------------------------------------------------------------
# Metrics and losses


def test_psnr_against_numpy():
    rng = np.random.default_rng(5)
    x, y = rng.random((4, 1, 10, 10)), rng.random((4, 1, 10, 10))
    expected = [10 * np.log10(1 / np.mean((x[k] - y[k]) ** 2)) for k in range(4)]
    np.testing.assert_allclose(psnr(torch.from_numpy(x), torch.from_numpy(y)).numpy(), expected)
    assert float(psnr(torch.from_numpy(x), torch.from_numpy(x))[0]) == pytest.approx(100.0)


def test_block_mean_against_numpy():
    image = np.random.default_rng(6).random((2, 1, 20, 30))
    expected = image.reshape(2, 1, 2, 10, 3, 10).mean(axis=(3, 5))
    np.testing.assert_allclose(block_mean(torch.from_numpy(image), 10).numpy(), expected)


def test_objective_values():
    hr = torch.zeros(1, 1, 20, 20)
    prediction = hr.clone()
    prediction[..., :10, :10] = 0.4  # one block off by 0.4: the block mean is off by 0.4 too
    l1 = 0.4 / 4
    assert float(objective(prediction, hr, loss="l1")) == pytest.approx(l1)
    assert float(objective(prediction, hr, loss="l2")) == pytest.approx(0.16 / 4)
    mass = float(objective(prediction, hr, loss="l1", mass_weight=2.0))
    assert mass == pytest.approx(l1 + 2.0 * 0.4 / 4)
    # Each block's mean spread over the block: every pixel wrong, every block's mass right, so
    # the mass term adds nothing (a scanner-made LR pixel, blurred, is not the mass).
    target = torch.rand(1, 1, 20, 20)
    smeared = F.interpolate(block_mean(target, 10), scale_factor=10, mode="nearest")
    plain = objective(smeared, target, loss="l2")
    with_mass = objective(smeared, target, loss="l2", mass_weight=5.0)
    assert float(plain) > 0.01
    assert float(with_mass) == pytest.approx(float(plain), abs=1e-7)
    with pytest.raises(ValueError, match=r"loss must be one of .*'huber'"):
        objective(prediction, hr, loss="huber")


def soft_prediction(seed):
    """A blurred, partly wrong guess of the blobs of TRAIN, in (0, 1), with gradients."""
    _, hr = TRAIN.tensors
    torch.manual_seed(seed)
    noise = torch.randn(hr[:3].shape)
    return torch.sigmoid(4 * (F.avg_pool2d(hr[:3], 5, stride=1, padding=2) - 0.5) + noise)


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_objective_adds_the_weighted_cldice_and_stiffness_of_femsr_losses(loss):
    hr = TRAIN.tensors[1][:3]
    prediction = soft_prediction(0)
    plain = float(objective(prediction, hr, loss=loss))
    cldice = float(cldice_loss(prediction, hr))
    # The stiffness term: stiffness_loss on the 2 x 2-pooled patches, E0 = h = 1, Emin 1e-3.
    options = {"E0": 1.0, "h": 1.0, "Emin": 1e-3, "tol": 1e-3}
    pooled = (F.avg_pool2d(prediction, 2), F.avg_pool2d(hr, 2))
    stiffness = float(stiffness_loss(*pooled, **options))
    assert cldice > 0.01 and stiffness > 0.01  # the terms see the difference
    assert float(stiffness_term(prediction, hr)) == stiffness
    with_cldice = objective(prediction, hr, loss=loss, cldice_weight=0.5)
    assert float(with_cldice) == pytest.approx(plain + 0.5 * cldice, rel=1e-6)
    with_stiffness = objective(prediction, hr, loss=loss, stiffness_weight=2.0)
    assert float(with_stiffness) == pytest.approx(plain + 2.0 * stiffness, rel=1e-6)
    both = objective(prediction, hr, loss=loss, cldice_weight=0.5, stiffness_weight=2.0)
    assert float(both) == pytest.approx(plain + 0.5 * cldice + 2.0 * stiffness, rel=1e-6)
    # A zero weight leaves the term out: the plain loss, bit for bit.
    zero = objective(prediction, hr, loss=loss, cldice_weight=0.0, stiffness_weight=0.0)
    assert float(zero) == plain
    # Both terms pull the prediction: they have a gradient.
    leaf = prediction.detach().requires_grad_()
    for weights in ({"cldice_weight": 1.0}, {"stiffness_weight": 1.0}):
        (gradient,) = torch.autograd.grad(
            objective(leaf, hr, loss=loss, **weights) - objective(leaf, hr, loss=loss),
            leaf,
        )
        assert torch.isfinite(gradient).all() and gradient.abs().max() > 0


def test_stiffness_term_is_zero_for_the_target_and_ignores_the_material_scale():
    _, hr = TRAIN.tensors
    # To float32 rounding: the target's stiffness may come from a solve in another batch.
    assert float(stiffness_term(hr[:2], hr[:2])) == pytest.approx(0.0, abs=1e-6)
    prediction = soft_prediction(1)[:2]
    pooled = (F.avg_pool2d(prediction, 2), F.avg_pool2d(hr[:2], 2))
    scaled = stiffness_loss(*pooled, E0=15e3, h=0.1, Emin=15.0, tol=1e-3)
    assert float(stiffness_term(prediction, hr[:2])) == pytest.approx(float(scaled), rel=1e-3)


# ---------------------------------------------------------------------------------------------
# Training


def test_loss_decreases_on_a_tiny_overfit_task(tmp_path):
    data = blobs(4, 0)
    result = train(
        CFG, data, data, out_dir=tmp_path, epochs=25, lr=2e-2, schedule="constant", progress=False
    )
    losses = [record["train_loss"] for record in result.history]
    assert losses[-1] < 0.6 * losses[0]
    assert result.history[-1]["val_psnr"] > result.history[0]["val_psnr"] + 3.0
    assert result.history[-1]["val_ssim"] > result.history[0]["val_ssim"]
    best = min(range(25), key=lambda k: result.history[k]["val_loss"])
    assert result.best_epoch == best + 1


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_mass_term_improves_mass_consistency(tmp_path, loss):
    lr, _ = TRAIN.tensors
    errors = []
    for weight in (0.0, 10.0):
        result = run(tmp_path, f"{loss}{weight}", loss=loss, mass_weight=weight, epochs=3)
        with torch.no_grad():
            errors.append(float((block_mean(result.model(lr), 10) - lr[:, :1]).abs().mean()))
    assert errors[1] < errors[0]


def test_training_flushes_subnormal_numbers_and_restores_the_mode(tmp_path):
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormal numbers")

    class Probe(Dataset):
        """TRAIN, noting whether a subnormal float32 survives when an item is read."""

        def __init__(self):
            self.seen = set()

        def __len__(self):
            return len(TRAIN)

        def __getitem__(self, index):
            self.seen.add(torch.tensor([1e-39]).item())
            return TRAIN[index]

    probe = Probe()
    train(CFG, probe, VAL, out_dir=tmp_path, epochs=1, batch_size=4, progress=False, device="cpu")
    assert 0.0 in probe.seen  # the epochs read under the flush (the argument check before)
    assert torch.tensor([1e-39]).item() > 0.0


def test_same_seed_same_weights(tmp_path):
    first = run(tmp_path, "a", seed=7)
    second = run(tmp_path, "b", seed=7)
    other = run(tmp_path, "c", seed=8)
    assert same_weights(first.model, second.model)
    assert not same_weights(first.model, other.model)
    strip = ("seconds", "patches_per_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in first.history] == [
        {k: v for k, v in r.items() if k not in strip} for r in second.history
    ]


class Interrupting(Dataset):
    """Raises KeyboardInterrupt at the n-th item read, like Ctrl-C during training."""

    def __init__(self, data, after):
        self.data, self.after, self.reads = data, after, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.reads += 1
        if self.reads > self.after:
            raise KeyboardInterrupt
        return self.data[index]


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    # Global RNG draws inside the dataset (augmentation) must continue identically too.
    class Augmenting(Dataset):
        def __len__(self):
            return len(TRAIN)

        def __getitem__(self, index):
            lr, hr = TRAIN[index]
            if np.random.random() < 0.5:  # noqa: NPY002  (the legacy idiom datasets use)
                lr, hr = lr.flip(-1), hr.flip(-1)
            return lr, hr

    options = {"epochs": 3, "schedule": "step", "batch_size": 5}
    whole = train(CFG, Augmenting(), VAL, out_dir=tmp_path / "whole", progress=False, **options)
    # 1 read for the check, 12 per epoch: stop in the middle of epoch 2.
    interrupted = Interrupting(Augmenting(), after=1 + 12 + 7)
    with pytest.raises(KeyboardInterrupt):
        train(CFG, interrupted, VAL, out_dir=tmp_path / "part", progress=False, **options)
    log = (tmp_path / "part" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1]
    resumed = train(CFG, Augmenting(), VAL, out_dir=tmp_path / "part", progress=False, **options)
    assert same_weights(whole.model, resumed.model)
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in whole.history]
    assert [r["lr"] for r in resumed.history] == [r["lr"] for r in whole.history]
    # Running again after completion trains nothing and returns the same result.
    again = train(CFG, Augmenting(), VAL, out_dir=tmp_path / "part", progress=False, **options)
    assert same_weights(again.model, resumed.model) and again.history == resumed.history


@pytest.mark.parametrize("name", ["cldice_weight", "stiffness_weight"])
def test_resume_with_another_term_weight_is_refused(tmp_path, name):
    first = run(tmp_path, "x", epochs=1, **{name: 0.5})
    assert all(math.isfinite(r["train_loss"]) for r in first.history)
    settings = torch.load(first.checkpoint_path, weights_only=True)["settings"]
    assert settings[name] == 0.5
    assert run(tmp_path, "x", epochs=1, **{name: 0.5}).history == first.history  # resumes
    with pytest.raises(ValueError, match=rf"other settings \({name}: 0.5 → 0.0\)"):
        run(tmp_path, "x", epochs=1)
    with pytest.raises(ValueError, match=rf"other settings \({name}: 0.5 → 1.0\)"):
        run(tmp_path, "x", epochs=1, **{name: 1.0})


def test_a_checkpoint_from_before_the_terms_resumes_without_them(tmp_path):
    """Checkpoints written before clDice and stiffness existed name no weight for them: they
    trained without, and resume as runs with the weights 0."""
    first = run(tmp_path, "x", epochs=1)
    checkpoint = torch.load(first.checkpoint_path, weights_only=True)
    for name in ("cldice_weight", "stiffness_weight"):
        del checkpoint["settings"][name]
    torch.save(checkpoint, first.checkpoint_path)
    assert run(tmp_path, "x", epochs=1).history == first.history
    with pytest.raises(ValueError, match=r"other settings \(cldice_weight: 0.0 → 1.0\)"):
        run(tmp_path, "x", epochs=1, cldice_weight=1.0)


def test_a_checkpoint_naming_the_retired_config_fields_resumes(tmp_path):
    """Checkpoints of earlier versions name output and density_skip in the model config, at
    the values every network has (femsr.model.RETIRED_FIELDS): they resume."""
    first = run(tmp_path, "x", epochs=1)
    checkpoint = torch.load(first.checkpoint_path, weights_only=True)
    checkpoint["settings"]["config"].update(output="sigmoid", density_skip="bilinear")
    torch.save(checkpoint, first.checkpoint_path)
    assert run(tmp_path, "x", epochs=1).history == first.history
    checkpoint["settings"]["config"]["output"] = "clamp"
    torch.save(checkpoint, first.checkpoint_path)
    with pytest.raises(ValueError, match=r"other settings \(config: "):
        run(tmp_path, "x", epochs=1)


def test_init_starts_from_the_weights_of_a_model(tmp_path):
    trained = run(tmp_path, "trained", epochs=3)
    start = trained.model.state_dict()
    # At a vanishing learning rate a run stays at the weights it started from.
    tuned = run(tmp_path, "tuned", epochs=1, lr=1e-12, init=trained.best_path)
    fresh = run(tmp_path, "fresh", epochs=1, lr=1e-12)
    for result, near in ((tuned, True), (fresh, False)):
        weights = result.model.state_dict()
        close = [torch.allclose(weights[key], start[key], atol=1e-6) for key in start]
        assert all(close) if near else not all(close)
    best = trained.history[trained.best_epoch - 1]["val_loss"]
    assert tuned.history[0]["val_loss"] == pytest.approx(best, rel=1e-5)
    settings = torch.load(tuned.checkpoint_path, weights_only=True)["settings"]
    assert settings["init"] == str(trained.best_path)
    # Resuming is resuming the same fine-tuning: not from random weights, not another model.
    with pytest.raises(ValueError, match=r"other settings \(init: '.*best.pt' → None\)"):
        run(tmp_path, "tuned", epochs=1, lr=1e-12)
    other = ModelConfig(in_channels=3, width=4, n_blocks=1, up_width=4, patch_size=4)
    with pytest.raises(ValueError, match=r"init model .*best.pt' is the network .*width=8"):
        train(other, TRAIN, VAL, out_dir=tmp_path / "other", init=trained.best_path)


def test_resume_false_starts_over(tmp_path):
    run(tmp_path, "x", epochs=1, seed=1)
    fresh = run(tmp_path, "x", epochs=2, seed=2, resume=False)
    assert [r["epoch"] for r in fresh.history] == [1, 2]


def test_resume_with_other_settings_is_refused(tmp_path):
    run(tmp_path, "x", epochs=1)
    with pytest.raises(ValueError, match=r"other settings \(lr: 0.002 → 0.001\)"):
        run(tmp_path, "x", epochs=1, lr=1e-3)


def test_corrupt_checkpoint_is_reported(tmp_path):
    run(tmp_path, "x", epochs=1)
    checkpoint = tmp_path / "x" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"checkpoint .* cannot be read .* resume=False"):
        run(tmp_path, "x", epochs=1)
    torch.save({"weights": 1}, checkpoint)
    with pytest.raises(ValueError, match="is not a femsr training checkpoint"):
        run(tmp_path, "x", epochs=1)


def test_files_and_log(tmp_path):
    result = run(tmp_path, epochs=3, schedule="cosine")
    records = [json.loads(line) for line in result.log_path.read_text().splitlines()]
    assert records == result.history
    assert [r["epoch"] for r in records] == [1, 2, 3]
    keys = {"epoch", "lr", "train_loss", "val_loss", "val_psnr", "val_ssim", "seconds"}
    assert keys <= set(records[0])
    assert all(math.isfinite(r[key]) for r in records for key in keys)
    # Cosine over 3 epochs: lr · (1 + cos(π k / 3)) / 2 at the start of epoch k + 1.
    assert [r["lr"] for r in records] == pytest.approx([2e-3, 1.5e-3, 0.5e-3])
    best = load_model(result.best_path, device="cpu")
    assert best.config == CFG
    lr, _ = VAL.tensors
    with torch.no_grad():
        torch.testing.assert_close(best(lr), result.model(lr))
    assert not list(result.best_path.parent.glob("*.tmp"))


@pytest.mark.parametrize(("schedule", "rates"), [("step", [2e-3, 1e-3]), ("constant", [2e-3] * 2)])
def test_schedules(tmp_path, schedule, rates):
    result = run(tmp_path, schedule=schedule)
    assert [r["lr"] for r in result.history] == pytest.approx(rates)


def test_mixed_precision_on_cpu(tmp_path):
    result = run(tmp_path, amp=True, epochs=1)
    assert math.isfinite(result.history[0]["train_loss"])


def test_progress_shows_a_bar_and_every_epoch_is_logged(tmp_path, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="femsr.train"):
        run(tmp_path, epochs=1, progress=True)
    bar = capsys.readouterr().err
    assert "epoch 1/1:" in bar and "/12 [" in bar and "pair" in bar  # a tqdm bar of 12 pairs
    (line,) = caplog.messages
    assert line.startswith("epoch 1/1: train loss ") and "PSNR" in line and "SSIM" in line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="femsr.train"):
        run(tmp_path, "quiet", epochs=1, progress=False)
    assert capsys.readouterr().err == ""  # no bar
    assert len(caplog.messages) == 1  # the epoch is logged still


def test_non_finite_loss_stops_training(tmp_path):
    lr, hr = TRAIN.tensors
    bad = hr.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="training loss became nan at epoch 1, step 1"):
        train(CFG, TensorDataset(lr, bad), VAL, out_dir=tmp_path, batch_size=12, progress=False)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"loss": "l3"}, ValueError, "loss must be one of .*'l3'"),
        ({"schedule": "linear"}, ValueError, "schedule must be one of .*'linear'"),
        ({"epochs": 0}, ValueError, "epochs must be a positive int, got 0"),
        ({"batch_size": 2.0}, ValueError, "batch_size must be a positive int, got 2.0"),
        ({"lr": -1.0}, ValueError, "lr must be positive and finite, got -1.0"),
        ({"mass_weight": float("inf")}, ValueError, "mass_weight must be a finite number"),
        ({"mass_weight": -1.0}, ValueError, "mass_weight must be >= 0, got -1.0"),
        ({"cldice_weight": -0.5}, ValueError, "cldice_weight must be >= 0, got -0.5"),
        ({"cldice_weight": "1"}, TypeError, "cldice_weight must be a number, got str"),
        ({"stiffness_weight": math.nan}, ValueError, "stiffness_weight must be a finite number"),
        ({"stiffness_weight": True}, TypeError, "stiffness_weight must be a number, got bool"),
        ({"device": "gpu"}, ValueError, "device 'gpu' is not a torch device"),
    ],
)
def test_argument_errors(tmp_path, options, error, match):
    with pytest.raises(error, match=match):
        run(tmp_path, **options)


def test_config_type_error(tmp_path):
    with pytest.raises(TypeError, match="cfg must be a ModelConfig, got dict"):
        train({}, TRAIN, VAL, out_dir=tmp_path)


class Listed(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


class Unsized(Dataset):
    def __getitem__(self, index):
        return TRAIN[index]


LR0, HR0 = TRAIN[0]


@pytest.mark.parametrize(
    ("dataset", "error", "match"),
    [
        ([(LR0, HR0)], TypeError, "train_dataset must be a torch Dataset, got list"),
        (Unsized(), TypeError, "train_dataset must have a length"),
        (Listed([]), ValueError, "train_dataset is empty"),
        (Listed([LR0]), ValueError, r"train_dataset\[0\] must be an \(lr, hr\) pair, got Tensor"),
        (Listed([(LR0.numpy(), HR0)]), TypeError, r"lr must be a torch.Tensor, got ndarray"),
        (Listed([(LR0[:2], HR0)]), ValueError, r"lr has shape \(2, 4, 4\), the config needs"),
        (Listed([(LR0, HR0[:, :20])]), ValueError, r"hr has shape \(1, 20, 40\)"),
        (Listed([(LR0.double(), HR0)]), TypeError, "lr must be float32, got torch.float64"),
    ],
)
def test_dataset_errors(tmp_path, dataset, error, match):
    with pytest.raises(error, match=match):
        train(CFG, dataset, VAL, out_dir=tmp_path)


def test_validation_dataset_is_checked(tmp_path):
    with pytest.raises(ValueError, match="val_dataset is empty"):
        train(CFG, TRAIN, Listed([]), out_dir=tmp_path)


# ---------------------------------------------------------------------------------------------
# The command


def test_cli_trains_with_the_cldice_and_stiffness_terms(patches, tmp_path, capsys, caplog):
    from femsr import cli

    run_dir = tmp_path / "run"
    argv = ["train", str(patches), str(run_dir), "--width", "4", "--blocks", "1"]
    argv += ["--up-width", "2", "--pairs", "8", "--val-pairs", "4", "--batch-size", "4"]
    argv += ["--epochs", "2", "--cldice-weight", "0.5", "--stiffness-weight", "0.25"]
    with caplog.at_level(logging.INFO, logger="femsr.train"):
        assert cli.main(argv) == 0
    assert "best epoch" in capsys.readouterr().out
    records = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(math.isfinite(r[key]) for r in records for key in ("train_loss", "val_loss"))
    assert sum(message.startswith("epoch ") for message in caplog.messages) == 2
    settings = torch.load(run_dir / "checkpoint.pt", weights_only=True)["settings"]
    assert (settings["cldice_weight"], settings["stiffness_weight"]) == (0.5, 0.25)
    # The same command resumes (the run is complete); other weights need --restart.
    assert cli.main(argv) == 0
    assert cli.main([*argv, "--stiffness-weight", "1"]) == 2
    assert "other settings (stiffness_weight: 0.25 → 1.0)" in capsys.readouterr().err


def test_cli_fine_tunes_the_network_of_the_init_model(patches, tmp_path, capsys):
    from femsr import cli

    first, tuned = tmp_path / "first", tmp_path / "tuned"
    common = ["--pairs", "8", "--val-pairs", "4", "--batch-size", "4", "--epochs", "1"]
    shape = ["--width", "4", "--blocks", "1", "--up-width", "2"]
    assert cli.main(["train", str(patches), str(first), *shape, *common]) == 0
    init = ["--init", str(first / "best.pt")]
    # No shape given: the init model's.
    assert cli.main(["train", str(patches), str(tuned), *init, *common]) == 0
    settings = torch.load(tuned / "checkpoint.pt", weights_only=True)["settings"]
    assert (settings["config"]["width"], settings["config"]["n_blocks"]) == (4, 1)
    assert settings["init"] == str(first / "best.pt")
    capsys.readouterr()
    argv = ["train", str(patches), str(tmp_path / "wide"), *init, *common, "--width", "8"]
    assert cli.main(argv) == 2
    assert "is the network" in capsys.readouterr().err


def test_cli_trains_on_several_datasets_of_the_same_femurs(patches, tmp_path, capsys):
    """Two folders of the same femurs (LR images made two ways) train one network on the pairs
    of both; a folder of other femurs or another cut is refused."""
    import shutil

    from femsr import cli
    from femsr.dataset import load_index

    scanned = tmp_path / "scanned"
    shutil.copytree(patches, scanned)
    index = load_index(patches)
    for entry in index["femurs"]:  # a stand-in for a scanner's LR image: other densities
        lr = np.load(scanned / entry["lr"])
        lr[:, 0] *= 0.9
        np.save(scanned / entry["lr"], lr)
    argv = ["train", str(patches), str(scanned), str(tmp_path / "run"), "--width", "4"]
    argv += ["--blocks", "1", "--up-width", "2", "--val-pairs", "4", "--batch-size", "64"]
    assert cli.main([*argv, "--epochs", "1"]) == 0
    fit = next(e for e in index["femurs"] if e["name"] == "femur_00")
    assert f"training on femur_00 ({2 * fit['count']:,} pairs from 2 datasets)" in (
        capsys.readouterr().err
    )

    other = tmp_path / "other"
    shutil.copytree(patches, other)
    moved = json.loads((other / "index.json").read_text())
    moved["femurs"][0]["split"] = "test"
    (other / "index.json").write_text(json.dumps(moved))
    argv = ["train", str(patches), str(other), str(tmp_path / "run2"), "--epochs", "1"]
    assert cli.main(argv) == 2
    assert f"{str(other)!r} differs from {str(patches)!r} in femurs" in capsys.readouterr().err


def test_each_dataset_of_a_concatenation_is_told_the_epoch(patches):
    from torch.utils.data import ConcatDataset, Subset

    from femsr.patch_dataset import PatchDataset
    from femsr.train import _set_epoch

    parts = [PatchDataset(patches, "train", augment=True, seed=k) for k in range(2)]
    _set_epoch(Subset(ConcatDataset(parts), [0, 1]), 3)
    assert [part.epoch for part in parts] == [3, 3]


def test_the_kept_target_stiffness_trains_as_a_solve_of_every_target_does(
    patches, tmp_path, monkeypatch, stiffness_solves
):
    """Augmented pairs come back turned and flipped every epoch. Their kept stiffness must be
    that of the form drawn (a quarter turn swaps C11 and C22), or the losses would part."""
    from femsr import losses
    from femsr.patch_dataset import PatchDataset

    fit, check = (PatchDataset(patches, "train", augment=True), PatchDataset(patches, "train"))
    cfg = ModelConfig(
        in_channels=fit.in_channels,
        width=4,
        n_blocks=1,
        up_width=2,
        scale=4,
        upsampling="4",
        patch_size=4,
    )
    solved = stiffness_solves
    runs = {}
    for kept in (0, 1 << 18):  # none kept: every target solved in every step
        monkeypatch.setattr(losses, "_REFERENCES", {})
        monkeypatch.setattr(losses, "_REFERENCES_MAX", kept)
        solved.clear()
        result = train(
            cfg,
            fit,
            check,
            out_dir=tmp_path / str(kept),
            epochs=3,
            batch_size=8,
            lr=2e-3,
            stiffness_weight=1.0,
            progress=False,
            device="cpu",
        )
        runs[kept] = result.history, sum(len(density) for density in solved)
    (plain, plain_solves), (kept, kept_solves) = runs.values()
    assert len(kept) == 3
    for a, b in zip(plain, kept, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
    # The second and third epochs solved none of their targets, training or validation.
    assert kept_solves <= plain_solves - 2 * (len(fit) + len(check))
