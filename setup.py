"""The compiled data-path loops (cyphonic/fastpath) go into the wheel;
everything else about the package is in pyproject.toml.

The extension is optional: on a machine without a C compiler or the
Python headers the wheel is built without it, and the daemons run the
pure-Python loops (with a warning), as they do where it was never built.
"""

from setuptools import setup
from setuptools.command.build_ext import build_ext


class optional_build_ext(build_ext):
    def pre_run(self, ext, ffi):  # cffi's hook, called before it generates the C source
        ext.optional = True


setup(
    cmdclass={"build_ext": optional_build_ext},
    cffi_modules=["cyphonic/fastpath/build.py:ffibuilder"],
)
