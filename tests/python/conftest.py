"""Marks every test with its area, the folder it is in (pytest -m tools, -m "not web")."""
import pathlib

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(getattr(pytest.mark, pathlib.Path(str(item.fspath)).parent.name))
        if pathlib.Path(str(item.fspath)).name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
