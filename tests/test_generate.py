"""Dataset growth: coarse-to-fine stages, mass, manifest, resume, CLI."""

import dataclasses
import importlib.util
import json
import logging
import shutil
import sys
from io import StringIO

import numpy as np
import pytest

from femsr import cli, generate, io, manifest, topopt
from femsr import femur as femur_module
from femsr.femur import Femur, grid_shape

TINY = [generate.Stage(4.0, 4), generate.Stage(2.0, 3, beta=1.0, beta_max=2.0)]


def test_grow_meets_the_mass_at_every_stage_and_improves_the_design():
    femur = Femur()
    density, records = generate.grow(femur, 0.35, stages=TINY)
    mask = femur.problem(2.0).mask
    assert density.shape == grid_shape(2.0)
    assert density[~mask].max() == 0
    assert [r["mass"] for r in records] == pytest.approx([0.35, 0.35], abs=1e-6)
    uniform = generate.grow(femur, 0.35, stages=[generate.Stage(2.0, 0)])[1][0]["compliance"]
    assert records[-1]["compliance"] < uniform
    # PARDISO where pypardiso is installed (the test extra installs it), else SuperLU.
    solver = "pardiso" if importlib.util.find_spec("pypardiso") else "superlu"
    assert [r["direct_solver"] for r in records] == [solver, solver]


def test_a_stage_spends_its_last_iterations_at_beta_max():
    # 8 iterations from beta 2 to 32: one at each of 2, 4, 8, 16, then four at 32. (Doubling
    # every quarter of the run ended it after its iterations at 16, with the density at 16.)
    stage = generate.Stage(2.0, 8, beta=2.0, beta_max=32.0, move=0.05)
    _, records = generate.grow(Femur(), 0.35, stages=[stage])
    assert records[0]["beta"] == 32.0
    assert records[0]["mass"] == pytest.approx(0.35, abs=1e-9)


def test_local_stage_bounds_the_inner_local_density():
    """A stage with local_above: the p-norm of the local densities of the trabecular bone ends
    near volfrac + local_above, below what the unconstrained stage reaches, at the same mass;
    the cortex is solid in both."""
    femur = Femur()
    free = generate.Stage(1.0, 30, move=0.05)
    bounded = generate.Stage(1.0, 30, move=0.05, local_above=0.1, local_radius=3.0)
    density_free, _ = generate.grow(femur, 0.35, stages=[free])
    density, records = generate.grow(femur, 0.35, stages=[bounded])
    assert records[0]["mass"] == pytest.approx(0.35, abs=1e-9)
    assert records[0]["local_volume"] <= 0.45 * 1.06  # linearized steps overshoot a little
    problem = femur.problem(1.0)
    inner = generate.trabecular(problem)
    assert density[inner].mean() == pytest.approx(0.35, abs=1e-9)
    assert (density[problem.cortex] == 1.0).all() and (density[problem.canal] == 0.0).all()
    local = topopt.local_density(density, 3, mask=inner)[inner]
    local_free = topopt.local_density(density_free, 3, mask=inner)[inner]
    assert np.quantile(local, 0.95) < np.quantile(local_free, 0.95) - 0.05


def test_a_stage_split_at_a_beta_level_grows_the_same_design():
    # generate.STAGES splits the 100 µm stage to give each beta level its own move limit; at the
    # same pixel size and filter radius the next stage carries the design variables over.
    whole = generate.Stage(2.0, 6, beta=2.0, beta_max=8.0, move=0.05)
    split = [
        dataclasses.replace(whole, iterations=2, beta_max=2.0),
        dataclasses.replace(whole, iterations=4, beta=4.0),
    ]
    density, records = generate.grow(Femur(), 0.35, stages=[whole])
    density_split, records_split = generate.grow(Femur(), 0.35, stages=split)
    np.testing.assert_allclose(density_split, density, rtol=0, atol=1e-9)
    assert records_split[-1]["compliance"] == pytest.approx(records[0]["compliance"], rel=1e-9)


