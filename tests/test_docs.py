"""The examples in the docstrings are tests."""

import doctest
import importlib
import pkgutil

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
