"""Builds the compiled per-packet loops (`cyphonic.fastpath._fastpath`).

    python -m cyphonic.fastpath.build      # in place, next to this file

A wheel (`pip wheel .`, `python -m build`) carries it already: setup.py
hands `ffibuilder` to cffi's setuptools integration. In a source checkout
(`pip install -e`, tools/bootstrap.sh) this command builds or rebuilds it
in place. Without it the data path runs its pure-Python loops, which
produce the same bytes. It needs a C compiler and the Python headers (gcc,
python3-dev), nothing else: libsodium is reached through PyNaCl's own copy
at run time.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _path(path: Path) -> str:
    """Relative to the project's root under setuptools (setup.py's
    cffi_modules loads this file as `__cffi__`, in that directory), which
    refuses absolute paths; absolute otherwise, since cffi's own compile()
    changes directory."""
    return str(path.relative_to(Path.cwd())) if __name__ == "__cffi__" else str(path)


SOURCES = sorted(_path(p) for p in HERE.glob("*.c"))

ffibuilder = FFI()
ffibuilder.cdef((HERE / "fastpath.h").read_text())
ffibuilder.set_source(
    "cyphonic.fastpath._fastpath",
    '#include <stdint.h>\n#include <stddef.h>\n#include "fastpath.h"\n',
    sources=SOURCES,
    include_dirs=[_path(HERE)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
    # one file name (_fastpath.cpython-3XX-….so) whichever way it is built:
    # cffi's setuptools path would otherwise name it .abi3.so, and a stale
    # interpreter-specific copy beside it would be the one imported
    py_limited_api=False,
)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cyphonic-fastpath-") as tmp:
        built = Path(ffibuilder.compile(tmpdir=tmp, verbose=False))
        target = HERE / built.name
        # a new file renamed over the old one: running daemons keep the
        # copy they mapped (rewriting it in place would crash them)
        staged = HERE / (built.name + ".new")
        staged.write_bytes(built.read_bytes())
        staged.replace(target)
    print(f"built {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