def test_noise_perturbs_only_the_gray_design_and_is_seeded():
    design = np.tile([0.0, 1.0, 0.5, 0.2, 0.9], (40, 8))
    mask = np.ones(design.shape, bool)
    mask[:, -3:] = False
    perturbed = generate._perturb(design, mask, 0.3, [7, 1])
    change = perturbed - design
    crisp = (design == 0.0) | (design == 1.0)
    assert np.all(change[crisp & mask] == 0.0) and np.all(perturbed[~mask] == 0.0)
    gray = ~crisp & mask
    assert np.all(np.abs(change[gray]) <= 0.3 * 4 * design[gray] * (1 - design[gray]) + 1e-15)
    assert change[gray].std() > 0.05 and abs(change[gray].mean()) < 0.03
    np.testing.assert_array_equal(generate._perturb(design, mask, 0.3, [7, 1]), perturbed)
    assert not np.array_equal(generate._perturb(design, mask, 0.3, [8, 1]), perturbed)


def test_noise_breaks_a_uniform_gray_start_into_a_crisper_stiffer_design():
    """A stage without iterations hands on a uniform gray field, as the 200 µm layout does
    where it is dense. From it the noiseless stage ends grayer and less stiff (on this grid,
    beside the solid cortex: 5.6 % of the trabecular bone gray, compliance 507) than the same
    stage with noise on its start (2.9 %, 452)."""
    femur = Femur(seed=2)
    fine = generate.Stage(
        1.0,
        30,
        beta=2.0,
        beta_max=32.0,
        move=0.05,
        local_above=0.15,
        local_radius=3.0,
        penal=5.0,
        local_p=8.0,
    )
    mask = generate.trabecular(femur.problem(1.0))
    results = []
    for noise in (0.0, 0.3):
        stages = [generate.Stage(2.0, 0), dataclasses.replace(fine, noise=noise)]
        density, records = generate.grow(femur, 0.35, stages=stages)
        gray = ((density > 0.1) & (density < 0.9))[mask].mean()
        results.append((gray, records[-1]["compliance"]))
    (gray_plain, compliance_plain), (gray_noisy, compliance_noisy) = results
    assert gray_noisy < 0.6 * gray_plain
    assert compliance_noisy < 0.95 * compliance_plain


def test_a_noisy_stage_grows_the_same_femur_again_and_another_than_without():
    stages = [TINY[0], dataclasses.replace(TINY[1], noise=0.3)]
    density, _ = generate.grow(Femur(seed=3), 0.35, stages=stages)
    again, _ = generate.grow(Femur(seed=3), 0.35, stages=stages)
    quiet, _ = generate.grow(Femur(seed=3), 0.35, stages=TINY)
    np.testing.assert_array_equal(again, density)
    assert np.abs(density - quiet).max() > 0.01
    with pytest.raises(ValueError, match="takes no noise"):
        generate.grow(Femur(), 0.35, stages=stages[::-1])
    with pytest.raises(ValueError, match=r"noise must lie in \[0, 1\)"):
        generate.grow(Femur(), 0.35, stages=[TINY[0], dataclasses.replace(TINY[1], noise=1.5)])


@pytest.mark.parametrize(("beta", "fine_rmin"), [(4.0, 1.5), (8.0, 1.5), (8.0, 3.0)])
def test_a_finer_stage_starts_as_stiff_as_the_coarse_one_ended(beta, fine_rmin):
    """The finer outline reaches past the coarse one; left void, the loads on it made the
    upsampled design six times more compliant at this size (177 times at 100 µm). 15 %: on
    grids this coarse the finer discretization alone moves a crisp design's compliance by
    about 10 %."""
    stages = [
        generate.Stage(2.0, 20, beta=1.0, beta_max=beta),  # beta_max by iteration 15
        generate.Stage(1.0, 0, rmin=fine_rmin, beta=beta, beta_max=beta),
    ]
    _, records = generate.grow(Femur(), 0.35, stages=stages)
    assert records[1]["compliance"] == pytest.approx(records[0]["compliance"], rel=0.15)


def test_a_stage_without_fe_sharpens_at_the_mass():
    femur = Femur()
    stages = [
        generate.Stage(2.0, 10, beta=1.0, beta_max=4.0),
        generate.Stage(1.0, 0, rmin=3.0, beta_max=32.0, solve=False),
    ]
    density, records = generate.grow(femur, 0.35, stages=stages)
    problem = femur.problem(1.0)
    mask, domain = problem.mask, generate.trabecular(problem)
    assert density.shape == mask.shape and not density[~mask].any()
    assert density[domain].mean() == pytest.approx(0.35, rel=1e-8)
    assert (density[problem.cortex] == 1.0).all()
    assert records[1]["iterations"] == 0 and records[1]["compliance"] is None
    coarse = generate.grow(femur, 0.35, stages=stages[:1])[0]
    gray = ((density > 0.1) & (density < 0.9))[domain].mean()
    coarse_domain = generate.trabecular(femur.problem(2.0))
    assert gray < ((coarse > 0.1) & (coarse < 0.9))[coarse_domain].mean()
    with pytest.raises(ValueError, match="needs a stage before it"):
        generate.grow(femur, 0.35, stages=stages[1:])


