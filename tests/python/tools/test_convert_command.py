"""python3 -m dermal.convert: the command's usage, and the converters' Python
dependencies kept optional: `import dermal` imports none of them, and a
missing one is named with its Debian package (exit status 2, no traceback)."""
import os
import subprocess
import sys

import pytest

import convert_command


def run_python(code, **kwargs):
    environment = dict(os.environ, PYTHONPATH=convert_command.PACKAGE_DIR)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          timeout=120, **kwargs)


def test_import_dermal_imports_no_converter_dependency():
    result = run_python("import sys, dermal\n"
                        "print(sorted(m for m in ('torch', 'torchvision', 'h5py', 'dermal.convert') "
                        "if m in sys.modules))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_usage_and_unknown_converter():
    usage = convert_command.run("--help")  # runs as the converter name "--help"
    assert usage.returncode == 0 and "keras" in usage.stdout and "torchvision" in usage.stdout
    unknown = convert_command.run("onnx")
    assert unknown.returncode == 2 and "unknown converter 'onnx'" in unknown.stderr
    assert "Traceback" not in unknown.stderr


@pytest.mark.parametrize("converter, missing, package", [
    ("keras", "h5py", "python3-h5py"),
    ("keras", "torch", "python3-torch"),
    ("torchvision", "torchvision", "python3-torchvision"),
    ("torchvision", "torch", "python3-torch"),
])
def test_a_missing_dependency_is_named_with_its_debian_package(converter, missing, package):
    # None in sys.modules makes `import MISSING` fail as for a module that is not installed.
    result = run_python(f"import runpy, sys\nsys.modules[{missing!r}] = None\n"
                        f"sys.argv = ['dermal.convert', {converter!r}, '--help']\n"
                        "runpy.run_module('dermal.convert', run_name='__main__')")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert f"needs the Python module {missing}" in result.stderr
    assert f"apt-get install {package}" in result.stderr
