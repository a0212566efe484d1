"""femsr.reconstruct: LR femur in, HR femur out; image files in and out; the CLI."""

import csv
import importlib
import json
import logging

import numpy as np
import pytest

import femsr
from femsr import dataset, encoding
from femsr.cli import main
from femsr.crisp import draw_struts
from femsr.femur import Femur
from femsr.io import FemurImage, read_image, save_femur, write_image
from femsr.refine import DENSITY_WEIGHT as REFINED_WEIGHT
from femsr.refine import refine

torch = pytest.importorskip("torch")
from femsr.export import export_model, load_model  # noqa: E402
from femsr.model import ModelConfig, build_model  # noqa: E402

module = importlib.import_module("femsr.reconstruct")  # femsr.reconstruct is the function
reconstruct = femsr.reconstruct

PIXEL = 4.0  # a coarse LR grid of the mean femur: 26 x 24 pixels, 3 x 3 windows
# HR densities lie in [0, 1]. Two float32 runs of one network that take other kernels (eager or
# exported, another batch size or memory layout, CPU or thread count: convolutions sum in
# another order) differ by rounding, about 1e-6 here and an order of magnitude more with
# some kernels; ATOL holds them all, far below the 1e-3..1e-1 a real fault moves them.
ATOL = 1e-4


