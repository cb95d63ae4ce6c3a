"""Every docstring example in the package runs as a doctest (the style guide: examples that run)."""
import doctest
import importlib
import pkgutil

import pytest

import pfcourse

MODULES = sorted(m.name for m in pkgutil.walk_packages(pfcourse.__path__, "pfcourse.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} doctest examples failed"


def test_the_examples_are_found():
    """The collection is not vacuous: modules with examples are among those tested."""
    assert {"pfcourse.glue", "pfcourse.dal_matched"} <= set(MODULES)
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for t in finder.find(importlib.import_module("pfcourse.dal_matched")))
    assert examples >= 2