def test_the_cg_tolerance_of_growth_gives_the_compliance_of_exact_solves():
    """generate stops CG at a relative residual; through projection and the local bound the
    design it grows must be as stiff as the one direct solves grow. Beside the solid cortex
    this problem sits near a bifurcation: CG to 1e-4 ends 0.17 away in density at a compliance
    0.4 % off, 1e-8 2e-6 away."""
    stage = generate.Stage(1.0, 20, beta=1.0, beta_max=4.0, local_above=0.15, local_radius=3.0)
    iterative = {**generate.SOLVER_OPTIONS, "method": "gmg", "drop_void": None}
    loose, records = generate.grow(Femur(), 0.35, stages=[stage], solver_options=iterative)
    exact, exact_records = generate.grow(
        Femur(), 0.35, stages=[stage], solver_options={"method": "direct"}
    )
    assert records[0]["cg_iterations"] > 0
    assert records[0]["compliance"] == pytest.approx(exact_records[0]["compliance"], rel=5e-3)
    tight, _ = generate.grow(
        Femur(), 0.35, stages=[stage], solver_options={**iterative, "tol": 1e-8}
    )
    np.testing.assert_allclose(tight, exact, rtol=0, atol=1e-4)
    assert np.abs(loose - exact).max() > np.abs(tight - exact).max()


def test_upsample_covers_the_finer_grid():
    coarse = np.arange(6.0).reshape(2, 3)
    fine = generate._upsample(coarse, (5, 5), np.ones((2, 3), bool))
    assert fine.shape == (5, 5)
    assert fine[0, 0] == 0 and fine[0, 2] == 1 and fine[4, 4] == 5
    # Outside the coarse mask the nearest inside value, so a finer outline is not void.
    mask = np.array([[True, True, False], [True, False, False]])
    fine = generate._upsample(np.where(mask, coarse, 0.0), (4, 6), mask)
    np.testing.assert_array_equal(fine[:, 4:], np.ones((4, 2)))
    np.testing.assert_array_equal(fine[2:, :2], np.full((2, 2), 3.0))
    assert set(np.unique(fine[2:, 2:4])) <= {1.0, 3.0}  # equidistant neighbours


def test_manifest_is_seeded_stratified_and_split_by_femur():
    entries = manifest.manifest(12, 4, 2, seed=3)
    assert entries == manifest.manifest(12, 4, 2, seed=3)
    splits = [e["split"] for e in entries]
    assert (splits.count("test"), splits.count("validation"), splits.count("train")) == (4, 2, 6)
    assert len({e["seed"] for e in entries}) == 12
    # One bone mass in each twelfth of the range.
    low, high = manifest.VOLFRAC_RANGE
    slices = sorted(int((e["volfrac"] - low) / (high - low) * 12) for e in entries)
    assert slices == list(range(12))
    for e in entries:
        angle = femur_module.sample(e["seed"]).landmarks().neck_shaft_angle
        assert e["neck_shaft_angle"] == pytest.approx(angle, abs=0.005)
    with pytest.raises(ValueError, match="test \\+ validation <= count"):
        manifest.manifest(3, 2, 2)


def test_held_out_femurs_take_the_corners_then_spread():
    """_spread picks the point nearest each corner of the unit square, then the farthest."""
    points = np.array([[0.5, 0.5], [0.1, 0.1], [0.9, 0.95], [0.05, 0.8], [0.8, 0.2], [0.45, 1.0]])
    assert manifest._spread(points, 4, [], corners=True) == [1, 2, 3, 4]
    # Without corners: the farthest from those held out (0.447 against 0.424), then the rest.
    assert manifest._spread(points, 2, [1, 2, 3, 4], corners=False) == [5, 0]


