"""Copies the C library named by DERMAL_LIBRARY (at install time) into the
package, so the installed package finds it beside itself."""
import os
import shutil

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        library = os.environ.get("DERMAL_LIBRARY")
        if library:
            shutil.copyfile(library, os.path.join(self.build_lib, "dermal", "libdermal_c.so"))


class LibraryDistribution(Distribution):
    def has_ext_modules(self):
        # A bundled libdermal_c.so makes the wheel specific to this platform.
        return bool(os.environ.get("DERMAL_LIBRARY"))


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=LibraryDistribution)
