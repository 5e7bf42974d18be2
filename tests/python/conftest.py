"""Marks every test with its area, the folder it is in (pytest -m tools, -m "not web"),
and binds the dermal package to the build's library for the tests that use it."""
import os
import pathlib
import subprocess
import sys

import pytest

PACKAGE_DIR = str(pathlib.Path(__file__).resolve().parents[2] / "capi" / "python")

# The tools/ tests import the package's converters (dermal.convert) as they
# are collected; importing the package loads the build's C library.
if PACKAGE_DIR not in sys.path:
    sys.path.insert(0, PACKAGE_DIR)
if os.environ.get("DERMAL_BUILD_DIR"):
    os.environ.setdefault("DERMAL_LIBRARY", os.path.join(os.environ["DERMAL_BUILD_DIR"], "capi", "libdermal_c.so"))


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(getattr(pytest.mark, pathlib.Path(str(item.fspath)).parent.name))
        if pathlib.Path(str(item.fspath)).name == "test_browser.py":
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="session")
def build_dir():
    """The CMake build in $DERMAL_BUILD_DIR, with the C library; fails (never skips) without one."""
    path = os.environ.get("DERMAL_BUILD_DIR", "")
    if not path:
        pytest.fail("DERMAL_BUILD_DIR is not set; run bash tools/test.sh or set it to the CMake build directory",
                    pytrace=False)
    library = os.path.join(path, "capi", "libdermal_c.so")
    if not os.path.isfile(library):
        pytest.fail(f"{library} is missing; build first: cmake -S . -B build && cmake --build build -j2",
                    pytrace=False)
    return path


@pytest.fixture(scope="session")
def dermal(build_dir):
    """The dermal package (capi/python) bound to the build's libdermal_c.so."""
    os.environ["DERMAL_LIBRARY"] = os.path.join(build_dir, "capi", "libdermal_c.so")
    if PACKAGE_DIR not in sys.path:
        sys.path.insert(0, PACKAGE_DIR)
    import dermal as package
    return package


@pytest.fixture(scope="session")
def agreed_probe_result():
    """The probe_result of a file whose graphs compute its probe: "passed", or
    "frozen_fallback" where oneDNN's add of two of its own tensors kills the
    process (the fault src/model/onednn_ops_check.cpp checks for), found here
    independently, by Python torch in a child process."""
    add = "import torch; a = torch.ones(2, 3).to_mkldnn(); (a + a).to_dense()"
    crashed = subprocess.run([sys.executable, "-c", add], capture_output=True).returncode < 0
    return "frozen_fallback" if crashed else "passed"