def test_the_papers_protocol_spreads_7_train_and_4_test_femurs_over_the_ranges():
    low, high = manifest.VOLFRAC_RANGE
    angle_low, angle_high = femur_module.RANGES["neck_shaft_angle"]

    def entry(name, split, u, v):
        volfrac, angle = low + u * (high - low), angle_low + v * (angle_high - angle_low)
        return {"name": name, "split": split, "volfrac": volfrac, "neck_shaft_angle": angle}

    grid = [(u, v) for u in (0.0, 0.5, 1.0) for v in (0.0, 0.5, 1.0)]  # train: a 3x3 grid
    entries = [entry(f"t{u}{v}", "train", u, v) for u, v in grid]
    test = [(0.5, 0.5), (0.1, 0.1), (0.9, 0.9), (0.1, 0.9), (0.9, 0.1), (0.4, 0.6)]
    entries += [entry(f"h{k}", "test", u, v) for k, (u, v) in enumerate(test)]
    entries.append(entry("v", "validation", 0.0, 0.0))
    assert manifest.paper_protocol(entries, "test") == ["h1", "h2", "h3", "h4"]
    train = manifest.paper_protocol(entries, "train")
    # The four corners, the centre (farthest from them), then two edge midpoints.
    assert train[:5] == ["t0.00.0", "t1.01.0", "t0.01.0", "t1.00.0", "t0.50.5"]
    assert len(set(train)) == 7 and all(name.startswith("t") for name in train)
    with pytest.raises(ValueError, match="needs 4 test femurs, the dataset has 3"):
        manifest.paper_protocol(entries[:12], "test")
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\], not 'validation'"):
        manifest.paper_protocol(entries, "validation")
    del entries[0]["volfrac"]
    with pytest.raises(ValueError, match=r"\['t0\.00\.0'\] lack the volfrac"):
        manifest.paper_protocol(entries, "train")


def test_generate_writes_femurs_resumes_and_refuses_other_settings(tmp_path):
    entries = generate.generate(
        tmp_path, count=2, test=1, validation=0, stages=TINY[:1], progress=False
    )
    listing = json.loads((tmp_path / "manifest.json").read_text())
    assert listing["femurs"] == entries
    held_out = next(e["name"] for e in entries if e["split"] == "test")
    image = io.load_femur(tmp_path / f"{held_out}.npz")
    assert image.meta["split"] == "test" and image.pixel_size == 4.0
    assert image.density.shape == grid_shape(4.0)
    assert (tmp_path / "femur_00.png").stat().st_size > 0
    # A rerun finds everything written and leaves the files alone.
    stamp = (tmp_path / "femur_00.npz").stat().st_mtime_ns
    generate.generate(tmp_path, count=2, test=1, validation=0, stages=TINY[:1], progress=False)
    assert (tmp_path / "femur_00.npz").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="other settings"):
        generate.generate(tmp_path, count=3, test=1, validation=0, stages=TINY[:1], progress=False)
    with pytest.raises(ValueError, match="unknown femur name"):
        generate.generate(
            tmp_path, count=2, test=1, validation=0, stages=TINY[:1], only=["femur_09"]
        )


def test_a_stage_passes_its_simp_and_p_norm_exponents(monkeypatch):
    seen = []
    optimize = topopt.optimize

    def spy(*args, **kwargs):
        local = kwargs["local_volume"]
        seen.append((kwargs["material"].penal, None if local is None else local.p))
        return optimize(*args, **kwargs)

    monkeypatch.setattr(topopt, "optimize", spy)
    stages = [
        generate.Stage(4.0, 2, penal=4.0, local_above=0.2, local_radius=8.0, local_p=8.0),
        generate.Stage(4.0, 2),
    ]
    generate.grow(Femur(), 0.35, stages=stages)
    assert seen == [(4.0, 8.0), (3.0, None)]


