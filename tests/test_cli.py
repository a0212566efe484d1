"""The femsr command."""

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
    assert "pixel_size must be a positive" in capsys.readouterr().err


def test_unknown_command_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["nonsense"])
