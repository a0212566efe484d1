"""The examples of the docstrings, the README and the guides are tests; the docs name real
paths, commands, options and Python names."""

import ast
import doctest
import importlib
import importlib.util
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import femsr

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(femsr.__path__, prefix="femsr.")
    if not name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


ROOT = Path(__file__).resolve().parents[1]
GUIDES = (
    "docs/reconstruct.md",
    "docs/grow.md",
    "docs/train.md",
    "docs/evaluate.md",
    "docs/cluster.md",
)
DOCS = ("README.md", "benchmarks/RESULTS.md", "femsr/data/README.md", "docs/develop.md", *GUIDES)
_PATH = re.compile(r"(?<![\w/.~-])((?:\.ci|benchmarks|cpp|docs|femsr|tests)/[\w./\[*<>{},-]*)")
_INLINE_COMMAND = re.compile(r"`femsr ([a-z]+)([^`]*)`")
# "femsr" after "check " is ruff's folder, not the command.
_BLOCK_COMMAND = re.compile(r"(?:^|[\s;&|(])(?<!check )femsr ([a-z]+)([^\n#]*)", flags=re.M)


# A fenced block: its language, the rest of its info string (```bash full-size) and its code.
_FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", flags=re.S | re.M)


def _code(text, language=""):
    """The code of the blocks whose language matches ``language`` (a regex)."""
    return [code for lang, _, code in _FENCE.findall(text) if re.fullmatch(language, lang)]