def test_a_changed_later_stage_names_the_checkpoints_that_carry_over(tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    generate.generate(first, count=1, test=0, validation=0, stages=TINY, progress=False)
    changed = [TINY[0], dataclasses.replace(TINY[1], move=0.1)]
    with pytest.raises(ValueError, match="other settings") as error:
        generate.generate(first, count=1, test=0, validation=0, stages=changed, progress=False)
    assert "the first 1 stage(s) are the same" in str(error.value)
    assert f"{first}/work/<name>/stage0.done.npz" in str(error.value)
    # Following the hint, the new folder grows only the changed stage.
    (second / "work" / "femur_00").mkdir(parents=True)
    shutil.copy(first / "work/femur_00/stage0.done.npz", second / "work/femur_00")
    grown = []
    optimize = generate._optimize

    def spy(problem, stage, *args):
        grown.append(stage)
        return optimize(problem, stage, *args)

    monkeypatch.setattr(generate, "_optimize", spy)
    generate.generate(second, count=1, test=0, validation=0, stages=changed, progress=False)
    assert grown == [changed[1]]
    with pytest.raises(ValueError) as error:  # nothing shared: no hint
        generate.generate(first, count=1, test=0, validation=0, stages=[changed[1]], progress=False)
    assert "carry over" not in str(error.value)


def test_an_interrupted_stage_resumes_from_its_checkpoint(tmp_path):
    femur = Femur()
    stages = [generate.Stage(4.0, 6)]
    full, _ = generate.grow(femur, 0.4, stages=stages)
    # Run 3 iterations into the checkpoint folder, as a run stopped half-way would leave it.
    generate.grow(femur, 0.4, stages=[generate.Stage(4.0, 3)], checkpoint_dir=tmp_path)
    (tmp_path / "stage0.done.npz").unlink()
    resumed, records = generate.grow(femur, 0.4, stages=stages, checkpoint_dir=tmp_path)
    assert records[0]["iterations"] == 6
    np.testing.assert_allclose(resumed, full, atol=1e-10)


def test_cli_generate(tmp_path, capsys, caplog):
    argv = ["--count", "1", "--test", "0", "--validation", "0", "--stages", "4:2"]
    out = tmp_path / "femurs"
    assert cli.main(["generate", str(out), *argv, "--verbose"]) == 0
    report = capsys.readouterr()
    assert "1 of 1 femurs" in report.out
    assert io.load_femur(out / "femur_00.npz").density.shape == grid_shape(4.0)
    # --verbose: every optimizer iteration as a DEBUG record, on stderr too
    iterations = [
        r.getMessage()
        for r in caplog.records
        if r.name == "femsr.topopt" and r.levelno == logging.DEBUG
    ]
    assert len(iterations) == 2 and iterations[0].startswith("it    1  obj ")
    assert iterations[1] in report.err and "femur_00: grown in" in report.err
    caplog.clear()
    # --quiet (before the command or after it): no INFO message, the result on stdout only
    for quiet in (
        ["--quiet", "generate", str(tmp_path / "a"), *argv],
        ["generate", str(tmp_path / "b"), *argv, "-q"],
    ):
        assert cli.main(quiet) == 0
        report = capsys.readouterr()
        assert report.err == "" and "1 of 1 femurs" in report.out
    assert not [r for r in caplog.records if r.name.startswith("femsr")]
    with pytest.raises(SystemExit):
        cli.main(["generate", str(out), "--stages", "fine"])
    assert "stages must look like" in capsys.readouterr().err


class _Terminal(StringIO):
    def isatty(self):
        return True


def test_cli_generate_shows_bars_on_a_terminal_unless_quiet(tmp_path, monkeypatch):
    argv = ["--count", "1", "--test", "0", "--validation", "0", "--stages", "4:2,2:2"]
    for name, quiet in (("shown", []), ("quiet", ["--quiet"])):
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert cli.main(["generate", str(tmp_path / name), *argv, *quiet]) == 0
        text = terminal.getvalue()
        assert ("generate:" in text and "optimize:" in text and "/2 [" in text) == (not quiet)
        assert ("stage 2/2 at 2 mm" in text) == (not quiet)  # INFO, above the bars


def test_a_strut_sized_square_widens_as_the_bone_thins(monkeypatch):
    """With local_strut, the local square's half side is local_strut / (2 bound): a strut of
    that thickness fits across a square under the bound, whatever the bone mass."""
    seen = []
    optimize = topopt.optimize

    def spy(*args, **kwargs):
        seen.append((kwargs["local_volume"].volfrac, kwargs["local_volume"].radius))
        return optimize(*args, **kwargs)

    monkeypatch.setattr(topopt, "optimize", spy)
    stage = generate.Stage(2.0, 1, local_above=0.05, local_strut=6.0)
    for volfrac in (0.25, 0.45):
        generate.grow(Femur(), volfrac, stages=[stage])
    assert seen == [(pytest.approx(0.3), 5), (pytest.approx(0.5), 3)]  # 10 mm, 6 mm at 2 mm
