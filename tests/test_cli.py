"""The femsr command."""

import json
import logging

import numpy as np
import pytest

from femsr import cli


def test_fe_solves_the_femur_and_writes_the_field(tmp_path, capsys):
    output = tmp_path / "u.npz"
    assert cli.main(["fe", "--pixel-size", "2", "--output", str(output)]) == 0
    report = capsys.readouterr()
    assert "stance" in report.out and "solved in" in report.err
    with np.load(output) as saved:
        u, mask = saved["displacement"], saved["mask"]
    assert u.shape == (3, mask.shape[0] + 1, mask.shape[1] + 1, 2)
    assert np.isfinite(u).all() and abs(u).max() > 0


def test_bad_arguments_give_an_error_and_exit_code_2(capsys):
    assert cli.main(["fe", "--pixel-size", "-1"]) == 2
    assert capsys.readouterr().err.startswith("femsr fe: error: pixel_size must be a positive")


@pytest.mark.parametrize("argv", [["--quiet", "fe"], ["fe", "--quiet"], ["-q", "fe"]])
def test_quiet_silences_the_messages_not_the_result(argv, capsys, caplog):
    assert cli.main([*argv, "--pixel-size", "2"]) == 0
    report = capsys.readouterr()
    assert report.err == "" and "stance" in report.out
    assert not [r for r in caplog.records if r.name.startswith("femsr")]
    assert cli.main([*argv, "--pixel-size", "-1"]) == 2  # errors show still
    assert "femsr fe: error: pixel_size" in capsys.readouterr().err


def test_messages_are_info_records_on_stderr_by_default(capsys, caplog):
    assert cli.main(["fe", "--pixel-size", "2"]) == 0
    report = capsys.readouterr()
    records = [r for r in caplog.records if r.name == "femsr.cli"]
    assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
    assert records[1].getMessage().startswith("solved in ")
    assert report.err.splitlines() == [r.getMessage() for r in records]
    assert "solved in" not in report.out


def test_the_command_leaves_logging_as_it_found_it():
    package = logging.getLogger("femsr")
    before = (package.level, list(package.handlers))
    assert cli.main(["--verbose", "fe", "--pixel-size", "2"]) == 0
    assert cli.main(["fe", "--pixel-size", "-1"]) == 2
    assert (package.level, list(package.handlers)) == before


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--quiet", "--verbose", "fe"], "not allowed with argument"),
        (["fe", "-q", "-v"], "not allowed with argument"),
        (["--quiet", "fe", "--verbose"], "--quiet and --verbose exclude each other"),
    ],
)
def test_quiet_and_verbose_exclude_each_other(argv, match, capsys):
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert match in capsys.readouterr().err


def test_unknown_command_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["nonsense"])


def test_morphometry_reports_each_region_and_the_missed_targets(tmp_path, capsys):
    from femsr import io
    from femsr.femur import Femur

    femur = Femur()
    _, cortex, _ = femur.compartments(0.2)
    solid_cortex = np.where(cortex, 1.0, 0.0)  # no trabeculae: BV/TV 0 in every ROI
    path = tmp_path / "femur.npz"
    io.save_femur(path, io.FemurImage(solid_cortex, 0.2, femur))
    table = tmp_path / "table.md"
    assert cli.main(["morphometry", str(path), "--output", str(table)]) == 0
    out = capsys.readouterr().out
    for region in ("head", "wards_triangle", "cortex", "roi_intertrochanteric"):
        assert f"| {region} |" in out
    assert "targets missed: bvtv roi_head" in out and "band" not in out.split("missed:")[1]
    assert table.read_text().strip() == out.strip()


def test_the_papers_protocol_picks_the_test_femurs_of_a_manifest(tmp_path):
    from femsr.manifest import manifest, paper_protocol

    entries = manifest(16, 4, 2)
    (tmp_path / "manifest.json").write_text(json.dumps({"femurs": entries}))
    test = [e["file"] for e in entries if e["split"] == "test"]
    assert [p.name for p in cli._femur_files(tmp_path, "test")] == test
    picked = cli._femur_files(tmp_path, "test", protocol="paper")
    assert [p.stem for p in picked] == paper_protocol(entries, "test")
    assert len(picked) == 4 and {p.name for p in picked} <= set(test)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="the paper's protocol is chosen by"):
        cli._femur_files(tmp_path, "test", protocol="paper")


def test_report_takes_the_papers_protocol_or_a_split_not_both(tmp_path, capsys):
    argv = ["report", str(tmp_path), "--model", "A=a.pt2", "--protocol", "paper"]
    with pytest.raises(SystemExit):
        cli.main([*argv, "--split", "validation"])
    assert "not allowed with argument" in capsys.readouterr().err