def test_readme_python_examples_run(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    blocks = _code((ROOT / "README.md").read_text(encoding="utf-8"), "python")
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


@pytest.mark.parametrize("doc", DOCS)
def test_paths_named_in_the_docs_exist(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    missing = set()
    for path in _PATH.findall(text):
        path = path.rstrip(".,")
        if any(c in path for c in "*<[{"):
            continue  # a pattern or a placeholder
        if not (ROOT / path).exists():
            missing.add(path)
    assert not missing, f"{doc} names paths that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS)
def test_commands_named_in_the_docs_exist_with_their_options(doc, capsys):
    from femsr import cli

    text = (ROOT / doc).read_text(encoding="utf-8")
    commands = _INLINE_COMMAND.findall(text)
    for block in _code(text, "bash"):
        commands += _BLOCK_COMMAND.findall(block.replace("\\\n", " "))
    assert commands
    for command, rest in commands:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0, f"{doc}: femsr {command} is no command"
        usage = capsys.readouterr().out
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
            assert option in usage, f"{doc}: femsr {command} has no option {option}"


# The guides (docs/*.md) run top to bottom: their ```python blocks in one namespace, their
# ```bash blocks in bash (set -euo pipefail), in order, in a fresh folder. A fence whose info
# string has the word full-size (```bash full-size) shows the full-size run a user would start:
# it is not run, but its commands, options and names are checked like the rest.

# A dotted femsr name in the text, code or prose: femsr.io.read_image, femsr.femur.Femur.rois.
_API_NAME = re.compile(r"(?<![\w./-])femsr(?:\.[A-Za-z_]\w*)+")


def _blocks(doc):
    """(language, runs, code) of each fenced block of a guide."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    return [
        (language, "full-size" not in info.split(), code)
        for language, info, code in _FENCE.findall(text)
    ]


def _resolve(name):
    """The object a dotted femsr name names: submodules by import, the rest by attribute."""
    parts = name.split(".")
    target = importlib.import_module(parts[0])
    for k, part in enumerate(parts[1:], start=1):
        module = ".".join(parts[: k + 1])
        if hasattr(target, "__path__") and importlib.util.find_spec(module) is not None:
            target = importlib.import_module(module)
        else:
            target = getattr(target, part)  # AttributeError names what is missing
    return target


def _bash(code, folder):
    """Run ``code`` in bash in ``folder``; the finished process."""
    # The femsr command and python of the interpreter running the tests come first on PATH.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _run_guide(doc, folder):
    """Run a guide's blocks in ``folder``; the Python namespace and the bash blocks' stdout."""
    namespace = {"__name__": "__guide__"}
    output = []
    for language, runs, code in _blocks(doc):
        if not runs:
            continue
        if language == "python":
            exec(compile(code, doc, "exec"), namespace)
        elif language == "bash":
            result = _bash(code, folder)
            assert result.returncode == 0, (
                f"{doc}: this block exited with {result.returncode}:\n{code}\n"
                f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-4000:]}"
            )
            output.append(result.stdout)
    return namespace, "".join(output)


def _check_reconstruct(folder, namespace, output):
    from femsr.dataset import downscale
    from femsr.io import read_image

    hr, lr = namespace["hr"], namespace["lr"].density
    assert hr.shape == (2080, 1890) and hr.dtype == np.float32
    assert 0.0 <= hr.min() and hr.max() <= 1.0
    assert np.abs(downscale(hr) - lr).mean() < 0.05  # the blocks keep the LR image's mass
    cli = np.load(folder / "hr.npy")
    assert cli.shape == hr.shape and cli.dtype == np.float32
    # The command read the 16-bit femur file the guide wrote: the same femur, to round-off.
    assert np.abs(cli - hr).mean() < 1e-3
    preview, pixel_size, femur = read_image(folder / "hr.png")
    assert preview.shape == hr.shape and pixel_size is None and femur is None
    assert "208x189 -> 2080x1890" in output
    assert namespace["hr_column"].shape == (360, 240)
    # The CT slice of a drawn femur: found on its side, reconstructed in full.
    assert namespace["lr_ct"].femur.side == namespace["drawn"].side
    assert namespace["lr_ct"].meta["psf_fwhm"] == pytest.approx(0.8, abs=0.1)  # read, deblurred
    assert namespace["hr_ct"].shape == (2080, 1890)
    # Its landmarks, given back with one of them changed, are held.
    assert namespace["lr_mine"].femur.neck_shaft_angle == 130.0
    assert json.loads((folder / "landmarks.json").read_text())["neck_shaft_angle"] == 130.0


def _check_grow(folder, namespace, output):
    from femsr.femur import grid_shape
    from femsr.io import load_femur

    listing = json.loads((folder / "femurs" / "manifest.json").read_text())
    splits = [entry["split"] for entry in listing["femurs"]]
    assert sorted(splits) == ["test", "train", "validation"]
    assert "2 of 3 femurs in femurs" in output and "3 of 3 femurs in femurs" in output
    for entry in listing["femurs"]:
        image = load_femur(folder / "femurs" / entry["file"])
        assert image.pixel_size == 0.5 and image.density.shape == grid_shape(0.5)
        assert image.meta["split"] == entry["split"]
        assert (folder / "femurs" / f"{entry['name']}.png").is_file()
    tables = (folder / "morphometry.md").read_text()
    assert all(f"## {entry['file']}" in tables for entry in listing["femurs"])
    assert namespace["density"].shape == grid_shape(1.0)


def _check_train(folder, namespace, output):
    import torch

    from femsr.export import load_model

    assert "3 of 3 femurs in femurs" in output
    index = json.loads((folder / "patches" / "index.json").read_text())
    assert {entry["split"] for entry in index["femurs"]} == {"train", "validation", "test"}
    assert all(count > 0 for count in index["counts"].values())
    log = (folder / "runs" / "quick" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log] == [1, 2]  # the rerun added none
    assert output.count("best epoch 2") >= 2  # the run and its rerun; the fine-tuning may too
    tuned = torch.load(folder / "runs" / "tuned" / "checkpoint.pt", weights_only=True)
    assert tuned["settings"]["init"] == "runs/quick/best.pt" and tuned["epoch"] == 2
    assert tuned["settings"]["config"]["width"] == 4  # the init model's
    blurred = json.loads((folder / "patches_blurred" / "index.json").read_text())
    assert blurred["settings"]["scanner"] == {"fwhm": 1.0, "noise": 50.0}
    assert "wrote runs/mixed/best.pt" in output
    model = load_model(folder / "model.pt2", device="cpu")
    assert model.format == "pt2" and model.config.scale == 10 and model.config.patch_size == 4
    reference = namespace["reference"]
    assert namespace["hr"].shape == reference.density.shape
    assert load_model(folder / "python-run" / "model.pt2", device="cpu").config.n_blocks == 1


def _check_evaluate(folder, namespace, output):
    import csv

    assert "3 of 3 femurs in femurs" in output
    rows = list(csv.DictReader((folder / "evaluation" / "table.csv").read_text().splitlines()))
    assert [row["stiffness"] for row in rows] == ["E_x", "E_y", "E_xy"] * 3
    for name in ("rois.png", "femur.png", "femur_reconstruction.png", "images.csv"):
        assert (folder / "evaluation" / name).is_file()
    summary = list(csv.DictReader((folder / "report" / "heldout.csv").read_text().splitlines()))
    assert len(summary) == 9 and "bundled |error| %" in summary[0]
    assert (folder / "report" / "bundled" / "femur_01.png").is_file()
    head = namespace["table"].rows[0]
    assert head["region"] == "Femoral head" and head["reference"] > 0


def _check_cluster(folder, namespace, output):
    from femsr.io import load_femur

    assert "3 of 3 femurs in femurs" in output and "3 of 3 images in hr" in output
    for k in range(3):
        assert load_femur(folder / "femurs" / f"femur_{k:02d}.npz").pixel_size == 0.5
        hr = np.load(folder / "hr" / f"femur_{k:02d}.npz")["density"]
        assert hr.shape == (2080, 1890) and 0.0 <= hr.min() and hr.max() <= 1.0
    # Two processes under torchrun trained the network of one; the main one alone printed.
    for run in ("one", "two"):
        log = (folder / "runs" / run / "train_log.jsonl").read_text().splitlines()
        assert [json.loads(line)["epoch"] for line in log] == [1, 2]
    assert output.count("best epoch") == 2
    assert namespace["difference"] < 1e-5


_CHECKS = {
    "docs/reconstruct.md": _check_reconstruct,
    "docs/grow.md": _check_grow,
    "docs/train.md": _check_train,
    "docs/evaluate.md": _check_evaluate,
    "docs/cluster.md": _check_cluster,
}


# grow.md grows the quick femurs; train.md and evaluate.md start with the same command, which
# finds them grown when the folder is there (a rerun resumes): they are grown once a session.
_QUICK_FEMURS = "femsr generate femurs --count 3 --test 1 --validation 1 --stages 2:4,0.5:2"
_GROWN = {}


def _quick_femurs(tmp_path_factory):
    if "femurs" not in _GROWN:
        folder = tmp_path_factory.mktemp("quick")
        result = _bash(_QUICK_FEMURS, folder)
        assert result.returncode == 0, result.stderr[-4000:]
        _GROWN["femurs"] = folder / "femurs"
    return _GROWN["femurs"]


@pytest.mark.parametrize("doc", GUIDES)
def test_guide_runs_top_to_bottom(doc, tmp_path, tmp_path_factory, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.chdir(tmp_path)
    text = (ROOT / doc).read_text(encoding="utf-8")
    if doc != "docs/grow.md" and _QUICK_FEMURS in text:
        shutil.copytree(_quick_femurs(tmp_path_factory), tmp_path / "femurs")
    namespace, output = _run_guide(doc, tmp_path)
    if doc == "docs/grow.md":
        assert _QUICK_FEMURS in text
        _GROWN.setdefault("femurs", tmp_path / "femurs")
    _CHECKS[doc](tmp_path, namespace, output)


@pytest.mark.parametrize("doc", GUIDES)
def test_guide_blocks_are_bash_or_python_and_parse(doc):
    blocks = _blocks(doc)
    assert {language for language, _, _ in blocks} <= {"bash", "python", "text"}
    assert {language for language, runs, _ in blocks if runs} == {"bash", "python"}
    for language, _, code in blocks:
        if language == "python":
            compile(code, doc, "exec")  # full-size blocks too: they must at least parse


@pytest.mark.parametrize("doc", GUIDES)
def test_python_names_in_the_guides_exist(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    names = set(_API_NAME.findall(text))
    for language, _, code in _blocks(doc):
        if language != "python":
            continue
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("femsr"):
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("femsr"))
    assert names
    for name in sorted(names):
        try:
            _resolve(name)
        except (AttributeError, ImportError) as error:
            pytest.fail(f"{doc} names {name}, which does not exist: {error}")


# A command named in a guide (`femsr train`, or a line of a block), torchrun (whose options
# come before the femsr command it starts), or an option (`--epochs`).
_MENTION = re.compile(r"(?<![\w./-])(?:femsr ([a-z]+)|(torchrun)\b)|(?<![\w-])(--[a-z][a-z0-9-]*)")


def _torchrun_options():
    """The options of torchrun, from its parser; None without torch (then not checked)."""
    try:
        from torch.distributed.run import get_args_parser
    except ImportError:
        return None
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", get_args_parser().format_help()))


@pytest.mark.parametrize("doc", GUIDES)
def test_every_option_in_a_guide_is_one_of_the_command_named_before_it(doc, capsys):
    from femsr import cli

    known = {}

    def options(word):
        """The options of femsr WORD, None if it is no command."""
        if word not in known:
            with pytest.raises(SystemExit) as exit_info:
                cli.main([word, "--help"])
            usage = capsys.readouterr().out
            found = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", usage))
            known[word] = found if exit_info.value.code == 0 else None
        return known[word]

    command = None
    checked = 0
    for word, launcher, option in _MENTION.findall((ROOT / doc).read_text(encoding="utf-8")):
        if launcher:
            command = launcher
            continue
        if word:
            command = word if options(word) is not None else command  # "femsr loads" is prose
            continue
        assert command is not None, f"{doc}: {option} comes before any femsr command"
        if command == "torchrun":
            allowed = _torchrun_options()
            assert allowed is None or option in allowed, f"{doc}: {option} is no torchrun option"
        else:
            assert option in options(command), f"{doc}: {option} is no option of femsr {command}"
        checked += 1
    assert checked


def test_the_readme_lists_the_guides():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in (*GUIDES, "docs/develop.md"):
        assert f"]({doc})" in text, f"README.md does not link {doc}"


def test_the_layout_names_every_module_and_folder():
    layout = _code((ROOT / "docs/develop.md").read_text(encoding="utf-8"), "text")[0]
    named = {line.split()[0] for line in layout.splitlines() if line.strip()}
    package = {f"femsr/{path.name}" for path in (ROOT / "femsr").glob("*.py*")}
    package |= {f"femsr/{path.name}/" for path in (ROOT / "femsr").iterdir() if path.is_dir()}
    package -= {"femsr/__main__.py", "femsr/__pycache__/"}
    assert package - named == set(), "docs/develop.md's layout misses these"
    assert named - package - {"cpp/", "tests/", "benchmarks/"} == set(), "named but absent"