def tiny(seed=0, *, untrained=False):
    """A small x10 network. Untrained, its tail is zero and it returns the bilinear upsampling
    of the LR density; else its tail is drawn as torch draws a conv's, so the displacement
    channels matter."""
    torch.manual_seed(seed)
    net = build_model(ModelConfig(width=4, n_blocks=1, up_width=2))
    if not untrained:
        net.tail.reset_parameters()
    return net.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A network whose tail is drawn (so the displacement matters) and its .pt2."""
    net = tiny()
    path = export_model(net, tmp_path_factory.mktemp("model") / "tiny.pt2")
    return net, path


@pytest.fixture(scope="module")
def femur_lr():
    bone = Femur()
    problem = bone.problem(PIXEL)
    rng = np.random.default_rng(0)
    lr = np.where(problem.mask, rng.uniform(0.2, 0.9, problem.mask.shape), 0.0)
    return bone, problem, lr


def test_shape_range_and_void_windows(exported, femur_lr):
    _, path = exported
    bone, problem, lr = femur_lr
    stats = {}
    hr = reconstruct(lr, femur=bone, pixel_size=PIXEL, model=path, device="cpu", stats=stats)
    assert hr.shape == (10 * lr.shape[0], 10 * lr.shape[1]) and hr.dtype == np.float32
    assert hr.min() >= 0.0 and hr.max() <= 1.0
    assert hr[np.kron(lr > 0, np.ones((10, 10), bool))].min() > 0  # sigmoid: never exactly 0
    grid = encoding.patch_grid(lr.shape, 12, 8)
    run = encoding.window_mask(problem.mask | (lr > 0), grid, 12)
    assert stats["windows"] == run.size and stats["inferred"] == run.sum() < run.size
    assert set(stats) >= {"model", "lr_fe", "inference", "quilting", "total", "device"}
    assert stats["fe_method"] == "direct"
    # Windows wholly outside the femur are void, and so is every block of a void LR pixel.
    for r, c in grid[~run]:
        assert not hr[r * 10 : (r + 12) * 10, c * 10 : (c + 12) * 10].any()
    assert not hr[np.kron(lr == 0, np.ones((10, 10), bool))].any()


def test_progress_shows_a_bar_of_the_windows(exported, femur_lr, capsys, caplog):
    _, path = exported
    bone, _, lr = femur_lr
    options = {"femur": bone, "pixel_size": PIXEL, "model": path, "device": "cpu"}
    stats = {}
    with caplog.at_level(logging.DEBUG, logger="femsr.reconstruct"):
        reconstruct(lr, progress=True, stats=stats, batch_size=2, **options)
    bar = capsys.readouterr().err
    assert "reconstruct:" in bar and f"/{stats['inferred']} [" in bar and "window" in bar
    windows = f"reconstruct: {stats['inferred']} of {stats['windows']} windows, LR FE "
    assert caplog.messages[-1].startswith(windows)  # the stages, at DEBUG
    reconstruct(lr, **options)
    assert capsys.readouterr().err == ""  # progress=False: no bar


def test_windows_outside_are_not_run(exported, femur_lr):
    bone, _, lr = femur_lr
    calls = []

    net = tiny()
    original = net.forward
    net.forward = lambda x: (calls.append(x.shape[0]), original(x))[1]
    stats = {}
    reconstruct(
        lr, femur=bone, pixel_size=PIXEL, model=net, device="cpu", batch_size=3, stats=stats
    )
    assert sum(calls) == stats["inferred"] < stats["windows"]
    assert max(calls) <= 3


def test_uniform_image_through_density_skip():
    lr = np.full((20, 28), 0.37)  # 2 x 3 windows of 12 at stride 8, none overhanging
    u = np.random.default_rng(1).normal(size=(3, 21, 29, 2))
    for method in ("seam", "average", "cut"):
        hr = reconstruct(
            lr, displacement=u, model=tiny(untrained=True), device="cpu", method=method
        )
        np.testing.assert_allclose(hr, 0.37, atol=1e-5)


def test_displacement_given_or_computed(exported, femur_lr):
    net, _ = exported
    bone, problem, lr = femur_lr
    computed = reconstruct(lr, femur=bone, pixel_size=PIXEL, model=net, device="cpu")
    u, _ = encoding.lr_displacement(lr, problem)
    given = reconstruct(lr, displacement=u, mask=problem.mask, model=net, device="cpu")
    np.testing.assert_array_equal(computed, given)
    own = reconstruct(
        lr, forces=3.0 * problem.forces, fixed=problem.fixed, mask=problem.mask, model=net,
        device="cpu",
    )  # fmt: skip
    np.testing.assert_allclose(own, given, atol=1e-5)  # loads of any magnitude: same input
    image = FemurImage(lr, PIXEL, bone)
    np.testing.assert_array_equal(reconstruct(image, model=net, device="cpu"), computed)
    # The displacement matters: another field gives another image.
    other = reconstruct(lr, displacement=u[::-1].copy(), mask=problem.mask, model=net, device="cpu")
    assert np.abs(other - given).max() > 1e-4


def test_eager_and_exported_agree(exported, femur_lr):
    net, path = exported
    bone, _, lr = femur_lr
    options = {"femur": bone, "pixel_size": PIXEL, "device": "cpu"}
    eager = reconstruct(lr, model=net, **options)
    loaded = load_model(path, device="cpu")
    np.testing.assert_allclose(reconstruct(lr, model=path, **options), eager, atol=ATOL)
    np.testing.assert_allclose(reconstruct(lr, model=loaded, **options), eager, atol=ATOL)


def test_methods_differ_only_in_overlaps(exported, femur_lr):
    net, _ = exported
    bone, _, lr = femur_lr
    images = {
        method: reconstruct(lr, femur=bone, pixel_size=PIXEL, model=net, device="cpu",
                            method=method)
        for method in ("seam", "average", "cut")
    }  # fmt: skip
    # Rows and columns 80..119 of each 80-px step are overlaps; elsewhere one patch owns a pixel.
    inside = np.ones(images["seam"].shape, bool)
    for start in range(80, max(inside.shape), 80):
        inside[start : start + 40] = False
        inside[:, start : start + 40] = False
    for method in ("average", "cut"):
        np.testing.assert_array_equal(images[method][inside], images["seam"][inside])
        assert np.abs(images[method] - images["seam"]).max() > 1e-4


def test_batch_size_does_not_matter(exported, femur_lr):
    net, _ = exported
    bone, _, lr = femur_lr
    options = {"femur": bone, "pixel_size": PIXEL, "model": net, "device": "cpu"}
    # Equal up to the float32 rounding of batch-size-dependent convolution kernels.
    np.testing.assert_allclose(
        reconstruct(lr, batch_size=1, **options),
        reconstruct(lr, batch_size=64, **options),
        atol=ATOL,
        rtol=0,
    )


def test_tta_runs_every_window_under_the_eight_symmetries(exported, femur_lr, monkeypatch):
    """reconstruct(tta=True) is the pipeline whose network call is the mean of the eight
    turned and mirrored calls, mapped back (here spelled out with encoding.transform)."""
    import femsr.export as export_module

    net, path = exported
    bone, _, lr = femur_lr
    options = {"femur": bone, "pixel_size": PIXEL, "device": "cpu", "batch_size": 5}
    stats = {}
    averaged = reconstruct(lr, model=path, tta=True, stats=stats, **options)
    assert stats["tta"] is True and averaged.dtype == np.float32
    assert averaged.min() >= 0.0 and averaged.max() <= 1.0
    plain = reconstruct(lr, model=path, **options)
    assert np.abs(averaged - plain).max() > 1e-3

    original = export_module.predict

    def averaging(model, batch, **kwargs):
        assert kwargs.pop("tta") is False
        outputs = []
        for k, flip in export_module.SYMMETRIES:
            seen = original(model, encoding.transform(batch, k, flip), **kwargs)
            outputs.append(encoding.transform(seen, *export_module._inverse(k, flip)))
        return np.mean(outputs, axis=0)

    monkeypatch.setattr(export_module, "predict", averaging)
    by_hand = reconstruct(lr, model=net, **options)
    np.testing.assert_allclose(averaged, by_hand, rtol=0, atol=ATOL)


def test_tta_leaves_an_equivariant_network_unchanged(femur_lr):
    """An untrained network returns the upsampled density: it commutes with the symmetries,
    so the average of its eight outputs is its output."""
    bone, _, lr = femur_lr
    net = tiny(untrained=True)
    options = {"femur": bone, "pixel_size": PIXEL, "model": net, "device": "cpu"}
    # No convolution counts (the tail is zero): upsampling and logit/sigmoid in float32 round
    # by a few ulp, more or fewer with each CPU's vectorised functions.
    np.testing.assert_allclose(
        reconstruct(lr, tta=True, **options), reconstruct(lr, **options), rtol=0, atol=1e-5
    )


def test_bundled_model_missing(monkeypatch, tmp_path, femur_lr):
    bone, _, lr = femur_lr
    monkeypatch.setattr(module, "BUNDLED_MODEL", tmp_path / "model.pt2")
    with pytest.raises(FileNotFoundError, match="no bundled model is installed yet"):
        reconstruct(lr, femur=bone, pixel_size=PIXEL)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"lr": [[0.5]]}, TypeError, "lr must be a numpy array"),
        ({"lr": np.ones((4, 4), bool)}, TypeError, "lr must hold real numbers"),
        ({"lr": np.ones((2, 4, 4))}, ValueError, "non-empty 2-D"),
        ({"lr": np.full((26, 24), np.nan)}, ValueError, "NaN"),
        ({"lr": np.full((26, 24), 1.5)}, ValueError, r"lr must lie in \[0, 1\]"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
        ({"method": "blend"}, ValueError, "method must be one of"),
        ({"tta": 1}, TypeError, "tta must be a bool, got int"),
        ({"pixel_size": -1.0}, ValueError, "pixel_size must be a positive"),
        ({"pixel_size": 0.05}, ValueError, "that is a high-resolution image"),
        ({"pixel_size": None}, ValueError, "pixel_size .* is needed"),
        ({"pixel_size": 2.0}, ValueError, "the femur's grid at 2.0 mm"),
        ({"femur": None}, ValueError, "needs the displacement channels"),
        ({"femur": "mean"}, TypeError, "femur must be a femsr.femur.Femur"),
        ({"forces": np.zeros((3, 27, 25, 2))}, ValueError, "either femur= or forces="),
        ({"displacement": np.zeros((3, 27, 25, 2))}, ValueError, "either displacement= or"),
        ({"femur": None, "displacement": np.zeros((3, 26, 25, 2))}, ValueError, "nodal on lr's"),
        ({"femur": None, "displacement": np.zeros((2, 27, 25, 2))}, ValueError, "has 2 load case"),
        ({"mask": np.zeros((26, 24), bool)}, ValueError, "mask is empty"),
        ({"model": 3}, TypeError, "model must be a path"),
        ({"model": "missing.pt2"}, FileNotFoundError, "does not exist"),
    ],
)
def test_bad_input(exported, femur_lr, change, error, match):
    net, _ = exported
    bone, _, lr = femur_lr
    options = {"lr": lr, "femur": bone, "pixel_size": PIXEL, "model": net, "device": "cpu"}
    options.update(change)
    with pytest.raises(error, match=match):
        reconstruct(options.pop("lr"), **options)


def test_model_channels_must_match(femur_lr):
    bone, _, lr = femur_lr
    two_cases = build_model(ModelConfig(in_channels=5, width=4, n_blocks=1, up_width=2))
    with pytest.raises(ValueError, match=r"5 input channels .* 3 load case"):
        reconstruct(lr, femur=bone, pixel_size=PIXEL, model=two_cases, device="cpu")
    even = build_model(ModelConfig(in_channels=6, width=4, n_blocks=1, up_width=2))
    with pytest.raises(ValueError, match="an odd number"):
        reconstruct(lr, femur=bone, pixel_size=PIXEL, model=even, device="cpu")


def test_corrupt_model_file(tmp_path, femur_lr):
    bone, _, lr = femur_lr
    path = tmp_path / "broken.pt2"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a model archive"):
        reconstruct(lr, femur=bone, pixel_size=PIXEL, model=path, device="cpu")


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_end_to_end(tmp_path, exported, femur_lr, capsys):
    net, path = exported
    bone, _, lr = femur_lr
    save_femur(tmp_path / "lr.npz", FemurImage(lr, PIXEL, bone))
    code = main(
        [
            "reconstruct", str(tmp_path / "lr.npz"), str(tmp_path / "hr.png"), "--model",
            str(path), "--device", "cpu", "--batch-size", "4", "--method", "cut",
            "--preview", str(tmp_path / "preview.png"),
        ]
    )  # fmt: skip
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    hr, _, _ = read_image(tmp_path / "hr.png")
    density = read_image(tmp_path / "lr.npz")[0]  # as stored: 16-bit
    expected = reconstruct(
        density, femur=bone, pixel_size=PIXEL, model=net, device="cpu", method="cut"
    )
    np.testing.assert_allclose(hr, expected, atol=1e-4)
    preview, _, _ = read_image(tmp_path / "preview.png")
    np.testing.assert_allclose(preview, expected, atol=0.5 / 255 + 1e-4)
    # A bare image gets the default femur at --pixel-size; a mismatch is an error.
    write_image(tmp_path / "lr.tif", density)
    args = ["reconstruct", str(tmp_path / "lr.tif"), str(tmp_path / "hr.npy"), "--model", str(path)]
    assert main([*args, "--device", "cpu", "--pixel-size", str(PIXEL), "--quiet"]) == 0
    seam = reconstruct(density, femur=bone, pixel_size=PIXEL, model=net, device="cpu")
    np.testing.assert_allclose(np.load(tmp_path / "hr.npy"), seam, atol=1e-4)
    assert main([*args, "--device", "cpu", "--pixel-size", str(PIXEL), "--crisp", "-q"]) == 0
    assert "crisp redrawing" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "hr.npy"), draw_struts(seam, mass=density))
    assert main([*args, "--device", "cpu", "--pixel-size", str(PIXEL), "--refine", "1", "-q"]) == 0
    assert "refinement" in capsys.readouterr().out
    refined = refine(seam, density, bone.problem(PIXEL / 10), iterations=1)
    expected = draw_struts(refined, mass=density, density_weight=REFINED_WEIGHT)
    np.testing.assert_array_equal(np.load(tmp_path / "hr.npy"), expected)
    assert main([*args, "--quiet"]) == 2  # the femur's 0.5 mm grid is not 26 x 24
    assert "the femur's grid at 0.5 mm" in capsys.readouterr().err
    assert main(["reconstruct", str(tmp_path / "none.png"), str(tmp_path / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_reconstructs_a_folder_on_two_workers_as_one_by_one(
    tmp_path, exported, capsys, monkeypatch
):
    """A folder of LR femur files: each written as <name>.npz, the same as a serial run; a
    rerun skips them; --workers needs a folder."""
    net, path = exported
    bone = Femur()
    mask = bone.mask(PIXEL)
    rng = np.random.default_rng(3)
    folder = tmp_path / "lr"
    for k in range(3):
        lr = np.where(mask, rng.uniform(0.1, 0.6, mask.shape), 0.0)
        save_femur(folder / f"femur_{k}.npz", FemurImage(lr, PIXEL, bone))
    (folder / "notes.txt").write_text("not an image")
    argv = ["reconstruct", str(folder), str(tmp_path / "hr"), "--model", str(path)]
    assert main([*argv, "--device", "cpu", "--workers", "2", "--quiet"]) == 0
    assert "3 of 3 images" in capsys.readouterr().out
    for k in range(3):
        lr = read_image(folder / f"femur_{k}.npz")[0]
        expected = reconstruct(lr, femur=bone, pixel_size=PIXEL, model=net, device="cpu")
        np.testing.assert_allclose(
            read_image(tmp_path / "hr" / f"femur_{k}.npz")[0], expected, atol=1e-4
        )
    # The rerun (serial, so in this process) writes nothing: spy on the writer, since a file's
    # modification time may not tick between two writes on a coarse-timestamp file system.
    written = []
    monkeypatch.setattr(femsr.io, "write_image", lambda path, *a, **k: written.append(path))
    assert main([*argv, "--device", "cpu", "--quiet"]) == 0  # nothing left to do
    assert written == []
    single = ["reconstruct", str(folder / "femur_0.npz"), str(tmp_path / "x.npy")]
    assert main([*single, "--workers", "2", "--quiet"]) == 2
    assert "reconstruct a folder" in capsys.readouterr().err


def test_cli_reconstruct_and_demo_average_over_the_symmetries(tmp_path, exported, capsys):
    net, path = exported
    bone = Femur()
    mask = bone.mask(PIXEL / 10)
    rng = np.random.default_rng(5)
    reference = np.where(mask, (rng.random(mask.shape) > 0.5).astype(float), 0.0)
    save_femur(tmp_path / "femur.npz", FemurImage(reference, PIXEL / 10, bone))
    lr = dataset.downscale(read_image(tmp_path / "femur.npz")[0], 10)
    options = {"femur": bone, "pixel_size": PIXEL, "model": net, "device": "cpu"}
    averaged = reconstruct(lr, tta=True, **options)
    assert np.abs(averaged - reconstruct(lr, **options)).max() > 1e-3

    save_femur(tmp_path / "lr.npz", FemurImage(lr, PIXEL, bone))
    argv = ["reconstruct", str(tmp_path / "lr.npz"), str(tmp_path / "hr.npy"), "--model"]
    assert main([*argv, str(path), "--device", "cpu", "--tta", "--quiet"]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "hr.npy"), averaged, atol=1e-4)

    out = tmp_path / "demo"
    argv = ["demo", str(out), "--model", str(path), "--femur", str(tmp_path / "femur.npz")]
    assert main([*argv, "--device", "cpu", "--tta", "--quiet"]) == 0
    assert json.loads((out / "timings.json").read_text())["tta"] is True
    stored = read_image(out / "reconstruction.npz")[0]
    np.testing.assert_allclose(stored, averaged[: mask.shape[0], : mask.shape[1]], atol=1e-4)


def test_cli_demo_reconstructs_and_scores_a_femur(tmp_path, exported, capsys):
    """femsr demo on a given femur file and model: every output, and the reconstruction is
    reconstruct() of the femur's block mean, cropped to the reference."""
    net, path = exported
    bone = Femur()
    mask = bone.mask(PIXEL / 10)
    rng = np.random.default_rng(3)
    reference = np.where(mask, (rng.random(mask.shape) > 0.5).astype(float), 0.0)
    save_femur(tmp_path / "femur.npz", FemurImage(reference, PIXEL / 10, bone))
    out = tmp_path / "demo"
    argv = ["demo", str(out), "--model", str(path), "--femur", str(tmp_path / "femur.npz")]
    assert main([*argv, "--device", "cpu"]) == 0
    report = capsys.readouterr()
    assert "Femoral head" in report.out and "reconstructed in" in report.out
    assert report.out.startswith((out / "table.md").read_text())  # the table, then the times
    assert "demo: reconstruct" in report.err  # an INFO message per stage
    expected = {"input_lr.png", "reconstruction.npz", "reconstruction.png", "without_quilting.png"}
    expected |= {"table.md", "table.csv", "images.csv", "rois.png", "femur.png", "timings.json"}
    assert expected <= {p.name for p in out.iterdir()}
    stored = read_image(out / "reconstruction.npz")[0]
    lr = dataset.downscale(read_image(tmp_path / "femur.npz")[0], 10)
    direct = reconstruct(lr, femur=bone, pixel_size=PIXEL, model=net, device="cpu")
    assert stored.shape == reference.shape
    np.testing.assert_allclose(stored, direct[: mask.shape[0], : mask.shape[1]], atol=1e-4)
    assert main(["demo", str(out), "--femur", str(tmp_path / "none.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_report_averages_the_held_out_errors(tmp_path, exported, capsys):
    """femsr report: per femur and model the roi_table of reconstruct(block mean); the summary
    is the mean |error| and mean signed error over the femurs, beside the paper's Table 1."""
    from femsr.evaluate import roi_table
    from femsr.report import PAPER_TABLE1, heldout_report

    net, path = exported
    other = export_model(tiny(seed=1), tmp_path / "other.pt2")
    bone = Femur()
    mask = bone.mask(PIXEL / 10)
    rng = np.random.default_rng(5)
    folder = tmp_path / "femurs"
    for k in range(2):
        reference = np.where(mask, (rng.random(mask.shape) > 0.5).astype(float), 0.0)
        if k == 1:
            reference[bone.rois(PIXEL / 10)["neck"]] = 0.0  # a neck ROI in marrow: no error
        save_femur(folder / f"femur_{k}.npz", FemurImage(reference, PIXEL / 10, bone))
    out = tmp_path / "report"
    argv = ["report", str(folder), "--model", f"A={path}", "--model", f"B={other}"]
    assert main([*argv, "--output", str(out), "--device", "cpu", "--quiet"]) == 0
    assert "paper L1 %" in capsys.readouterr().out
    summary = list(csv.DictReader((out / "heldout.csv").read_text().splitlines()))
    assert len(summary) == 9 and {row["region"] for row in summary} == {
        "Femoral head",
        "Femoral neck",
        "Intertrochanteric region",
    }
    errors = []
    for k in range(2):
        reference = read_image(folder / f"femur_{k}.npz")[0]
        lr = dataset.downscale(reference, 10)
        hr = reconstruct(lr, femur=bone, pixel_size=PIXEL, model=net, device="cpu")
        table = roi_table(
            reference,
            hr[: mask.shape[0], : mask.shape[1]],
            bone.rois(PIXEL / 10),
            E0=15e3,
            h=PIXEL / 10,
        )
        errors.append([row["error_percent"] for row in table.rows])
    errors = np.array(errors)
    assert np.isnan(errors[1, 3:6]).all() and np.isfinite(np.delete(errors, [3, 4, 5], 1)).all()
    np.testing.assert_allclose(
        [float(r["A |error| %"]) for r in summary], np.nanmean(np.abs(errors), 0), rtol=1e-3
    )
    np.testing.assert_allclose(
        [float(r["A signed %"]) for r in summary], np.nanmean(errors, 0), rtol=1e-3
    )
    assert [int(r["A femurs"]) for r in summary] == [2, 2, 2, 1, 1, 1, 2, 2, 2]
    row = summary[0]
    assert (float(row["paper L1 %"]), float(row["paper L2 %"])) == PAPER_TABLE1[
        (row["region"], row["stiffness"])
    ]
    assert (out / "B" / "femur_1.png").is_file()
    assert len(list(csv.DictReader((out / "per_femur.csv").read_text().splitlines()))) == 2 * 2 * 9
    images = list(csv.DictReader((out / "heldout_images.csv").read_text().splitlines()))
    each = list(csv.DictReader((out / "per_femur_images.csv").read_text().splitlines()))
    assert len(images) == 2 * 4 and len(each) == 2 * 2 * 4  # 3 ROIs and the whole femur
    whole = [r for r in each if (r["model"], r["region"]) == ("B", "Whole femur")]
    for column in ("ssim", "tbth_reconstruction"):
        mean = np.mean([float(r[column]) for r in whole])
        assert float(images[-1][column]) == pytest.approx(mean)
    assert float(images[-1]["tbth_reference"]) > 0
    # Agreement: per model, ROI and measure over the femurs, from the per-femur pairs.
    agreed = list(csv.DictReader((out / "agreement.csv").read_text().splitlines()))
    pairs = list(csv.DictReader((out / "per_femur_measures.csv").read_text().splitlines()))
    assert len(agreed) == 2 * 3 * 8 and len(pairs) == 2 * 2 * 3 * 8
    first = agreed[0]
    assert (first["model"], first["region"], first["measure"]) == ("A", "Femoral head", "BV/TV")
    mine = [
        p
        for p in pairs
        if (p["model"], p["region"], p["measure"]) == ("A", "Femoral head", "BV/TV")
    ]
    bias = np.mean([float(p["reconstruction"]) - float(p["reference"]) for p in mine])
    assert int(first["n"]) == 2 and float(first["bias"]) == pytest.approx(bias)
    assert "Bland-Altman" in (out / "agreement.md").read_text()
    # --split validation: the validation femurs of the manifest, not the test ones.
    listing = [
        {"name": "femur_0", "file": "femur_0.npz", "split": "test"},
        {"name": "femur_1", "file": "femur_1.npz", "split": "validation"},
    ]
    (folder / "manifest.json").write_text(json.dumps({"femurs": listing}))
    chosen = tmp_path / "validation"
    argv = ["report", str(folder), "--model", f"A={path}", "--split", "validation"]
    assert main([*argv, "--output", str(chosen), "--device", "cpu", "--quiet"]) == 0
    rows = list(csv.DictReader((chosen / "per_femur.csv").read_text().splitlines()))
    assert {row["femur"] for row in rows} == {"femur_1"}
    # --tta-model: the same file, its windows averaged over the 8 symmetries of the square.
    averaged = tmp_path / "averaged"
    argv = ["report", str(folder), "--only", "femur_0", "--model", f"A={path}"]
    argv += ["--tta-model", f"A8={path}", "--output", str(averaged), "--device", "cpu", "-q"]
    assert main([*argv, "--crisp", "--refine", "1"]) == 0  # each as drawn, crisp and refined
    rows = list(csv.DictReader((averaged / "per_femur.csv").read_text().splitlines()))
    labels = ["A", "A+crisp", "A+refine", "A8", "A8+crisp", "A8+refine"]
    assert list(dict.fromkeys(r["model"] for r in rows)) == labels
    reference = read_image(folder / "femur_0.npz")[0]
    lr = dataset.downscale(reference, 10)
    for model, tta in (("A", False), ("A8", True)):
        full = reconstruct(lr, femur=bone, pixel_size=PIXEL, model=net, device="cpu", tta=tta)
        hr = full[: mask.shape[0], : mask.shape[1]]
        crisp = draw_struts(full, mass=lr)[: mask.shape[0], : mask.shape[1]]
        refined = refine(full, lr, bone.problem(PIXEL / 10), iterations=1)
        refined = draw_struts(refined, mass=lr, density_weight=REFINED_WEIGHT)
        refined = refined[: mask.shape[0], : mask.shape[1]]
        drawn = ((model, hr), (f"{model}+crisp", crisp), (f"{model}+refine", refined))
        for label, image in drawn:
            table = roi_table(reference, image, bone.rois(PIXEL / 10), E0=15e3, h=PIXEL / 10)
            mine = [float(r["error_percent"]) for r in rows if r["model"] == label]
            np.testing.assert_allclose(mine, [r["error_percent"] for r in table.rows], rtol=1e-3)
    assert [float(r["error_percent"]) for r in rows if r["model"] == "A"] != mine
    with pytest.raises(ValueError, match="would name two models"):
        heldout_report([folder / "femur_0.npz"], {"A": path, "A+crisp": path}, averaged, crisp=True)
    with pytest.raises(ValueError, match="would name two models"):
        heldout_report([folder / "femur_0.npz"], {"A": path, "A+refine": path}, averaged, refine=1)
    assert main(["report", str(folder), "--output", str(averaged)]) == 2
    assert "no models" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not evaluated"):
        heldout_report([folder / "femur_0.npz"], {"A": path}, averaged, tta=["B"])
    with pytest.raises(SystemExit):  # argparse refuses a model without a label
        main(["report", str(folder), "--model", "A"])
    assert "LABEL=FILE" in capsys.readouterr().err
    assert main(["report", str(folder), "--model", f"A={path}", "--only", "femur_7"]) == 2
    assert "not found" in capsys.readouterr().err


def _validation_report(folder, errors, bone):
    """heldout.csv and heldout_images.csv of models with these nine mean |errors| each (NaN:
    a boneless ROI) and per ROI and the whole femur these (|BV/TV error| %, Tb.Th ratio,
    |mass error| %)."""
    regions = ["Femoral head", "Femoral neck", "Intertrochanteric region"]
    header = ["region", "stiffness"] + [f"{label} |error| %" for label in errors]
    lines = [",".join(header)]
    for k in range(9):
        values = [str(errors[label][k]) for label in errors]
        lines.append(",".join([regions[k // 3], ("E_x", "E_y", "E_xy")[k % 3], *values]))
    folder.mkdir()
    (folder / "heldout.csv").write_text("\n".join(lines))
    lines = [
        "model,region,bvtv_abs_error_percent,mass_abs_error_percent,tbth_reference,"
        "tbth_reconstruction"
    ]
    for label in errors:
        for region, (bvtv, ratio, mass) in zip([*regions, "Whole femur"], bone[label], strict=True):
            lines.append(f"{label},{region},{bvtv},{mass},0.2,{0.2 * ratio}")
    (folder / "heldout_images.csv").write_text("\n".join(lines))


def test_the_model_is_chosen_by_stiffness_among_those_with_bone_like_the_reference(tmp_path):
    from femsr.report import choose_model

    errors = {
        "thick": [20.0] * 9,  # the stiffest: too-thick struts
        "massive": [25.0] * 9,  # too much bone in the neck
        "heavy": [30.0] * 9,  # too much mass in the head, though not above the threshold
        "fit": [40.0] * 8 + [np.nan],  # a boneless component counts for none
        "other": [41.0] * 9,
    }
    like = [(1.0, 1.2, 0.5)] * 3 + [(30.0, 3.0, 9.0)]  # the whole femur is no ROI: not guarded
    bone = {
        "thick": [(1.0, 1.2, 0.5), (1.0, 1.6, 0.5), (1.0, 1.2, 0.5), (1.0, 1.0, 0.5)],
        "massive": [(1.0, 1.2, 0.5), (12.0, 1.2, 0.5), (1.0, 1.2, 0.5), (1.0, 1.0, 0.5)],
        "heavy": [(1.0, 1.2, 3.0), (1.0, 1.2, 0.5), (1.0, 1.2, 0.5), (1.0, 1.0, 0.5)],
        "fit": like,
        "other": like,
    }
    _validation_report(tmp_path / "validation", errors, bone)
    label, sums = choose_model(tmp_path / "validation")
    assert label == "fit"
    assert sums == {"thick": 180.0, "massive": 225.0, "heavy": 270.0, "fit": 320.0, "other": 369.0}
    # Looser bounds let the stiffest through.
    assert choose_model(tmp_path / "validation", bvtv_error=15, tbth_ratio=2)[0] == "thick"
    assert choose_model(tmp_path / "validation", mass_error=5)[0] == "heavy"

    del errors["fit"], errors["other"]
    _validation_report(tmp_path / "none", errors, bone)
    reasons = r"thick: Femoral neck Tb.Th 1.60 x .*massive: Femoral neck \|BV/TV error\| 12.0 %"
    with pytest.raises(ValueError, match=reasons + r".*heavy: Femoral head \|mass error\| 3.0 %"):
        choose_model(tmp_path / "none")


def test_the_bundled_model_reconstructs_the_bundled_femur_better_than_upsampling():
    """The installed files: a held-out femur at 50 µm and a trained x10 network that, from the
    femur's block mean, beats bilinear upsampling of it (what the untrained network returns)."""
    from femsr.demo import BUNDLED_FEMUR
    from femsr.io import load_femur

    reference = load_femur(BUNDLED_FEMUR)
    assert reference.pixel_size == 0.05 and reference.meta["split"] == "test"
    network = load_model(module.BUNDLED_MODEL, "cpu")
    assert network.format == "state" and network.config.scale == 10  # weights: a fast load
    lr = dataset.downscale(reference.density, 10)
    hr = reconstruct(lr, femur=reference.femur, pixel_size=0.5, device="cpu")
    shape = reference.density.shape
    hr = hr[: shape[0], : shape[1]]
    upsampled = tiny(untrained=True)  # starts as the bilinear upsampling of the input
    baseline = reconstruct(lr, femur=reference.femur, pixel_size=0.5, model=upsampled)
    inside = reference.femur.mask(0.05)
    error = np.abs(hr - reference.density)[inside].mean()
    baseline_error = np.abs(baseline[: shape[0], : shape[1]] - reference.density)[inside].mean()
    assert error < 0.7 * baseline_error


def test_crisp_redraws_the_result_at_its_block_masses(exported, femur_lr):
    """reconstruct(crisp=True) is draw_struts of the grey result: 0 and 1, every 10 x 10 block
    at the mass of its LR pixel to the nearest pixel."""
    _, path = exported
    bone, _, lr = femur_lr
    options = {"femur": bone, "pixel_size": PIXEL, "model": path, "device": "cpu"}
    stats = {}
    drawn = reconstruct(lr, crisp=True, stats=stats, **options)
    grey = reconstruct(lr, **options)
    np.testing.assert_array_equal(drawn, draw_struts(grey, mass=lr))
    assert stats["crisp"] is True and drawn.dtype == np.float32
    assert set(np.unique(drawn)) == {0.0, 1.0}
    counts = drawn.reshape(lr.shape[0], 10, lr.shape[1], 10).sum(axis=(1, 3))
    assert np.abs(counts - 100 * lr).max() <= 0.5 + 1e-6
    with pytest.raises(TypeError, match="crisp must be a bool"):
        reconstruct(lr, crisp=1, **options)


def test_refine_optimizes_the_result_then_redraws_it(exported, femur_lr):
    """reconstruct(refine=N) is draw_struts of femsr.refine.refine of the grey result, under the
    femur's problem at the HR pixel size; it needs that femur."""
    _, path = exported
    bone, problem, lr = femur_lr
    options = {"femur": bone, "pixel_size": PIXEL, "model": path, "device": "cpu"}
    stats = {}
    refined = reconstruct(lr, refine=2, stats=stats, **options)
    grey = reconstruct(lr, **options)
    refined_grey = refine(grey, lr, bone.problem(PIXEL / 10), iterations=2)
    expected = draw_struts(refined_grey, mass=lr, density_weight=REFINED_WEIGHT)
    np.testing.assert_array_equal(refined, expected)
    assert stats["crisp"] is True and stats["refine_iterations"] == 2 and stats["refine"] > 0
    assert not np.array_equal(refined, draw_struts(grey, mass=lr))  # the optimization moved bone
    with pytest.raises(ValueError, match="refine optimizes under the femur's load cases"):
        reconstruct(lr, forces=problem.forces, fixed=problem.fixed, model=path, refine=1)
    with pytest.raises(ValueError, match="refine must be"):
        reconstruct(lr, refine=-1, **options)
