"""The converters run as a user runs them, `python3 -m dermal.convert
CONVERTER ...`, from this checkout's package (conftest.py points
DERMAL_LIBRARY at the build's C library, which `import dermal` loads)."""
import os
import subprocess
import sys

PACKAGE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "capi", "python"))


def run(converter, *args, env=None, **kwargs):
    """The finished process (text output captured) of the converter with `args`."""
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_DIR, environment.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "dermal.convert", converter, *map(str, args)],
                          env=environment, capture_output=True, text=True, **kwargs)
