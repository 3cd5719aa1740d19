"""Builds the compiled per-packet loops (`cyphonic.fastpath._fastpath`).

    python -m cyphonic.fastpath.build      # in place, next to this file

The README's install step runs it (tools/bootstrap.sh); without it the
data path runs its pure-Python loops, which produce the same bytes. It
needs a C compiler and the Python headers (gcc, python3-dev), nothing
else: libsodium is reached through PyNaCl's own copy at run time.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
SOURCES = sorted(str(p) for p in HERE.glob("*.c"))

ffibuilder = FFI()
ffibuilder.cdef((HERE / "fastpath.h").read_text())
ffibuilder.set_source(
    "cyphonic.fastpath._fastpath",
    '#include <stdint.h>\n#include <stddef.h>\n#include "fastpath.h"\n',
    sources=SOURCES,
    include_dirs=[str(HERE)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
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
