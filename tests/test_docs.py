"""The examples of the docstrings and the README are tests; the docs name real paths, commands."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

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
DOCS = ("README.md", "benchmarks/RESULTS.md", "femsr/data/README.md")
_PATH = re.compile(r"(?<![\w/.~-])((?:\.ci|benchmarks|cpp|docs|femsr|tests)/[\w./\[*<>-]*)")
_INLINE_COMMAND = re.compile(r"`femsr ([a-z]+)([^`]*)`")
# "femsr" after "check " is ruff's folder, not the command.
_BLOCK_COMMAND = re.compile(r"(?:^|[\s;&|(])(?<!check )femsr ([a-z]+)([^\n#]*)", flags=re.M)


def _code(text, language=""):
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


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
        path = path.rstrip(".")
        if any(c in path for c in "*<["):
            continue  # a pattern or a placeholder
        if not (ROOT / path).exists():
            missing.add(path)
    assert not missing, f"{doc} names paths that do not exist: {sorted(missing)}"


@pytest.mark.parametrize("doc", DOCS)
def test_commands_named_in_the_docs_exist_with_their_options(doc, capsys):
    from femsr import cli

    text = (ROOT / doc).read_text(encoding="utf-8")
    commands = _INLINE_COMMAND.findall(text)
    for block in _code(text, "(?:bash)?"):
        commands += _BLOCK_COMMAND.findall(block)
    assert commands
    for command, rest in commands:
        with pytest.raises(SystemExit) as exit_info:
            cli.main([command, "--help"])
        assert exit_info.value.code == 0, f"{doc}: femsr {command} is no command"
        usage = capsys.readouterr().out
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
            assert option in usage, f"{doc}: femsr {command} has no option {option}"
